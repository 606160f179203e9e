//! `/api/v2/silences` and `/api/v2/silence/{id}`: create, update, list, get and expire a tenant's silences.

use chrono::Utc;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::respond::{Body, error};
use crate::alert::format_time;
use crate::dispatch::Notifier;
use crate::matcher::Matcher;
use crate::silence::{PostableSilence, Silence, SilenceError, SilenceState};
use crate::store::Op;

/// Alertmanager's `gettableSilence`.
fn gettable(s: &Silence, now: chrono::DateTime<Utc>) -> Value {
    json!({
        "id": s.id,
        "matchers": s.matchers,
        "startsAt": format_time(s.starts_at),
        "endsAt": format_time(s.ends_at),
        "updatedAt": format_time(s.updated_at),
        "createdBy": s.created_by,
        "comment": s.comment,
        "status": {"state": s.state_at(now).as_str()},
    })
}

fn refused(e: SilenceError) -> Response<Body> {
    error(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST), e.message)
}

/// Make `ops` durable before answering.
async fn commit(notifier: &Notifier, ops: Vec<Op>) -> Result<(), Response<Body>> {
    let result = notifier.store.submit(ops).await;
    // What is muted may have changed: groups re-evaluate at their next boundary.
    notifier.touch_all(Utc::now());
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, format!("the silence could not be stored ({e}); retry"))),
        Err(_) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "the store stopped; retry".into())),
    }
}

/// `POST /api/v2/silences`: `{"silenceID": ...}` once durable.
pub async fn post(notifier: &Notifier, body: &[u8]) -> Response<Body> {
    let postable: PostableSilence = match crate::ingest::decode_json(body, "a silence: matchers, startsAt, endsAt, createdBy, comment") {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let (id, ops) = match notifier.silences.set(postable, Utc::now(), notifier.limits.max_silences) {
        Ok(done) => done,
        Err(e) => return refused(e),
    };
    if let Err(response) = commit(notifier, ops).await {
        return response;
    }
    tracing::info!(tenant = %notifier.tenant, silence = %id, "silence set");
    if let Some(s) = notifier.silences.get(&id) {
        // `createdBy` is what the client claims; the token it authenticated with names the tenant.
        let fields = json!({"via": "api", "silence": id, "matchers": s.matchers, "startsAt": format_time(s.starts_at), "endsAt": format_time(s.ends_at), "comment": s.comment});
        notifier.audit.record(&notifier.tenant, "silence.set", &s.created_by, &fields);
    }
    super::respond::json(StatusCode::OK, &json!({ "silenceID": id }))
}

/// `GET /api/v2/silences`, optionally with `filter` matchers (a silence is listed when each
/// filter equals one of its matchers). Active first (soonest end first), then pending
/// (soonest start first), then expired (latest end first), as Alertmanager orders them.
pub fn list(notifier: &Notifier, query: Option<&str>) -> Response<Body> {
    let mut filters = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "filter" => match Matcher::parse(&value) {
                Ok(m) => filters.push(m),
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("filter[{}]: {e}", filters.len())),
            },
            other => return error(StatusCode::BAD_REQUEST, format!("unknown query parameter `{other}`")),
        }
    }
    let now = Utc::now();
    let mut silences: Vec<Silence> = notifier
        .silences
        .list()
        .into_iter()
        .filter(|s| filters.iter().all(|f| s.matchers.iter().any(|m| m.to_matcher().is_ok_and(|m| m == *f))))
        .collect();
    let rank = |s: &Silence| match s.state_at(now) {
        SilenceState::Active => (0, s.ends_at.timestamp_millis()),
        SilenceState::Pending => (1, s.starts_at.timestamp_millis()),
        SilenceState::Expired => (2, -s.ends_at.timestamp_millis()),
    };
    silences.sort_by_key(rank);
    super::respond::json(StatusCode::OK, &Value::Array(silences.iter().map(|s| gettable(s, now)).collect()))
}

/// `GET /api/v2/silence/{id}`.
pub fn get(notifier: &Notifier, id: &str) -> Response<Body> {
    match notifier.silences.get(id) {
        Some(s) => super::respond::json(StatusCode::OK, &gettable(&s, Utc::now())),
        None => error(StatusCode::NOT_FOUND, format!("silence {id} not found")),
    }
}

/// `DELETE /api/v2/silence/{id}`: expire it now.
pub async fn delete(notifier: &Notifier, id: &str) -> Response<Body> {
    let ops = match notifier.silences.expire(id, Utc::now()) {
        Ok(ops) => ops,
        Err(e) => return refused(e),
    };
    if let Err(response) = commit(notifier, ops).await {
        return response;
    }
    tracing::info!(tenant = %notifier.tenant, silence = %id, "silence expired");
    notifier.audit.record(&notifier.tenant, "silence.expire", "api", &json!({"silence": id}));
    Response::builder().status(StatusCode::OK).body(Body::default()).expect("static response")
}
