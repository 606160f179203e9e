//! The Slack channel: an incoming webhook or `chat.postMessage` with a bot token; Block Kit with the severity's colour, the alerts as sections, their labels as fields and link buttons; within Slack's limits.

use belfry_plugin_sdk::http::Class;
use belfry_plugin_sdk::{Config, DeliveryError, DeliveryReport, Notification, Plugin, export_plugin, http, pair, truncate};
use serde_json::{Value, json};

struct Slack;

enum Target {
    /// An incoming webhook (its URL is the credential).
    Webhook(String),
    /// `chat.postMessage` with a bot token, to a channel.
    Api { token: String, channel: String, api_url: String },
}

/// Slack's limits (api.slack.com/reference/block-kit): blocks per message, characters per
/// section text, per header, per field, fields per section, characters per button label.
const MAX_BLOCKS: usize = 50;
const MAX_SECTION: usize = 3000;
const MAX_HEADER: usize = 150;
const MAX_FIELD: usize = 2000;
const MAX_FIELDS: usize = 10;
const MAX_BUTTON: usize = 75;
/// The notification text (the fallback shown in notifications), kept well under Slack's 40,000.
const MAX_TEXT: usize = 3000;

impl Plugin for Slack {
    type Config = Target;
    const NAME: &'static str = "slack";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Slack messages with Block Kit, by incoming webhook or chat.postMessage";

    fn config(c: &mut Config) -> Target {
        let webhook = c.secret_url("webhook_url", "Incoming webhook URL (https://hooks.slack.com/services/...)");
        let token = c.secret("token", "Bot token (xoxb-...) for chat.postMessage");
        let channel = c.optional_text("channel", "Channel for chat.postMessage (#alerts or C0123...)");
        let api_url = c.url_or("api_url", "https://slack.com/api", "Slack's API base URL (default https://slack.com/api)");
        match (webhook, token, channel) {
            (Some(url), None, None) => Target::Webhook(url),
            (None, Some(token), Some(channel)) => {
                if !token.starts_with("xox") {
                    c.error("token", "a Slack bot token starts with `xoxb-`");
                }
                Target::Api { token, channel, api_url: api_url.trim_end_matches('/').to_string() }
            }
            (None, Some(_), None) => {
                c.error("channel", "chat.postMessage needs a channel");
                Target::Webhook(String::new())
            }
            (None, None, _) => {
                c.error("webhook_url", "set webhook_url, or token and channel");
                Target::Webhook(String::new())
            }
            (Some(_), _, _) => {
                c.error("webhook_url", "set webhook_url, or token and channel, not both");
                Target::Webhook(String::new())
            }
        }
    }

    fn deliver(target: Target, n: Notification) -> Result<DeliveryReport, DeliveryError> {
        let mut message = message(&n);
        match target {
            Target::Webhook(url) => {
                // Answers `ok` as text, or an error code with a 4xx (`invalid_payload`, `no_service`...).
                let response = http::post(&url).json(&message)?.send()?.check_with(WEBHOOK_STATUSES)?;
                Ok(response.report(None))
            }
            Target::Api { token, channel, api_url } => {
                message["channel"] = Value::String(channel);
                let url = format!("{api_url}/chat.postMessage");
                let response = http::post(&url).bearer(&token).json(&message)?.send()?.check()?;
                // chat.postMessage answers 200 with `{"ok": false, "error": ...}` on failure.
                let answer: Value = response.json()?;
                if answer["ok"].as_bool() == Some(true) {
                    return Ok(response.report(answer["ts"].as_str().map(str::to_string)));
                }
                let error = answer["error"].as_str().unwrap_or("unknown_error").to_string();
                Err(match error.as_str() {
                    "ratelimited" | "service_unavailable" | "internal_error" | "fatal_error" | "request_timeout" => {
                        DeliveryError::Retryable(belfry_plugin_sdk::RetryableError {
                            message: format!("Slack answered {error}"),
                            retry_after_ms: response.retry_after_ms(),
                        })
                    }
                    "invalid_auth" | "not_authed" | "account_inactive" | "token_revoked" | "token_expired" | "channel_not_found"
                    | "not_in_channel" | "is_archived" | "missing_scope" | "no_permission" => {
                        DeliveryError::Misconfigured(format!("Slack answered {error}; check the receiver's token and channel"))
                    }
                    _ => DeliveryError::Permanent(format!("Slack answered {error}")),
                })
            }
        }
    }
}

export_plugin!(Slack);

/// An incoming webhook's errors that only the operator can fix (api.slack.com/messaging/webhooks,
/// "Handling errors"): 404 `no_service` (the hook was removed or disabled) or
/// `channel_not_found`, 410 `channel_is_archived`. The conformance kit checks this table.
const WEBHOOK_STATUSES: &[(u16, Class)] = &[(404, Class::Misconfigured), (410, Class::Misconfigured)];

/// The message: `text` (what notifications show) and one attachment with the severity's colour
/// holding the blocks.
fn message(n: &Notification) -> Value {
    let title = belfry_plugin_sdk::title(n);
    let mut blocks = vec![json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&title, MAX_HEADER), "emoji": true}})];
    if let Some(body) = n.body.as_deref().filter(|b| !b.trim().is_empty()) {
        for chunk in chunks(&escape(body), MAX_SECTION) {
            blocks.push(section(&chunk));
        }
    }
    let fields: Vec<Value> = n
        .common_labels
        .iter()
        .take(MAX_FIELDS)
        .map(|(k, v)| json!({"type": "mrkdwn", "text": truncate(&format!("*{}*\n{}", escape(k), escape(v)), MAX_FIELD)}))
        .collect();
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    let mut buttons = Vec::new();
    if let Some(url) = belfry_plugin_sdk::ack_link(n) {
        // Opens Belfry's confirmation page; the ack happens there (no Slack app needed).
        buttons.push(json!({"type": "button", "text": {"type": "plain_text", "text": "Acknowledge"}, "url": url, "style": "primary"}));
    }
    for (label, name) in [("Runbook", "runbook_url"), ("Dashboard", "dashboard_url")] {
        if let Some(url) = pair(&n.common_annotations, name).filter(|u| u.starts_with("http")) {
            buttons.push(button(label, url));
        }
    }
    if let Some(url) = n.alerts.first().map(|a| a.generator_url.as_str()).filter(|u| u.starts_with("http")) {
        buttons.push(button("Source", url));
    }
    if n.external_url.starts_with("http") {
        buttons.push(button("Open in Belfry", &n.external_url));
    }
    // Room for the buttons and the "more" note within the block limit.
    let reserved = usize::from(!buttons.is_empty()) + 1;
    let total = blocks.len();
    if total + reserved > MAX_BLOCKS {
        blocks.truncate(MAX_BLOCKS - reserved);
        let dropped = total - blocks.len();
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("…{dropped} more blocks not shown (Slack allows {MAX_BLOCKS})")}]}));
    }
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
    json!({
        "text": truncate(&title, MAX_TEXT),
        "attachments": [{"color": belfry_plugin_sdk::urgency(n).colour(), "blocks": blocks}],
    })
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

fn button(label: &str, url: &str) -> Value {
    json!({"type": "button", "text": {"type": "plain_text", "text": truncate(label, MAX_BUTTON)}, "url": url})
}

/// Slack's mrkdwn escaping: `&`, `<` and `>` as entities.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `text` in pieces of at most `max` characters, split at line ends where possible.
fn chunks(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        for piece in line.chars().collect::<Vec<_>>().chunks(max) {
            let piece: String = piece.iter().collect();
            if current.chars().count() + piece.chars().count() > max {
                out.push(std::mem::take(&mut current));
            }
            current.push_str(&piece);
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}
