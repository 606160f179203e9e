//! The Discord channel: a webhook message with one embed per alert (colour by state), within Discord's limits on content, embeds, fields and total length.

use belfry_plugin_sdk::http::Class;
use belfry_plugin_sdk::{AlertStatus, Config, DeliveryError, DeliveryReport, Notification, Plugin, export_plugin, http, pair, truncate};
use serde_json::{Value, json};

struct Discord;

struct Target {
    url: String,
    username: Option<String>,
}

/// Discord's limits (discord.com/developers/docs/resources/message): message content, embeds
/// per message, embed title, description, fields per embed, field value, all embeds' text.
const MAX_CONTENT: usize = 2000;
const MAX_EMBEDS: usize = 10;
const MAX_TITLE: usize = 256;
const MAX_DESCRIPTION: usize = 4096;
const MAX_FIELDS: usize = 25;
const MAX_FIELD_NAME: usize = 256;
const MAX_FIELD_VALUE: usize = 1024;
const MAX_EMBED_TOTAL: usize = 6000;

impl Plugin for Discord {
    type Config = Target;
    const NAME: &'static str = "discord";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Discord messages with embeds, by webhook";

    fn config(c: &mut Config) -> Target {
        let url = c.required_secret_url(
            "webhook_url",
            "The channel's webhook URL, https://discord.com/api/webhooks/<id>/<token> (Server settings → Integrations → Webhooks)",
        );
        let username = c.optional_text("username", "The name the messages are posted under (default: the webhook's)");
        Target { url, username }
    }

    fn deliver(target: Target, n: Notification) -> Result<DeliveryReport, DeliveryError> {
        // `?wait=true` makes Discord answer with the message (its id) instead of 204.
        let separator = if target.url.contains('?') { '&' } else { '?' };
        let url = format!("{}{separator}wait=true", target.url);
        let response = http::post(&url).json(&message(&target, &n))?.send()?;
        if response.status() == 429 && response.retry_after_ms().is_none() {
            // Discord gives the wait in the body as well: `{"retry_after": 1.5}` (seconds).
            let seconds = response.json::<Value>().ok().and_then(|v| v["retry_after"].as_f64());
            return Err(DeliveryError::Retryable(belfry_plugin_sdk::RetryableError {
                message: "Discord answered HTTP 429".into(),
                retry_after_ms: seconds.map(|s| (s * 1000.0).ceil() as u64),
            }));
        }
        let response = response.check_with(STATUSES)?;
        let id = response.json::<Value>().ok().and_then(|v| v["id"].as_str().map(str::to_string));
        Ok(response.report(id))
    }
}

export_plugin!(Discord);

/// Discord answers 404 `Unknown Webhook` (code 10015) for a webhook that was deleted or whose
/// token is wrong: only the operator can fix that. The conformance kit checks this table.
const STATUSES: &[(u16, Class)] = &[(404, Class::Misconfigured)];

fn message(target: &Target, n: &Notification) -> Value {
    let title = belfry_plugin_sdk::title(n);
    let mut embeds = Vec::new();
    let mut total = 0;
    let shown = n.alerts.len().min(MAX_EMBEDS);
    for a in &n.alerts[..shown] {
        let firing = a.status == AlertStatus::Firing;
        let name = pair(&a.labels, "alertname").unwrap_or("alert");
        let embed_title = truncate(&format!("{} {name}", if firing { "🔥" } else { "✅" }), MAX_TITLE);
        let description = truncate(pair(&a.annotations, "summary").or(pair(&a.annotations, "description")).unwrap_or(""), MAX_DESCRIPTION);
        let fields: Vec<Value> = a
            .labels
            .iter()
            .filter(|(k, _)| k != "alertname")
            .take(MAX_FIELDS)
            .map(|(k, v)| json!({"name": truncate(k, MAX_FIELD_NAME), "value": truncate(v, MAX_FIELD_VALUE), "inline": true}))
            .collect();
        let size = embed_title.chars().count()
            + description.chars().count()
            + fields
                .iter()
                .map(|f| f["name"].as_str().unwrap().chars().count() + f["value"].as_str().unwrap().chars().count())
                .sum::<usize>();
        // All embeds of a message share 6,000 characters: stop before the one that would overflow.
        if total + size > MAX_EMBED_TOTAL {
            break;
        }
        total += size;
        let mut embed = json!({
            "title": embed_title,
            "description": description,
            "color": if firing { 0xE0_1E_5A } else { 0x2E_B6_7D },
            "fields": fields,
            "timestamp": a.starts_at,
        });
        if a.generator_url.starts_with("http") {
            embed["url"] = Value::String(a.generator_url.clone());
        }
        embeds.push(embed);
    }
    let left_out = n.alerts.len() - embeds.len() + n.truncated_alerts as usize;
    let mut content = title;
    if left_out > 0 {
        content.push_str(&format!(" (+{left_out} more)"));
    }
    if let Some(url) = pair(&n.common_annotations, "runbook_url") {
        content.push_str(&format!("\nRunbook: {url}"));
    }
    let mut message = json!({
        "content": truncate(&content, MAX_CONTENT),
        "embeds": embeds,
        // Alert text must never ping @everyone or roles.
        "allowed_mentions": {"parse": []},
    });
    if let Some(username) = &target.username {
        message["username"] = Value::String(truncate(username, 80));
    }
    message
}
