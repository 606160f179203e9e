//! The Opsgenie channel: Alert API v2 create, and close by alias once the group resolves; one Opsgenie alert per group, within Opsgenie's field limits.

use belfry_plugin_sdk::{AlertStatus, Config, DeliveryError, DeliveryReport, Notification, Plugin, export_plugin, http, pair, truncate};
use serde_json::{Value, json};

struct Opsgenie;

struct Target {
    api_key: String,
    api_url: String,
    responders: Vec<Value>,
    tags: Vec<String>,
}

/// Opsgenie's limits (docs.opsgenie.com/docs/alert-api): message, alias, description, tags.
const MAX_MESSAGE: usize = 130;
const MAX_ALIAS: usize = 512;
const MAX_DESCRIPTION: usize = 15_000;
const MAX_TAGS: usize = 20;
const MAX_TAG: usize = 50;

impl Plugin for Opsgenie {
    type Config = Target;
    const NAME: &'static str = "opsgenie";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Opsgenie alerts via the Alert API v2, one per alert group";

    fn config(c: &mut Config) -> Target {
        let api_key = c.required_secret("api_key", "An API integration's key (GenieKey)");
        let api_url =
            c.url_or("api_url", "https://api.opsgenie.com", "API base: https://api.opsgenie.com (default) or https://api.eu.opsgenie.com");
        let api_url = api_url.trim_end_matches('/').to_string();
        let mut responders = Vec::new();
        for r in c.text_list("responders", "Who is notified: team:<name>, user:<email>, escalation:<name>, schedule:<name>") {
            match r.split_once(':') {
                Some((kind @ ("team" | "escalation" | "schedule"), name)) if !name.is_empty() => {
                    responders.push(json!({"type": kind, "name": name}))
                }
                Some(("user", name)) if name.contains('@') => responders.push(json!({"type": "user", "username": name})),
                _ => c.error("responders", format!("`{r}` is not team:<name>, user:<email>, escalation:<name> or schedule:<name>")),
            }
        }
        let tags = c.text_list("tags", "Tags added to every alert");
        Target { api_key, api_url, responders, tags }
    }

    fn deliver(target: Target, n: Notification) -> Result<DeliveryReport, DeliveryError> {
        let alias = truncate(&n.group_key, MAX_ALIAS);
        let auth = format!("GenieKey {}", target.api_key);
        let action_url = |action: &str| {
            format!(
                "{}/v2/alerts/{}/{action}?identifierType=alias",
                target.api_url,
                percent_encoding::utf8_percent_encode(&alias, percent_encoding::NON_ALPHANUMERIC)
            )
        };
        let request = if n.status == AlertStatus::Resolved {
            http::post(&action_url("close"))
                .header("Authorization", &auth)
                .json(&json!({"source": "Belfry", "note": "Resolved in Belfry"}))?
        } else if let Some(by) = &n.acked_by {
            let note = json!({"user": truncate(by, 100), "source": "Belfry", "note": "Acknowledged in Belfry"});
            http::post(&action_url("acknowledge")).header("Authorization", &auth).json(&note)?
        } else {
            http::post(&format!("{}/v2/alerts", target.api_url)).header("Authorization", &auth).json(&create(&target, &n, &alias))?
        };
        // 202 `{"result": "Request will be processed", "requestId": ...}`; 422 invalid; 429 throttled.
        let response = request.send()?.check()?;
        let id = response.json::<Value>().ok().and_then(|v| v["requestId"].as_str().map(str::to_string));
        Ok(response.report(id))
    }
}

export_plugin!(Opsgenie);

fn create(target: &Target, n: &Notification, alias: &str) -> Value {
    let message = belfry_plugin_sdk::title(n);
    let mut tags: Vec<String> = target.tags.clone();
    tags.extend(n.common_labels.iter().filter(|(k, _)| k != "alertname").map(|(k, v)| format!("{k}:{v}")));
    let tags: Vec<String> = tags.iter().take(MAX_TAGS).map(|t| truncate(t, MAX_TAG)).collect();
    let details: serde_json::Map<String, Value> =
        n.common_labels.iter().map(|(k, v)| (truncate(k, 50), Value::String(truncate(v, 1000)))).collect();
    json!({
        "message": truncate(&message, MAX_MESSAGE),
        "alias": alias,
        "description": truncate(n.body.as_deref().unwrap_or(""), MAX_DESCRIPTION),
        "responders": target.responders,
        "tags": tags,
        "details": details,
        "entity": pair(&n.common_labels, "instance").map(|i| truncate(i, 512)),
        "source": "Belfry",
        "priority": priority(pair(&n.common_labels, "severity")),
    })
}

/// Opsgenie's P1–P5 from Prometheus' usual `severity` values.
fn priority(severity: Option<&str>) -> &'static str {
    match severity.unwrap_or("") {
        "critical" | "page" | "emergency" => "P1",
        "error" | "high" => "P2",
        "warning" | "warn" => "P3",
        "info" | "informational" => "P5",
        _ => "P3",
    }
}
