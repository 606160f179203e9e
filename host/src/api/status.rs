//! `GET /api/v2/status` (amtool calls it before every command), `GET /api/v2/receivers`, and Belfry's per-receiver health.

use hyper::{Response, StatusCode};
use serde_json::json;

use super::respond::Body;
use crate::alert::format_time;
use crate::dispatch::Notifier;

/// Alertmanager's `AlertmanagerStatus`. `config.original` describes the tenant's receivers
/// without their settings: the real configuration holds secrets and other tenants' data.
pub fn status(notifier: &Notifier, started: chrono::DateTime<chrono::Utc>) -> Response<Body> {
    let mut names: Vec<&String> = notifier.channels.keys().collect();
    names.sort();
    let original = format!(
        "# Belfry {} — tenant `{}`\n# receivers: {}\n",
        env!("CARGO_PKG_VERSION"),
        notifier.tenant,
        names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
    );
    let body = json!({
        "cluster": {"name": "", "status": "disabled", "peers": []},
        "config": {"original": original},
        "uptime": format_time(started),
        "versionInfo": {
            "version": env!("CARGO_PKG_VERSION"),
            "branch": "", "revision": "", "buildUser": "", "buildDate": "", "goVersion": "",
        },
    });
    super::respond::json(StatusCode::OK, &body)
}

/// `GET /api/belfry/v1/config`: the tenant's configuration as it runs: the routing script
/// (file, when and by what it was loaded, self-tests passed) and the last change refused, with
/// its `file:line` error, so a tenant sees a rejected script without the daemon's log.
pub fn config(notifier: &Notifier) -> Response<Body> {
    let mut body = notifier.config_status.to_json();
    body["tenant"] = json!(notifier.tenant);
    super::respond::json(StatusCode::OK, &body)
}

/// `GET /api/belfry/v1/receivers`: the tenant's receivers with their health: breaker state,
/// consecutive failures, last success, last failure and its class.
pub fn receiver_health(notifier: &Notifier) -> Response<Body> {
    let mut channels: Vec<_> = notifier.channels.iter().collect();
    channels.sort_by_key(|(name, _)| *name);
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(format_time);
    let list: Vec<_> = channels
        .into_iter()
        .map(|(name, channel)| {
            let (state, failures) = channel.gate.breaker.state();
            let health = channel.gate.health.lock().expect("health lock").clone();
            json!({
                "name": name,
                "integration": channel.receiver.plugin_name(),
                "fallback": channel.fallback,
                "breaker": state.as_str(),
                "consecutiveFailures": failures,
                "lastSuccess": time(health.last_success),
                "lastFailure": time(health.last_failure),
                "lastError": health.last_error.map(|(kind, blame)| json!({"kind": kind, "blame": blame})),
            })
        })
        .collect();
    super::respond::json(StatusCode::OK, &json!(list))
}

/// Who each of the tenant's schedules has on call, now or `?at=<RFC 3339>`:
/// `[{"schedule", "receiver", "source"}]` (`receiver` null in a gap of the schedule).
pub fn on_call(notifier: &Notifier, query: Option<&str>) -> Response<Body> {
    let mut at = chrono::Utc::now();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match (&*key, chrono::DateTime::parse_from_rfc3339(&value)) {
            ("at", Ok(t)) => at = t.with_timezone(&chrono::Utc),
            ("at", Err(_)) => {
                return super::respond::error(
                    StatusCode::BAD_REQUEST,
                    format!("at: `{value}` is not an RFC 3339 time such as 2026-11-24T09:00:00Z"),
                );
            }
            _ => return super::respond::error(StatusCode::BAD_REQUEST, format!("unknown parameter `{key}`; the one parameter is `at`")),
        }
    }
    let mut names: Vec<&String> = notifier.schedules.keys().collect();
    names.sort();
    let list: Vec<_> = names
        .into_iter()
        .map(|name| {
            let found = notifier.on_call(name, at);
            json!({"schedule": name, "receiver": found.as_ref().map(|o| &o.receiver), "source": found.as_ref().map(|o| &o.source)})
        })
        .collect();
    super::respond::json(StatusCode::OK, &json!({"at": format_time(at), "onCall": list}))
}

/// The tenant's receivers: `[{"name": ...}]`.
pub fn receivers(notifier: &Notifier) -> Response<Body> {
    let mut names: Vec<&String> = notifier.channels.keys().collect();
    names.sort();
    super::respond::json(StatusCode::OK, &json!(names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()))
}
