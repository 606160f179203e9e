//! `/api/v2/alerts`: POST decodes, merges into the tenant's state, makes it durable, then notifies what changed; GET lists with Alertmanager's filters.

use chrono::Utc;
use serde::Serialize;
use serde_json::json;

use crate::alert::{LabelSet, format_time};
use crate::matcher::Matcher;
use hyper::{Response, StatusCode};

use super::respond::{Body, error};
use crate::dispatch::Notifier;
use std::sync::Arc;

/// Accept a batch of postable alerts. All or nothing: a bad alert rejects the whole request
/// before anything is stored. The 200 is sent only once the alerts are durable.
pub async fn post(notifier: &Arc<Notifier>, body: &[u8]) -> Response<Body> {
    let now = Utc::now();
    match crate::ingest::decode_postable_alerts(body, now, &notifier.limits) {
        Ok(alerts) => accept(notifier, alerts, now).await.unwrap_or_else(|r| r),
        Err(e) => invalid(notifier, e.to_string()),
    }
}

/// `POST /api/belfry/v1/alertmanager`: an upstream Alertmanager's webhook payload, so Belfry
/// can sit behind an existing Alertmanager.
pub async fn post_alertmanager_webhook(notifier: &Arc<Notifier>, body: &[u8]) -> Response<Body> {
    let now = Utc::now();
    match crate::ingest::decode_alertmanager_webhook(body, now, &notifier.limits) {
        Ok(alerts) => accept(notifier, alerts, now).await.unwrap_or_else(|r| r),
        Err(e) => invalid(notifier, e.to_string()),
    }
}

/// `POST /api/belfry/v1/events`: one event from a system that is not Prometheus. A resolve
/// applies to the held alert with the same `dedup_key`, whatever its other labels.
pub async fn post_event(notifier: &Arc<Notifier>, body: &[u8]) -> Response<Body> {
    let now = Utc::now();
    let (event, mut alert) = match crate::ingest::decode_event(body, now, &notifier.limits) {
        Ok(decoded) => decoded,
        Err(e) => return invalid(notifier, e.to_string()),
    };
    let dedup_key = alert.labels["dedup_key"].clone();
    if event.resolve {
        let held = notifier.state.select(&|a| a.label("dedup_key") == Some(dedup_key.as_str()));
        if let Some(held) = held.into_iter().next() {
            alert.labels = held.labels;
            alert.starts_at = held.starts_at;
        }
    } else {
        // An event stays open until resolved (or a day without a re-trigger), like an incident.
        alert.ends_at = Some(now + crate::ingest::WEBHOOK_FIRING_TTL);
    }
    let fingerprint = alert.fingerprint().to_string();
    if let Err(response) = accept(notifier, vec![alert], now).await {
        return response;
    }
    super::respond::json(StatusCode::OK, &json!({ "dedup_key": dedup_key, "fingerprint": fingerprint }))
}

/// A 400 for a request with an invalid alert, counted in `alertmanager_alerts_invalid_total`
/// (once per request: a bad alert rejects the whole request).
fn invalid(notifier: &Notifier, message: String) -> Response<Body> {
    notifier.metrics.alerts_invalid.get_or_create(&crate::metrics::tenant_labels(&notifier.tenant)).inc();
    error(StatusCode::BAD_REQUEST, message)
}

/// A 429 with `Retry-After`: `wait` in whole seconds (rounded up, at least 1), and the message
/// `say` makes of them.
fn retry_later(wait: std::time::Duration, say: impl FnOnce(u64) -> String) -> Response<Body> {
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, say(seconds));
    response.headers_mut().insert(hyper::header::RETRY_AFTER, seconds.into());
    response
}

/// The path every ingest format shares: the tenant's rate, its state (all or nothing), the
/// durable commit, then notifying what changed. `Err` is the error response to send.
async fn accept(
    notifier: &Arc<Notifier>,
    alerts: Vec<crate::alert::Alert>,
    now: chrono::DateTime<Utc>,
) -> Result<Response<Body>, Response<Body>> {
    // The script budget first: checking it takes nothing, while the rate's check spends tokens.
    if let Err(wait) = notifier.script_budget.check() {
        let per_second = notifier.limits.script_ms_per_second;
        return Err(retry_later(wait, |s| {
            format!("the tenant's routing script has used its time ({per_second} ms per second, script_ms_per_second); retry in {s} s")
        }));
    }
    if let Some(count) = std::num::NonZeroU32::new(alerts.len() as u32) {
        match notifier.ingest_rate.check_n(count) {
            Ok(Ok(())) => {}
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                let rate = notifier.limits.ingest_rate;
                return Err(retry_later(wait, |s| format!("the tenant's ingest rate is {rate} alerts/s (ingest_rate); retry in {s} s")));
            }
            Err(_) => unreachable!("max_alerts_per_request <= ingest_burst is checked at config load"),
        }
    }
    let firing = alerts.iter().filter(|a| a.status_at(now) == crate::alert::Status::Firing).count() as u64;
    let resolved = alerts.len() as u64 - firing;
    let (touched, commit) = notifier
        .state
        .ingest(alerts, now, notifier.store.as_ref(), notifier.limits.max_alerts)
        .map_err(|message| error(StatusCode::TOO_MANY_REQUESTS, message))?;
    // Grouping (and delivery) go ahead while the batch is written: a notification never waits
    // for the disk. The sender's answer does, so an alert it was told is accepted survives a crash.
    // The routing script runs off the async workers: however slow a tenant's script, it never
    // holds up another tenant's requests or the health checks.
    let routed = notifier.clone();
    if tokio::task::spawn_blocking(move || routed.on_ingested(&touched, now)).await.is_err() {
        return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "routing the alerts failed; retry".into()));
    }
    match commit.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, format!("the alerts could not be stored ({e}); retry"))),
        Err(_) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "the store stopped; retry".into())),
    }
    let tenant = crate::metrics::tenant_labels(&notifier.tenant);
    notifier.metrics.alerts_received.get_or_create(&crate::metrics::with(tenant.clone(), "status", "firing")).inc_by(firing);
    notifier.metrics.alerts_received.get_or_create(&crate::metrics::with(tenant, "status", "resolved")).inc_by(resolved);
    Ok(Response::builder().status(StatusCode::OK).body(Body::default()).expect("static response"))
}

/// An alert the query kept, with what the API shows about it.
struct Listed {
    alert: crate::state::AlertRecord,
    receivers: Vec<String>,
    silenced_by: Vec<String>,
    inhibited_by: Vec<String>,
}

/// The tenant's unresolved alerts that pass Alertmanager's filters: `active`, `silenced`,
/// `inhibited`, `unprocessed` (booleans, default true), `receiver` (an anchored regex on
/// receiver names) and repeated `filter` matchers.
fn matching(notifier: &Notifier, query: Option<&str>) -> Result<Vec<Listed>, String> {
    let q = Query::parse(query)?;
    let now = Utc::now();
    let mut out = Vec::new();
    let sources = (!notifier.inhibitor.is_empty()).then(|| notifier.inhibitor.sources(&notifier.state, now));
    // Label filters run during the scan, so only matching alerts are copied.
    for a in notifier.state.select(&|a| a.ends_at() > now && q.filters.iter().all(|m| m.matches_value(a.label(&m.name)))) {
        let receivers = notifier.receivers_of(&a, now);
        if let Some(re) = &q.receiver
            && !receivers.iter().any(|r| re.is_match(r))
        {
            continue;
        }
        let silenced_by = notifier.silences.silencing(&a.labels, now);
        let inhibited_by: Vec<String> = sources
            .as_ref()
            .and_then(|s| notifier.inhibitor.inhibited_by(s, a.fingerprint(), &a.labels))
            .map(|fp| fp.to_string())
            .into_iter()
            .collect();
        let active = silenced_by.is_empty() && inhibited_by.is_empty();
        if (active && !q.active) || (!silenced_by.is_empty() && !q.silenced) || (!inhibited_by.is_empty() && !q.inhibited) {
            continue;
        }
        out.push(Listed { alert: a, receivers, silenced_by, inhibited_by });
    }
    Ok(out)
}

/// Alertmanager's `gettableAlert`, serialized straight from the stored alert: a `serde_json::Value`
/// per alert cost ~6 KiB each while a listing was built (65 MiB for 10K alerts). Fields in
/// name order, as the `Value` it replaced wrote them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Gettable<'a> {
    annotations: &'a LabelSet,
    ends_at: String,
    fingerprint: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
    labels: &'a LabelSet,
    receivers: Vec<Named<'a>>,
    starts_at: String,
    status: GettableStatus<'a>,
    updated_at: String,
}

#[derive(Serialize)]
struct Named<'a> {
    name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GettableStatus<'a> {
    inhibited_by: &'a [String],
    /// Alertmanager's time-interval mutes of an alert; Belfry mutes groups, not alerts.
    muted_by: [&'a str; 0],
    silenced_by: &'a [String],
    state: &'static str,
}

fn gettable(l: &Listed) -> Gettable<'_> {
    let a = &l.alert;
    Gettable {
        annotations: &a.annotations,
        ends_at: format_time(a.ends_at),
        fingerprint: a.fingerprint().to_string(),
        generator_url: &a.generator_url,
        labels: &a.labels,
        receivers: l.receivers.iter().map(|name| Named { name }).collect(),
        starts_at: format_time(a.starts_at),
        status: GettableStatus {
            inhibited_by: &l.inhibited_by,
            muted_by: [],
            silenced_by: &l.silenced_by,
            state: if l.silenced_by.is_empty() && l.inhibited_by.is_empty() { "active" } else { "suppressed" },
        },
        updated_at: format_time(a.updated_at),
    }
}

/// `GET /api/v2/alerts`.
pub fn get(notifier: &Notifier, query: Option<&str>) -> Response<Body> {
    match matching(notifier, query) {
        Ok(listed) => super::respond::json(StatusCode::OK, &listed.iter().map(gettable).collect::<Vec<_>>()),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// `GET /api/v2/alerts/groups`: Alertmanager's `alertGroups`, with the same filters: the
/// tenant's aggregation groups and their alerts that pass the filters.
pub fn groups(notifier: &Notifier, query: Option<&str>) -> Response<Body> {
    let listed = match matching(notifier, query) {
        Ok(listed) => listed,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let by_fingerprint: std::collections::HashMap<_, &Listed> = listed.iter().map(|l| (l.alert.fingerprint(), l)).collect();
    let routing = notifier.routing.lock().expect("routing lock");
    let mut groups: Vec<GettableGroup> = routing
        .groups
        .iter()
        .filter_map(|g| {
            let members: Vec<&&Listed> = g.alerts.iter().filter_map(|fp| by_fingerprint.get(fp)).collect();
            let labels = g.options.group_by.group_labels(&members.first()?.alert.labels);
            Some(GettableGroup {
                ack: routing.groups.ack_of(&g.key).map(|a| GettableAck {
                    acked_at: format_time(a.at),
                    acked_by: &a.by,
                    comment: &a.comment,
                }),
                alerts: members.into_iter().map(|l| gettable(l)).collect(),
                group_key: &g.key,
                labels,
                receiver: Named { name: &g.receiver },
            })
        })
        .collect();
    groups.sort_by(|a, b| a.group_key.cmp(b.group_key));
    super::respond::json(StatusCode::OK, &groups)
}

/// Alertmanager's `alertGroup`, and Belfry's additions: the key that acks and notifications
/// name, and the ack if any. Fields in name order, as for [`Gettable`].
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GettableGroup<'a> {
    ack: Option<GettableAck<'a>>,
    alerts: Vec<Gettable<'a>>,
    group_key: &'a str,
    labels: LabelSet,
    receiver: Named<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GettableAck<'a> {
    acked_at: String,
    acked_by: &'a str,
    comment: &'a str,
}

/// The query parameters of `GET /api/v2/alerts`.
struct Query {
    active: bool,
    silenced: bool,
    inhibited: bool,
    filters: Vec<Matcher>,
    receiver: Option<regex::Regex>,
}

impl Query {
    fn parse(query: Option<&str>) -> Result<Query, String> {
        let mut q = Query { active: true, silenced: true, inhibited: true, filters: Vec::new(), receiver: None };
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let flag = || match value.as_ref() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(format!("{key}: `{other}` is not a boolean; use true or false")),
            };
            match key.as_ref() {
                "active" => q.active = flag()?,
                "silenced" => q.silenced = flag()?,
                "inhibited" => q.inhibited = flag()?,
                // Accepted for compatibility: no alert is ever unprocessed (routing is synchronous).
                "unprocessed" => {
                    flag()?;
                }
                "filter" => q.filters.push(Matcher::parse(&value).map_err(|e| format!("filter[{}]: {e}", q.filters.len()))?),
                "receiver" => {
                    q.receiver = Some(
                        regex::Regex::new(&format!("^(?:{value})$"))
                            .map_err(|e| format!("receiver: not a valid regular expression: {e}"))?,
                    )
                }
                other => return Err(format!("unknown query parameter `{other}`")),
            }
        }
        Ok(q)
    }
}
