//! `GET /api/v2/status` (amtool calls it before every command), `GET /api/v2/receivers`, and Belfry's per-receiver health.

use hyper::{Response, StatusCode};
use serde_json::json;

use super::Body;
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
    super::json(StatusCode::OK, &body)
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
    super::json(StatusCode::OK, &json!(list))
}

/// The tenant's receivers: `[{"name": ...}]`.
pub fn receivers(notifier: &Notifier) -> Response<Body> {
    let mut names: Vec<&String> = notifier.channels.keys().collect();
    names.sort();
    super::json(StatusCode::OK, &json!(names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()))
}
