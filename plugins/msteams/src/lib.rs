//! The Microsoft Teams channel: an Adaptive Card posted to a Workflows (Power Automate) webhook, within Teams' 28 KB message limit.

use belfry_plugin_sdk::{AlertStatus, Config, DeliveryError, DeliveryReport, Notification, Plugin, export_plugin, http, pair, truncate};
use serde_json::{Value, json};

struct Teams;

/// Teams refuses messages over 28 KB (learn.microsoft.com, "Send messages using Workflows").
const MAX_BYTES: usize = 28 * 1024;
/// Facts shown (the common labels).
const MAX_FACTS: usize = 20;

impl Plugin for Teams {
    type Config = String;
    const NAME: &'static str = "msteams";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Microsoft Teams Adaptive Cards through a Workflows webhook";

    fn config(c: &mut Config) -> String {
        c.required_secret_url(
            "webhook_url",
            "The Workflows webhook URL: create one for the channel (\"Post to a channel when a webhook request is received\") and paste it",
        )
    }

    fn deliver(url: String, n: Notification) -> Result<DeliveryReport, DeliveryError> {
        // Workflows answers 202 Accepted; errors as usual HTTP statuses.
        let response = http::post(&url).json(&message(&n))?.send()?.check()?;
        Ok(response.report(None))
    }
}

export_plugin!(Teams);

fn message(n: &Notification) -> Value {
    let firing = n.status == AlertStatus::Firing;
    let title = belfry_plugin_sdk::title(n);
    let facts: Vec<Value> =
        n.common_labels.iter().take(MAX_FACTS).map(|(k, v)| json!({"title": truncate(k, 100), "value": truncate(v, 500)})).collect();
    let mut actions = Vec::new();
    for (label, name) in [("Runbook", "runbook_url"), ("Dashboard", "dashboard_url")] {
        if let Some(url) = pair(&n.common_annotations, name).filter(|u| u.starts_with("http")) {
            actions.push(json!({"type": "Action.OpenUrl", "title": label, "url": url}));
        }
    }
    if n.external_url.starts_with("http") {
        actions.push(json!({"type": "Action.OpenUrl", "title": "Open in Belfry", "url": n.external_url}));
    }
    if let Some(url) = belfry_plugin_sdk::ack_link(n) {
        actions.insert(0, json!({"type": "Action.OpenUrl", "title": "Acknowledge", "url": url}));
    }
    let card = |body_text: &str| {
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "msteams": {"width": "Full"},
                    "body": [
                        {"type": "TextBlock", "text": truncate(&title, 500), "weight": "Bolder", "size": "Medium", "wrap": true,
                         "color": if firing { "Attention" } else { "Good" }},
                        {"type": "TextBlock", "text": body_text, "wrap": true},
                        {"type": "FactSet", "facts": facts},
                    ],
                    "actions": actions,
                },
            }],
        })
    };
    // Fit the 28 KB: the card without its body, then as much of the body as the rest allows,
    // counted as it will be encoded (one pass; a last check cuts further if need be).
    let body = n.body.clone().unwrap_or_default();
    let base = serde_json::to_vec(&card("")).map_or(0, |b| b.len());
    let mut room = MAX_BYTES.saturating_sub(base + 8);
    let mut keep = 0;
    for c in body.chars() {
        let encoded = match c {
            '"' | '\\' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if encoded > room {
            break;
        }
        room -= encoded;
        keep += 1;
    }
    let mut budget = if keep < body.chars().count() { keep.saturating_sub(1).max(1) } else { keep };
    loop {
        let message = card(&truncate(&body, budget.max(1)));
        if budget <= 1 || serde_json::to_vec(&message).map_or(0, |b| b.len()) <= MAX_BYTES {
            return message;
        }
        budget -= budget / 8 + 1;
    }
}
