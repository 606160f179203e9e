//! Mail through the host's SMTP client, for receivers granted `[receivers.smtp]`.
//!
//! ```ignore
//! mail::Message::new(&from, &to, &subject, text).html(html).thread(&n.group_key).send()?;
//! ```
//!
//! The host owns the server, TLS and credentials; the plugin only composes. `send` fails with
//! [`MailError`], which converts into the [`DeliveryError`] the host expects with `?`: a 4xx
//! reply or a connection failure retryable, a 5xx reply permanent, refused credentials or a
//! missing grant misconfigured.

use crate::__bindings::belfry::receiver::smtp as wit;
use crate::DeliveryError;

/// Why the host did not get the message accepted.
pub type MailError = wit::Error;

/// A message being composed.
#[must_use = "a message does nothing until `send` is called"]
pub struct Message {
    inner: wit::Message,
}

impl Message {
    /// A plain-text message from `from` to `to`.
    pub fn new(from: &str, to: &[String], subject: &str, text: String) -> Self {
        Message {
            inner: wit::Message {
                from: from.to_string(),
                to: to.to_vec(),
                cc: Vec::new(),
                subject: subject.to_string(),
                text_body: text,
                html_body: None,
                thread_key: None,
            },
        }
    }

    /// Copy these recipients.
    pub fn cc(mut self, cc: &[String]) -> Self {
        self.inner.cc = cc.to_vec();
        self
    }

    /// Add an HTML part (the message becomes `multipart/alternative`).
    pub fn html(mut self, html: String) -> Self {
        self.inner.html_body = Some(html);
        self
    }

    /// Thread every message with this key together in mail clients (use the group key).
    pub fn thread(mut self, key: &str) -> Self {
        self.inner.thread_key = Some(key.to_string());
        self
    }

    /// Send it through the host and wait for the server's answer.
    pub fn send(self) -> Result<(), MailError> {
        wit::send(&self.inner)
    }
}

impl From<MailError> for DeliveryError {
    fn from(e: MailError) -> Self {
        match e {
            wit::Error::Denied(m) => DeliveryError::Misconfigured(format!("mail refused by the host: {m}")),
            wit::Error::InvalidMessage(m) => DeliveryError::Misconfigured(format!("invalid message: {m}")),
            wit::Error::Auth(m) => DeliveryError::Misconfigured(format!("SMTP authentication failed: {m}")),
            wit::Error::Rejected(m) => DeliveryError::Permanent(format!("the SMTP server refused the message: {m}")),
            wit::Error::Temporary(m) => DeliveryError::retryable(format!("SMTP: {m}")),
            wit::Error::TooManyRequests(n) => {
                DeliveryError::Permanent(format!("the plugin exceeded the host's limit of {n} outbound calls per delivery"))
            }
        }
    }
}

/// `text` with `&`, `<`, `>`, `"` and `'` escaped for HTML.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `text` looks like one address, `local@domain` or `Name <local@domain>`: what
/// `validate-config` can check before the host parses it for real.
pub fn is_address(text: &str) -> bool {
    let addr = match (text.rfind('<'), text.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        _ => text,
    };
    let Some((local, domain)) = addr.rsplit_once('@') else { return false };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !addr.chars().any(|c| c.is_whitespace() || c == ',' || c == '<' || c == '>')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(is_address("oncall@example.com"));
        assert!(is_address("On Call <oncall@example.com>"));
        assert!(!is_address("oncall"));
        assert!(!is_address("a@b.com, c@d.com"));
        assert!(!is_address("@example.com"));
        assert!(!is_address("x@"));
    }

    #[test]
    fn html_escaping() {
        assert_eq!(escape_html("<b>\"x\" & 'y'</b>"), "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;");
    }
}
