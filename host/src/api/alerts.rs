//! `/api/v2/alerts`: POST decodes, merges into the tenant's state, makes it durable, then notifies what changed; GET lists with Alertmanager's filters.

use chrono::Utc;
use serde_json::{Value, json};

use crate::alert::format_time;
use crate::matcher::Matcher;
use hyper::{Response, StatusCode};

use super::{Body, error};
use crate::dispatch::Notifier;

/// Accept a batch of postable alerts. All or nothing: a bad alert rejects the whole request
/// before anything is stored. The 200 is sent only once the alerts are durable.
pub async fn post(notifier: &Notifier, body: &[u8]) -> Response<Body> {
    let now = Utc::now();
    let alerts = match crate::ingest::decode_postable_alerts(body, now, &notifier.limits) {
        Ok(alerts) => alerts,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if let Some(count) = std::num::NonZeroU32::new(alerts.len() as u32) {
        match notifier.ingest_rate.check_n(count) {
            Ok(Ok(())) => {}
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut response = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("the tenant's ingest rate is {} alerts/s (ingest_rate); retry in {seconds} s", notifier.limits.ingest_rate),
                );
                response.headers_mut().insert(hyper::header::RETRY_AFTER, seconds.max(1).into());
                return response;
            }
            Err(_) => unreachable!("max_alerts_per_request <= ingest_burst is checked at config load"),
        }
    }
    let (touched, commit) = match notifier.state.ingest(alerts, now, notifier.store.as_ref(), notifier.limits.max_alerts) {
        Ok(ingested) => ingested,
        Err(message) => return error(StatusCode::TOO_MANY_REQUESTS, message),
    };
    match commit.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("the alerts could not be stored ({e}); retry")),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "the store stopped; retry".into()),
    }
    if notifier.notify_changes(Some(&touched), now).is_err() {
        tracing::warn!(tenant = %notifier.tenant, "the delivery queue is full; the sweeper will notify these alerts");
    }
    Response::builder().status(StatusCode::OK).body(Body::default()).expect("static response")
}

/// `GET /api/v2/alerts`: the tenant's unresolved alerts, filtered like Alertmanager:
/// `active`, `silenced`, `inhibited`, `unprocessed` (booleans, default true), `receiver` (an
/// anchored regex on receiver names) and repeated `filter` matchers.
pub fn get(notifier: &Notifier, query: Option<&str>) -> Response<Body> {
    let q = match Query::parse(query) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let now = Utc::now();
    let mut out = Vec::new();
    for a in notifier.state.list() {
        if a.ends_at <= now || !q.filters.iter().all(|m| m.matches(&a.labels)) {
            continue;
        }
        let receivers = notifier.router.route(&a.to_alert()).receivers;
        if let Some(re) = &q.receiver {
            if !receivers.iter().any(|r| re.is_match(r)) {
                continue;
            }
        }
        // Inhibition comes with the routing pipeline; silences apply now.
        let silenced_by = notifier.silences.silencing(&a.labels, now);
        let state = if silenced_by.is_empty() { "active" } else { "suppressed" };
        if (silenced_by.is_empty() && !q.active) || (!silenced_by.is_empty() && !q.silenced) {
            continue;
        }
        out.push(json!({
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": format_time(a.starts_at),
            "endsAt": format_time(a.ends_at),
            "updatedAt": format_time(a.updated_at),
            "generatorURL": a.generator_url,
            "fingerprint": a.fingerprint().to_string(),
            "receivers": receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
            "status": {"state": state, "silencedBy": silenced_by, "inhibitedBy": [], "mutedBy": []},
        }));
    }
    super::json(StatusCode::OK, &Value::Array(out))
}

/// The query parameters of `GET /api/v2/alerts`.
struct Query {
    active: bool,
    silenced: bool,
    filters: Vec<Matcher>,
    receiver: Option<regex::Regex>,
}

impl Query {
    fn parse(query: Option<&str>) -> Result<Query, String> {
        let mut q = Query { active: true, silenced: true, filters: Vec::new(), receiver: None };
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let flag = || match value.as_ref() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(format!("{key}: `{other}` is not a boolean; use true or false")),
            };
            match key.as_ref() {
                "active" => q.active = flag()?,
                "silenced" => q.silenced = flag()?,
                // Accepted for compatibility; they filter nothing until inhibition exists
                // (and no alert is ever unprocessed: routing is synchronous).
                "inhibited" | "unprocessed" => {
                    flag()?;
                }
                "filter" => q.filters.push(Matcher::parse(&value).map_err(|e| format!("filter[{}]: {e}", q.filters.len()))?),
                "receiver" => {
                    q.receiver = Some(regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| format!("receiver: not a valid regular expression: {e}"))?)
                }
                other => return Err(format!("unknown query parameter `{other}`")),
            }
        }
        Ok(q)
    }
}
