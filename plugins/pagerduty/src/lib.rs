//! The PagerDuty channel: Events API v2 trigger and resolve, one incident per group through a stable `dedup_key`, within PagerDuty's size limits.

use belfry_plugin_sdk::{AlertStatus, Config, DeliveryError, DeliveryReport, Notification, Plugin, export_plugin, http, pair, truncate};
use serde_json::{Map, Value, json};

struct PagerDuty;

struct Target {
    routing_key: String,
    url: String,
    source: Option<String>,
}

/// PagerDuty's limits (developer.pagerduty.com/docs/events-api-v2): summary, dedup key, whole event.
const MAX_SUMMARY: usize = 1024;
const MAX_DEDUP_KEY: usize = 255;
const MAX_EVENT_BYTES: usize = 512 * 1024;
/// Alerts listed in `custom_details`.
const MAX_DETAILED_ALERTS: usize = 20;

impl Plugin for PagerDuty {
    type Config = Target;
    const NAME: &'static str = "pagerduty";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "PagerDuty incidents via the Events API v2, one per alert group";

    fn config(c: &mut Config) -> Target {
        let routing_key = c.required_secret("routing_key", "The integration key of a PagerDuty service (Events API v2)");
        if !routing_key.is_empty() && (routing_key.len() != 32 || !routing_key.chars().all(|ch| ch.is_ascii_alphanumeric())) {
            c.error("routing_key", "an Events API v2 integration key is 32 letters and digits");
        }
        let url = c.url_or(
            "url",
            "https://events.pagerduty.com/v2/enqueue",
            "Events API endpoint (default https://events.pagerduty.com/v2/enqueue)",
        );
        let source = c.optional_text("source", "The incident's source (default: the `instance` label, else `belfry`)");
        Target { routing_key, url, source }
    }

    fn deliver(target: Target, n: Notification) -> Result<DeliveryReport, DeliveryError> {
        let event = event(&target, &n);
        let response = http::post(&target.url).json(&event)?.send()?;
        // 202 `{"status": "success", "dedup_key": ...}`; 400 invalid event; 429 throttled; 5xx.
        let response = response.check()?;
        let answer: Value = response.json().unwrap_or(Value::Null);
        let id = answer["dedup_key"].as_str().map(str::to_string).or_else(|| Some(dedup_key(&n.group_key)));
        Ok(response.report(id))
    }
}

export_plugin!(PagerDuty);

/// The event: `trigger` while any alert fires, `resolve` once all resolved; one incident per
/// group (the same `dedup_key` for every event of the group).
fn event(target: &Target, n: &Notification) -> Value {
    let dedup_key = dedup_key(&n.group_key);
    if n.status == AlertStatus::Resolved {
        return json!({"routing_key": target.routing_key, "event_action": "resolve", "dedup_key": dedup_key});
    }
    if n.acked_by.is_some() {
        // The incident is acknowledged in PagerDuty too: its escalation stops there as well.
        return json!({"routing_key": target.routing_key, "event_action": "acknowledge", "dedup_key": dedup_key});
    }
    let firing: Vec<_> = n.alerts.iter().filter(|a| a.status == AlertStatus::Firing).collect();
    let summary = n.title.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| {
        let name = pair(&n.common_labels, "alertname").unwrap_or("alerts");
        format!("[FIRING:{}] {name}", firing.len())
    });
    let source =
        target.source.clone().or_else(|| pair(&n.common_labels, "instance").map(str::to_string)).unwrap_or_else(|| "belfry".into());
    let mut details = Map::new();
    details.insert("firing".into(), json!(firing.len()));
    details.insert("resolved".into(), json!(n.alerts.len() - firing.len()));
    details.insert("truncated_alerts".into(), json!(n.truncated_alerts));
    if let Some(body) = n.body.as_deref().filter(|b| !b.is_empty()) {
        details.insert("body".into(), json!(body));
    }
    let alerts: Vec<Value> = firing
        .iter()
        .take(MAX_DETAILED_ALERTS)
        .map(|a| json!({"labels": object(&a.labels), "annotations": object(&a.annotations), "startsAt": a.starts_at}))
        .collect();
    details.insert("alerts".into(), json!(alerts));
    let mut links = Vec::new();
    for (text, name) in [("Runbook", "runbook_url"), ("Dashboard", "dashboard_url")] {
        if let Some(url) = pair(&n.common_annotations, name).filter(|u| u.starts_with("http")) {
            links.push(json!({"href": url, "text": text}));
        }
    }
    let mut event = json!({
        "routing_key": target.routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "Belfry",
        "client_url": n.external_url,
        "links": links,
        "payload": {
            "summary": truncate(&summary, MAX_SUMMARY),
            "source": truncate(&source, MAX_SUMMARY),
            "severity": severity(pair(&n.common_labels, "severity")),
            "timestamp": firing.first().map(|a| a.starts_at.clone()),
            "component": pair(&n.common_labels, "job"),
            "group": pair(&n.common_labels, "team"),
            "class": pair(&n.common_labels, "alertname"),
            "custom_details": details,
        },
    });
    // Optional fields are left out rather than sent as null.
    if let Some(payload) = event["payload"].as_object_mut() {
        payload.retain(|_, v| !v.is_null());
    }
    // Over PagerDuty's limit, the details go first (they are the only unbounded part).
    if serde_json::to_vec(&event).map_or(0, |b| b.len()) > MAX_EVENT_BYTES {
        event["payload"]["custom_details"] =
            json!({"note": "details dropped: the event exceeded PagerDuty's 512 KB limit", "firing": firing.len()});
    }
    event
}

/// PagerDuty's severities from Prometheus' usual `severity` values.
fn severity(label: Option<&str>) -> &'static str {
    match label.unwrap_or("") {
        "critical" | "page" | "emergency" | "fatal" => "critical",
        "warning" | "warn" => "warning",
        "info" | "informational" | "none" => "info",
        _ => "error",
    }
}

/// The group key, or for keys over 255 characters a prefix with a hash of the whole key, so the
/// key stays stable and unique.
fn dedup_key(group_key: &str) -> String {
    if group_key.len() <= MAX_DEDUP_KEY {
        return group_key.to_string();
    }
    // FNV-1a 64: stable across versions and platforms, enough to tell groups apart.
    let hash = group_key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let prefix: String = group_key.chars().take(MAX_DEDUP_KEY - 17).collect();
    format!("{prefix}~{hash:016x}")
}

fn object(pairs: &[(String, String)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()
}
