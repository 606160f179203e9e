//! The email channel: a plain-text and an HTML part per notification, threaded by group, sent through the host's SMTP capability.

use belfry_plugin_sdk::mail::{self, escape_html, is_address};
use belfry_plugin_sdk::{
    Alert, AlertStatus, Config, DeliveryError, DeliveryReport, Notification, Plugin, ack_link, export_plugin, pair, title, truncate,
};

struct Email;

struct Target {
    from: String,
    to: Vec<String>,
    cc: Vec<String>,
    html: bool,
}

/// Alerts listed in the HTML table; the rest are counted. A mail client shows no more usefully.
const MAX_LISTED: usize = 100;
/// Characters of one label or annotation value in the table.
const MAX_VALUE: usize = 2000;
/// Characters of the plain-text part (the host refuses messages over 10 MB).
const MAX_TEXT: usize = 1 << 20;
/// Characters of the subject line.
const MAX_SUBJECT: usize = 250;

impl Plugin for Email {
    type Config = Target;
    const NAME: &'static str = "email";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Email (plain text and HTML) through the host's SMTP server";

    fn config(c: &mut Config) -> Target {
        let from = c.text("from", "Sender, `alerts@example.com` or `Belfry <alerts@example.com>`");
        if !from.is_empty() && !is_address(&from) {
            c.error("from", format!("`{from}` is not an email address"));
        }
        let to = c.text_list("to", "Recipients' addresses");
        if to.is_empty() {
            c.error("to", "at least one recipient");
        }
        let cc = c.text_list("cc", "Copied recipients' addresses (default: none)");
        for (field, list) in [("to", &to), ("cc", &cc)] {
            for address in list.iter().filter(|a| !is_address(a)) {
                c.error(field, format!("`{address}` is not an email address (one address per list item)"));
            }
        }
        if to.len() + cc.len() > 50 {
            c.error("to", "at most 50 recipients (to and cc) per receiver; use a mailing list");
        }
        let html = c.boolean_or("html", true, "Send an HTML part besides the plain text (default true)");
        Target { from, to, cc, html }
    }

    fn deliver(target: Target, n: Notification) -> Result<DeliveryReport, DeliveryError> {
        let subject = truncate(&title(&n).replace(['\r', '\n'], " "), MAX_SUBJECT);
        let mut message = mail::Message::new(&target.from, &target.to, &subject, text(&n)).cc(&target.cc).thread(&n.group_key);
        if target.html {
            message = message.html(html(&n, &subject));
        }
        message.send()?;
        Ok(DeliveryReport { remote_id: None, status: Some(250) })
    }
}

export_plugin!(Email);

/// The rendered body (the tenant's template), or a listing of the alerts.
fn text(n: &Notification) -> String {
    let ack = ack_link(n).map_or(String::new(), |url| format!("\nAcknowledge: {url}\n"));
    if let Some(body) = n.body.as_deref().filter(|b| !b.trim().is_empty()) {
        return truncate(&format!("{body}{ack}"), MAX_TEXT);
    }
    let mut out = String::new();
    for a in &n.alerts {
        let name = pair(&a.labels, "alertname").unwrap_or("alert");
        let summary = pair(&a.annotations, "summary").unwrap_or("");
        out.push_str(&format!("- {} {name}: {summary} (since {})\n", status(a.status), a.starts_at));
    }
    if n.truncated_alerts > 0 {
        out.push_str(&format!("…and {} more\n", n.truncated_alerts));
    }
    out.push_str(&ack);
    truncate(&out, MAX_TEXT)
}

/// A self-contained HTML page: the title on a band in the severity's colour, the body, links,
/// and a table of the alerts. Every value is escaped; inline styles only (mail clients drop
/// style sheets).
fn html(n: &Notification, subject: &str) -> String {
    let mut out = String::from("<!DOCTYPE html>\n<html><body style=\"font-family:sans-serif;color:#222\">\n");
    out.push_str(&format!(
        "<h2 style=\"background:{};color:#fff;padding:8px 12px;margin:0\">{}</h2>\n",
        belfry_plugin_sdk::urgency(n).colour(),
        escape_html(subject)
    ));
    if let Some(body) = n.body.as_deref().filter(|b| !b.trim().is_empty()) {
        let body = truncate(body, MAX_TEXT);
        out.push_str(&format!("<p style=\"white-space:pre-wrap\">{}</p>\n", escape_html(&body)));
    }
    let mut links = Vec::new();
    if let Some(url) = ack_link(n) {
        links.push(("Acknowledge", url));
    }
    for (label, name) in [("Runbook", "runbook_url"), ("Dashboard", "dashboard_url")] {
        if let Some(url) = pair(&n.common_annotations, name) {
            links.push((label, url));
        }
    }
    if !n.external_url.is_empty() {
        links.push(("Open in Belfry", n.external_url.as_str()));
    }
    let links: Vec<String> = links
        .iter()
        .filter(|(_, url)| is_web_link(url))
        .map(|(label, url)| format!("<a href=\"{}\">{label}</a>", escape_html(url)))
        .collect();
    if !links.is_empty() {
        out.push_str(&format!("<p>{}</p>\n", links.join(" · ")));
    }
    out.push_str("<table style=\"border-collapse:collapse\" cellpadding=\"6\">\n");
    out.push_str("<tr style=\"background:#eee\"><th align=\"left\">State</th><th align=\"left\">Alert</th><th align=\"left\">Labels</th><th align=\"left\">Since</th></tr>\n");
    for a in n.alerts.iter().take(MAX_LISTED) {
        out.push_str(&row(a));
    }
    let unlisted = n.alerts.len().saturating_sub(MAX_LISTED) + n.truncated_alerts as usize;
    if unlisted > 0 {
        out.push_str(&format!("<tr><td colspan=\"4\">…and {unlisted} more alerts</td></tr>\n"));
    }
    out.push_str("</table>\n</body></html>\n");
    out
}

fn row(a: &Alert) -> String {
    let value = |v: &str| escape_html(&truncate(v, MAX_VALUE));
    let name = pair(&a.labels, "alertname").unwrap_or("alert");
    let mut alert = format!("<b>{}</b>", value(name));
    if let Some(summary) = pair(&a.annotations, "summary") {
        alert.push_str(&format!("<br>{}", value(summary)));
    }
    if let Some(description) = pair(&a.annotations, "description") {
        alert.push_str(&format!("<br><small>{}</small>", value(description)));
    }
    if is_web_link(&a.generator_url) {
        alert.push_str(&format!(" <a href=\"{}\">source</a>", escape_html(&a.generator_url)));
    }
    let labels: Vec<String> =
        a.labels.iter().filter(|(k, _)| k != "alertname").map(|(k, v)| format!("{}={}", value(k), value(v))).collect();
    format!(
        "<tr style=\"border-top:1px solid #ddd\"><td>{}</td><td>{alert}</td><td><code>{}</code></td><td>{}</td></tr>\n",
        status(a.status),
        labels.join("<br>"),
        escape_html(&a.starts_at)
    )
}

fn status(s: AlertStatus) -> &'static str {
    match s {
        AlertStatus::Firing => "FIRING",
        AlertStatus::Resolved => "RESOLVED",
    }
}

/// Only http(s) links become anchors: a `javascript:` URL in an annotation stays text.
fn is_web_link(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}
