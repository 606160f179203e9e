//! `GET /api/v2/status` (amtool calls it before every command) and `GET /api/v2/receivers`.

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

/// The tenant's receivers: `[{"name": ...}]`.
pub fn receivers(notifier: &Notifier) -> Response<Body> {
    let mut names: Vec<&String> = notifier.channels.keys().collect();
    names.sort();
    super::json(StatusCode::OK, &json!(names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()))
}
