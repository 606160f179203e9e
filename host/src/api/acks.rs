//! `/api/belfry/v1/acks` (a tenant's acks: set, list, withdraw) and `/api/belfry/v1/ack/{token}` (the acknowledge links in notifications).

use chrono::Utc;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::respond::{Body, error, json};
use crate::ack::{Ack, AckLinks, LinkError};
use crate::alert::format_time;
use crate::dispatch::{AckVia, Notifier};
use crate::tenant::Tenants;

/// `POST /api/belfry/v1/acks`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PostableAck {
    /// The group, as `GET /api/v2/alerts/groups` or a notification's `groupKey` names it.
    group_key: String,
    /// Who acknowledges (like a silence's `createdBy`).
    acked_by: String,
    /// Optional note.
    #[serde(default)]
    comment: String,
}

fn gettable(key: &str, ack: &Ack) -> Value {
    json!({"groupKey": key, "ackedBy": ack.by, "comment": ack.comment, "ackedAt": format_time(ack.at), "alerts": ack.covers.len()})
}

/// `POST /api/belfry/v1/acks`: acknowledge a group; durable and audited before the answer.
pub async fn post(notifier: &Notifier, body: &[u8]) -> Response<Body> {
    let postable: PostableAck = match crate::ingest::decode_json(body, "an ack: groupKey, ackedBy, comment") {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if postable.acked_by.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "ackedBy: say who acknowledges".into());
    }
    match notifier.ack(&postable.group_key, &postable.acked_by, &postable.comment, AckVia::Api, Utc::now()).await {
        Ok(Some(ack)) => json(StatusCode::OK, &gettable(&postable.group_key, &ack)),
        Ok(None) => no_group(&postable.group_key),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the ack could not be stored ({e}); retry")),
    }
}

fn no_group(key: &str) -> Response<Body> {
    error(StatusCode::NOT_FOUND, format!("groupKey: no group `{key}` (it may have resolved); see GET /api/v2/alerts/groups"))
}

/// `GET /api/belfry/v1/acks`: the tenant's acknowledged groups.
pub fn list(notifier: &Notifier) -> Response<Body> {
    let acks: Vec<Value> = notifier.acks().iter().map(|(key, ack)| gettable(key, ack)).collect();
    json(StatusCode::OK, &Value::Array(acks))
}

/// `DELETE /api/belfry/v1/acks?groupKey=...&by=...`: withdraw an ack; the group repeats again.
pub async fn delete(notifier: &Notifier, query: Option<&str>) -> Response<Body> {
    let params: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect();
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let Some(key) = param("groupKey") else {
        return error(StatusCode::BAD_REQUEST, "groupKey: name the group whose ack to withdraw (?groupKey=...)".into());
    };
    let by = param("by").unwrap_or_else(|| "api".into());
    match notifier.unack(&key, &by, Utc::now()).await {
        Ok(true) => json(StatusCode::OK, &json!({"groupKey": key, "status": "unacknowledged"})),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("groupKey: group `{key}` is not acknowledged")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the change could not be stored ({e}); retry")),
    }
}

/// What someone did with an acknowledge link.
pub enum LinkVisit<'a> {
    /// Opened it (GET): show what it acknowledges and ask who acknowledges. The name they gave
    /// last time (a cookie) fills the field in.
    Open { cookie: Option<&'a str> },
    /// Sent the page's form (POST): `by` and `comment`, form-encoded.
    Confirm { form: &'a [u8] },
}

/// The cookie that remembers, for this browser, the name given on an acknowledge page.
const NAME_COOKIE: &str = "belfry_ack_by";
/// The longest name and comment an acknowledge page takes.
const MAX_NAME_CHARS: usize = 100;
const MAX_COMMENT_CHARS: usize = 1000;

/// `GET|POST /api/belfry/v1/ack/{token}`: an acknowledge link. GET shows what it acknowledges
/// and a form asking who acknowledges; only the form's POST acknowledges (link previews and
/// mail scanners GET). The name is recorded as `ackedBy` and remembered in a cookie.
pub async fn link(tenants: &Tenants, links: Option<&AckLinks>, token: &str, visit: LinkVisit<'_>) -> Response<Body> {
    let now = Utc::now();
    let Some(links) = links else {
        return page(StatusCode::SERVICE_UNAVAILABLE, "Not ready", "Belfry is starting; try again in a moment.", None);
    };
    let (tenant_name, key) = match links.verify(token, now) {
        Ok(claims) => claims,
        Err(e @ LinkError::Invalid) => return page(StatusCode::NOT_FOUND, "Invalid link", &e.to_string(), None),
        Err(e @ LinkError::Expired(_)) => return page(StatusCode::GONE, "Link expired", &e.to_string(), None),
    };
    let Some(tenant) = tenants.get(&tenant_name) else {
        return page(StatusCode::NOT_FOUND, "Nothing to acknowledge", "This link's tenant no longer exists.", None);
    };
    let notifier = &tenant.notifier;
    let form = match visit {
        LinkVisit::Open { cookie } => {
            if let Some(ack) = notifier.ack_of(&key) {
                let text = format!("{key}\n\nwas acknowledged by {} at {}.", ack.by, format_time(ack.at));
                return page(StatusCode::OK, "Already acknowledged", &text, None);
            }
            let remembered = cookie.and_then(remembered_name).unwrap_or_default();
            return page(StatusCode::OK, "Acknowledge this alert group?", &key, Some(ack_form(&remembered, None)));
        }
        LinkVisit::Confirm { form } => form,
    };
    let field = |name: &str| form_urlencoded::parse(form).find(|(k, _)| k == name).map(|(_, v)| v.trim().to_string()).unwrap_or_default();
    let (by, comment) = (field("by"), field("comment"));
    let problem = if by.is_empty() {
        Some("Say who you are: your name is recorded as who acknowledged.")
    } else if !is_name(&by) {
        Some("A name is at most 100 characters on one line.")
    } else if comment.chars().count() > MAX_COMMENT_CHARS {
        Some("A comment is at most 1000 characters.")
    } else {
        None
    };
    if let Some(problem) = problem {
        return page(StatusCode::BAD_REQUEST, "Acknowledge this alert group?", &key, Some(ack_form(&by, Some(problem))));
    }
    let comment = if comment.is_empty() { "acknowledged from a notification link".to_string() } else { comment };
    match notifier.ack(&key, &by, &comment, AckVia::Link, now).await {
        Ok(Some(_)) => {
            let mut response = page(
                StatusCode::OK,
                "Acknowledged",
                &format!("{key}\n\nacknowledged by {by}. Repeats stop until a new alert fires in this group or it resolves."),
                None,
            );
            let value: String = form_urlencoded::byte_serialize(by.as_bytes()).collect();
            // Only the acknowledge pages read it; a year, as a browser's own form memory would.
            let cookie = format!("{NAME_COOKIE}={value}; Path={}; Max-Age=31536000; HttpOnly; SameSite=Strict", crate::ack::LINK_PATH);
            if let Ok(cookie) = hyper::header::HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(hyper::header::SET_COOKIE, cookie);
            }
            response
        }
        Ok(None) => page(StatusCode::NOT_FOUND, "Nothing to acknowledge", &format!("{key}\n\nhas resolved or no longer exists."), None),
        Err(e) => {
            page(StatusCode::INTERNAL_SERVER_ERROR, "Not stored", &format!("The acknowledgement could not be stored ({e}); retry."), None)
        }
    }
}

/// The name a `Cookie` header remembers from an earlier acknowledgement in this browser.
fn remembered_name(cookie_header: &str) -> Option<String> {
    let value = cookie_header.split(';').filter_map(|c| c.trim().split_once('=')).find(|(name, _)| *name == NAME_COOKIE)?.1;
    let name = form_urlencoded::parse(format!("n={value}").as_bytes()).next()?.1.into_owned();
    (!name.is_empty() && is_name(&name)).then_some(name)
}

/// Whether `name` is one an acknowledge page takes: at most [`MAX_NAME_CHARS`], one line.
fn is_name(name: &str) -> bool {
    name.chars().count() <= MAX_NAME_CHARS && !name.chars().any(char::is_control)
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The acknowledge form: who (required, filled in with `name`), an optional comment, and the
/// problem with the last attempt, if any. POSTs back to the same URL.
fn ack_form(name: &str, problem: Option<&str>) -> String {
    let problem = problem.map_or(String::new(), |p| format!("<p role=\"alert\" style=\"color:#b00\">{}</p>", escape_html(p)));
    format!(
        "{problem}<form method=\"post\"><p><label>Your name <input name=\"by\" value=\"{}\" required maxlength=\"{MAX_NAME_CHARS}\" autocomplete=\"name\"></label></p>\
         <p><label>Comment <input name=\"comment\" maxlength=\"{MAX_COMMENT_CHARS}\" size=\"40\"></label></p>\
         <button type=\"submit\">Acknowledge</button></form>",
        escape_html(name)
    )
}

/// A small self-contained HTML page; `form` (already HTML) goes under the text.
fn page(status: StatusCode, title: &str, text: &str, form: Option<String>) -> Response<Body> {
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\"><title>{t} · Belfry</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{t}</h1><pre style=\"white-space:pre-wrap\">{x}</pre>{form}</body></html>",
        t = escape_html(title),
        x = escape_html(text),
        form = form.unwrap_or_default(),
    );
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/html; charset=utf-8")
        // The page holds a capability: keep it out of caches and referrers.
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .header("referrer-policy", "no-referrer")
        .body(http_body_util::Full::new(bytes::Bytes::from(html)))
        .expect("static response parts are valid")
}
