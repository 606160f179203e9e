//! The webhook channel: POSTs Alertmanager's webhook payload (version "4") so that every
//! existing Alertmanager webhook consumer works unchanged. The template for new plugins.

use belfry_plugin_sdk::{Alert, AlertStatus, Config, DeliveryError, DeliveryReport, Notification, Plugin, export_plugin, http};
use serde::{Serialize, Serializer};

struct Webhook;

struct WebhookConfig {
    url: String,
    max_alerts: usize,
    headers: Vec<(String, String)>,
    auth: Auth,
}

enum Auth {
    None,
    Bearer(String),
    Basic { user: String, password: String },
}

impl Plugin for Webhook {
    type Config = WebhookConfig;
    const NAME: &'static str = "webhook";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Alertmanager's webhook payload (version 4) to any HTTP endpoint";
    // Alertmanager's payload has no title or body.
    const USES_TEXT: bool = false;

    fn config(c: &mut Config) -> WebhookConfig {
        let url = c.url("url", "Endpoint that receives the POST");
        let max_alerts = c.integer_or("max_alerts", 0, 0..=1_000_000, "Most alerts per payload; 0 = all");
        let headers = c.text_map("headers", true, "Extra HTTP headers (values are secrets)");
        let bearer = c.secret("bearer_token", "Sent as `Authorization: Bearer <token>`");
        let user = c.optional_text("basic_auth_user", "User for HTTP Basic auth");
        let password = c.secret("basic_auth_password", "Password for HTTP Basic auth");
        let auth = match (bearer, user, password) {
            (None, None, None) => Auth::None,
            (Some(token), None, None) => Auth::Bearer(token),
            (None, Some(user), Some(password)) => Auth::Basic { user, password },
            (None, _, _) => {
                c.error("basic_auth_user", "set both basic_auth_user and basic_auth_password, or neither");
                Auth::None
            }
            (Some(_), _, _) => {
                c.error("bearer_token", "set either bearer_token or basic_auth_*, not both");
                Auth::None
            }
        };
        if headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("authorization")) && !matches!(auth, Auth::None) {
            c.error("headers", "an Authorization header conflicts with bearer_token/basic_auth_*");
        }
        WebhookConfig { url, max_alerts: max_alerts as usize, headers, auth }
    }

    fn deliver(config: WebhookConfig, n: Notification) -> Result<DeliveryReport, DeliveryError> {
        if n.acked_by.is_some() {
            // Alertmanager's webhook format has no acknowledgement: a copy of the firing
            // payload would read as a repeat. Accepted, nothing sent.
            return Ok(DeliveryReport { remote_id: None, status: None });
        }
        let payload = Payload::new(n, config.max_alerts);
        let mut request = http::post(&config.url).headers(&config.headers);
        request = match &config.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer(token),
            Auth::Basic { user, password } => request.basic_auth(user, password),
        };
        let response = request.json(&payload)?.send()?.check()?;
        Ok(response.report(None))
    }
}

export_plugin!(Webhook);

/// Alertmanager's `webhook.Message` (notify/webhook/webhook.go), field for field.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    receiver: String,
    status: &'static str,
    alerts: Vec<PayloadAlert>,
    group_labels: Object,
    common_labels: Object,
    common_annotations: Object,
    #[serde(rename = "externalURL")]
    external_url: String,
    version: &'static str,
    group_key: String,
    truncated_alerts: u64,
    /// Belfry's addition: the group's acknowledge link while it fires (docs/ACKS.md), so a
    /// webhook's consumer can offer it. Absent otherwise; consumers of Alertmanager's format
    /// ignore fields they do not know.
    #[serde(rename = "ackURL", skip_serializing_if = "Option::is_none")]
    ack_url: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PayloadAlert {
    status: &'static str,
    labels: Object,
    annotations: Object,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

/// Go's zero `time.Time`, which Alertmanager sends for an unset `endsAt`.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl Payload {
    fn new(n: Notification, max_alerts: usize) -> Self {
        let total = n.alerts.len();
        let kept = if max_alerts == 0 { total } else { total.min(max_alerts) };
        Payload {
            receiver: n.receiver,
            status: status(n.status),
            alerts: n.alerts.into_iter().take(kept).map(PayloadAlert::from).collect(),
            group_labels: Object(n.group_labels),
            common_labels: Object(n.common_labels),
            common_annotations: Object(n.common_annotations),
            external_url: n.external_url,
            version: "4",
            group_key: n.group_key,
            truncated_alerts: u64::from(n.truncated_alerts) + (total - kept) as u64,
            ack_url: n.ack_url,
        }
    }
}

impl From<Alert> for PayloadAlert {
    fn from(a: Alert) -> Self {
        PayloadAlert {
            status: status(a.status),
            labels: Object(a.labels),
            annotations: Object(a.annotations),
            starts_at: a.starts_at,
            ends_at: a.ends_at.unwrap_or_else(|| ZERO_TIME.to_string()),
            generator_url: a.generator_url,
            fingerprint: a.fingerprint,
        }
    }
}

fn status(s: AlertStatus) -> &'static str {
    match s {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "resolved",
    }
}

/// A label or annotation set as a JSON object, written straight from its pairs. The host
/// passes them sorted by name, names unique (WIT `pairs`), which is the order Alertmanager
/// writes (Go marshals maps sorted); building a map first only cost allocations.
struct Object(Vec<(String, String)>);

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, value)| (name, value)))
    }
}
