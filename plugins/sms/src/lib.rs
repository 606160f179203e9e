//! The SMS channel: Twilio's Messages API, one message per recipient, E.164 numbers, within Twilio's 1,600 characters.

use belfry_plugin_sdk::{Config, DeliveryError, DeliveryReport, Notification, Plugin, export_plugin, http, truncate};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

struct Sms;

struct Target {
    account_sid: String,
    auth_token: String,
    from: String,
    to: Vec<String>,
    api_url: String,
}

/// Twilio's limit on a message body (twilio.com/docs/sms/api/message-resource).
const MAX_BODY: usize = 1600;
/// The host allows 8 requests per delivery; one per recipient.
const MAX_RECIPIENTS: usize = 8;

/// `+` then 2 to 15 digits, the first not 0 (ITU-T E.164).
fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|d| (2..=15).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit()) && !d.starts_with('0'))
}

impl Plugin for Sms {
    type Config = Target;
    const NAME: &'static str = "sms";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "SMS through Twilio's Messages API";

    fn config(c: &mut Config) -> Target {
        let account_sid = c.text("account_sid", "Twilio account SID (AC...)");
        if !account_sid.is_empty() && !(account_sid.starts_with("AC") && account_sid.len() == 34) {
            c.error("account_sid", "a Twilio account SID is `AC` and 32 hex digits");
        }
        let auth_token = c.required_secret("auth_token", "Twilio auth token");
        let from = c.text("from", "Sending number in E.164 (+15551234567), or a Messaging Service SID (MG...)");
        if !from.is_empty() && !is_e164(&from) && !from.starts_with("MG") {
            c.error("from", format!("`{from}` is not an E.164 number (+ and up to 15 digits) or a Messaging Service SID"));
        }
        let to = c.text_list("to", "Recipients in E.164 (+15551234567)");
        if to.is_empty() {
            c.error("to", "at least one recipient");
        } else if to.len() > MAX_RECIPIENTS {
            c.error("to", format!("at most {MAX_RECIPIENTS} recipients per receiver (one request each); split them over receivers"));
        }
        for number in &to {
            if !is_e164(number) {
                c.error("to", format!("`{number}` is not an E.164 number (+ and up to 15 digits, e.g. +33612345678)"));
            }
        }
        let api_url = c.url_or("api_url", "https://api.twilio.com", "Twilio's API base (default https://api.twilio.com)");
        let api_url = api_url.trim_end_matches('/').to_string();
        Target { account_sid, auth_token, from, to, api_url }
    }

    fn deliver(target: Target, n: Notification) -> Result<DeliveryReport, DeliveryError> {
        let url = format!("{}/2010-04-01/Accounts/{}/Messages.json", target.api_url, target.account_sid);
        let body = text(&n);
        let sender = if target.from.starts_with("MG") { "MessagingServiceSid" } else { "From" };
        let mut sids = Vec::new();
        for to in &target.to {
            let form = format!(
                "To={}&{sender}={}&Body={}",
                utf8_percent_encode(to, NON_ALPHANUMERIC),
                utf8_percent_encode(&target.from, NON_ALPHANUMERIC),
                utf8_percent_encode(&body, NON_ALPHANUMERIC)
            );
            let response = http::post(&url)
                .basic_auth(&target.account_sid, &target.auth_token)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form.into_bytes())
                .send()?
                .check()?;
            if let Some(sid) = response.json::<Value>().ok().and_then(|v| v["sid"].as_str().map(str::to_string)) {
                sids.push(sid);
            }
            // A retry after a partial failure resends to every recipient: at least once.
        }
        Ok(DeliveryReport { remote_id: (!sids.is_empty()).then(|| sids.join(",")), status: Some(201) })
    }
}

export_plugin!(Sms);

/// The title, then the body, as plain text within 1,600 characters.
fn text(n: &Notification) -> String {
    let title = belfry_plugin_sdk::title(n);
    match n.body.as_deref().filter(|b| !b.is_empty()) {
        Some(body) => truncate(&format!("{title}\n{body}"), MAX_BODY),
        None => truncate(&title, MAX_BODY),
    }
}
