//! The Telegram channel: Bot API `sendMessage` in HTML parse mode, escaped and within Telegram's 4,096 characters.

use belfry_plugin_sdk::{Config, DeliveryError, DeliveryReport, Notification, Plugin, RetryableError, export_plugin, http, pair};
use serde_json::{Value, json};

struct Telegram;

struct Target {
    token: String,
    chat_id: String,
    api_url: String,
}

/// Telegram's limit on a message's text (core.telegram.org/bots/api#sendmessage).
const MAX_TEXT: usize = 4096;

impl Plugin for Telegram {
    type Config = Target;
    const NAME: &'static str = "telegram";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Telegram messages through a bot (Bot API sendMessage)";

    fn config(c: &mut Config) -> Target {
        let token = c.required_secret("token", "The bot's token from @BotFather (123456789:AA...)");
        let valid =
            token.split_once(':').is_some_and(|(id, rest)| !id.is_empty() && id.chars().all(|ch| ch.is_ascii_digit()) && rest.len() >= 30);
        if !token.is_empty() && !valid {
            c.error("token", "a bot token is `<bot id>:<secret>`, as @BotFather gives it");
        }
        let chat_id = c.text("chat_id", "The chat: a numeric id (-100... for channels and groups) or @channelname");
        if !chat_id.is_empty() && !(chat_id.starts_with('@') || chat_id.trim_start_matches('-').chars().all(|ch| ch.is_ascii_digit())) {
            c.error("chat_id", "a numeric chat id or an @channelname");
        }
        let api_url = c.url_or("api_url", "https://api.telegram.org", "The Bot API base URL (default https://api.telegram.org)");
        let api_url = api_url.trim_end_matches('/').to_string();
        Target { token, chat_id, api_url }
    }

    fn deliver(target: Target, n: Notification) -> Result<DeliveryReport, DeliveryError> {
        let url = format!("{}/bot{}/sendMessage", target.api_url, target.token);
        let message = json!({"chat_id": target.chat_id, "text": text(&n), "parse_mode": "HTML", "disable_web_page_preview": true});
        let response = http::post(&url).json(&message)?.send()?;
        let answer: Value = response.json().unwrap_or(Value::Null);
        if response.status() == 429 {
            // `{"ok": false, "parameters": {"retry_after": 5}}` (seconds), or the header.
            let seconds = answer["parameters"]["retry_after"].as_u64();
            return Err(DeliveryError::Retryable(RetryableError {
                message: format!("Telegram answered 429: {}", answer["description"].as_str().unwrap_or("too many requests")),
                retry_after_ms: seconds.map(|s| s * 1000).or_else(|| response.retry_after_ms()),
            }));
        }
        if response.status() == 400 && answer["description"].as_str().is_some_and(|d| d.contains("chat not found")) {
            return Err(DeliveryError::Misconfigured(
                "Telegram answered: chat not found; check chat_id and that the bot is in the chat".into(),
            ));
        }
        let response = response.check()?;
        let id = answer["result"]["message_id"].as_i64().map(|id| id.to_string());
        Ok(response.report(id))
    }
}

export_plugin!(Telegram);

/// `<b>title</b>` and the body, HTML-escaped, within 4,096 characters.
fn text(n: &Notification) -> String {
    let title = belfry_plugin_sdk::title(n);
    let body = n.body.clone().filter(|b| !b.is_empty()).unwrap_or_else(|| {
        n.alerts.iter().map(|a| pair(&a.annotations, "summary").unwrap_or(&a.fingerprint).to_string()).collect::<Vec<_>>().join("\n")
    });
    let mut out = String::from("<b>");
    out.push_str(&escape_within(&title, 500));
    out.push_str("</b>\n");
    let budget = MAX_TEXT - out.chars().count();
    out.push_str(&escape_within(&body, budget));
    out
}

/// `text` HTML-escaped, cut (before escaping, so no entity is split) to at most `budget`
/// characters once escaped, ending in `…` when cut.
fn escape_within(text: &str, budget: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let piece = match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            c => c.to_string(),
        };
        let len = piece.chars().count();
        // Keep one character for the ellipsis unless this is the last one.
        let reserve = usize::from(chars.peek().is_some());
        if used + len + reserve > budget {
            out.push('…');
            return out;
        }
        used += len;
        out.push_str(&piece);
    }
    out
}
