//! Outbound HTTP through the host, with JSON and the standard retry classification.
//!
//! ```ignore
//! let response = http::post(&url).bearer(&token).json(&payload)?.send()?.check()?;
//! ```
//!
//! `send` fails with [`HttpError`] when the host refused or could not complete the request;
//! `check` turns an unsuccessful status into the [`DeliveryError`] the host expects:
//! 429 and 5xx retryable (honouring `Retry-After`), 401/403 misconfigured, other 4xx permanent.
//! Both convert into [`DeliveryError`] with `?`.

use crate::__bindings::belfry::receiver::http as wit;
use crate::{DeliveryError, DeliveryReport, RetryableError};

/// Why a request produced no response (the host's verdict).
pub type HttpError = wit::Error;

/// A request being built.
#[must_use = "a request does nothing until `send` is called"]
pub struct Request {
    inner: wit::Request,
}

/// Start a `POST` request.
pub fn post(url: &str) -> Request {
    Request::new(wit::Method::Post, url)
}

/// Start a `GET` request.
pub fn get(url: &str) -> Request {
    Request::new(wit::Method::Get, url)
}

/// Start a `PUT` request.
pub fn put(url: &str) -> Request {
    Request::new(wit::Method::Put, url)
}

impl Request {
    fn new(method: wit::Method, url: &str) -> Self {
        Request { inner: wit::Request { method, url: url.to_string(), headers: Vec::new(), body: Vec::new() } }
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.inner.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Add every `(name, value)` header.
    pub fn headers(mut self, headers: &[(String, String)]) -> Self {
        self.inner.headers.extend(headers.iter().cloned());
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// `Authorization: Basic <base64(user:password)>`.
    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        self.header("authorization", &format!("Basic {}", base64(format!("{user}:{password}").as_bytes())))
    }

    /// A raw body.
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.inner.body = body;
        self
    }

    /// A JSON body with `content-type: application/json`.
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Self, DeliveryError> {
        let body = serde_json::to_vec(value).map_err(|e| DeliveryError::Permanent(format!("cannot encode the payload as JSON: {e}")))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Send the request through the host.
    pub fn send(self) -> Result<Response, HttpError> {
        wit::send(&self.inner).map(|inner| Response { inner })
    }
}

/// What a failure status means for the delivery: which [`DeliveryError`] it becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Try again later (the host backs off): throttling, the service's own trouble.
    Retryable,
    /// This notification will never be accepted: give up, fail over.
    Permanent,
    /// The receiver's configuration is wrong (credentials, a deleted hook): fail over and
    /// report the receiver unhealthy until the operator fixes it.
    Misconfigured,
}

impl Class {
    /// The standard classification of a non-2xx status: 429 and 5xx retryable, 401 and 403
    /// misconfigured, every other status permanent.
    pub fn standard(status: u16) -> Class {
        match status {
            429 | 500..=599 => Class::Retryable,
            401 | 403 => Class::Misconfigured,
            _ => Class::Permanent,
        }
    }
}

/// A response from the service.
pub struct Response {
    inner: wit::Response,
}

impl Response {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.inner.status
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body (cut to the host's size limit; see [`Response::body_truncated`]).
    pub fn body(&self) -> &[u8] {
        &self.inner.body
    }

    /// Whether the host cut the body at its size limit.
    pub fn body_truncated(&self) -> bool {
        self.inner.body_truncated
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.inner.body).into_owned()
    }

    /// The body decoded as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, DeliveryError> {
        serde_json::from_slice(&self.inner.body)
            .map_err(|e| DeliveryError::Permanent(format!("the service answered with unexpected JSON: {e}")))
    }

    /// `Retry-After` in milliseconds: delay-seconds, or an HTTP date relative to the clock.
    pub fn retry_after_ms(&self) -> Option<u64> {
        let value = self.header("retry-after")?.trim();
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(seconds.saturating_mul(1000));
        }
        let at = crate::time::parse_http_date(value)?;
        Some(at.saturating_sub(crate::time::now_ms()))
    }

    /// `Ok(self)` for 2xx; otherwise the error of the standard classification
    /// ([`Class::standard`]): 429 and 5xx retryable (with `Retry-After`), 401 and 403
    /// misconfigured, every other status permanent.
    pub fn check(self) -> Result<Response, DeliveryError> {
        self.check_with(&[])
    }

    /// [`Response::check`] with the plugin's own classification of some statuses, for a
    /// service whose documented errors say more than the standard table: a Discord or Slack
    /// webhook answers 404 when the hook was deleted, which only the operator can fix, so
    /// for them `&[(404, Class::Misconfigured)]`. Declare the same table in the plugin's
    /// `Channel` in the conformance kit, which checks it.
    pub fn check_with(self, statuses: &[(u16, Class)]) -> Result<Response, DeliveryError> {
        let status = self.status();
        if (200..300).contains(&status) {
            return Ok(self);
        }
        let class = statuses.iter().find(|(s, _)| *s == status).map_or(Class::standard(status), |(_, class)| *class);
        let snippet = self.error_snippet();
        let message = format!("the service answered HTTP {status}{snippet}");
        Err(match class {
            Class::Retryable => DeliveryError::Retryable(RetryableError { message, retry_after_ms: self.retry_after_ms() }),
            Class::Misconfigured if matches!(status, 401 | 403) => {
                DeliveryError::Misconfigured(format!("{message}; check the receiver's credentials"))
            }
            Class::Misconfigured => DeliveryError::Misconfigured(format!("{message}; check the receiver's configuration")),
            Class::Permanent => DeliveryError::Permanent(message),
        })
    }

    /// A short, single-line excerpt of the body for error messages.
    fn error_snippet(&self) -> String {
        const MAX: usize = 200;
        let text: String = self.text().chars().filter(|c| !c.is_control()).take(MAX).collect();
        if text.trim().is_empty() { String::new() } else { format!(": {}", text.trim()) }
    }

    /// A delivery report for this response, with the service's id for what was created.
    pub fn report(&self, remote_id: Option<String>) -> DeliveryReport {
        DeliveryReport { remote_id, status: Some(self.status()) }
    }
}

impl From<HttpError> for DeliveryError {
    fn from(e: HttpError) -> Self {
        match e {
            wit::Error::Denied(m) => DeliveryError::Misconfigured(format!("request refused by the host: {m}")),
            wit::Error::InvalidRequest(m) => DeliveryError::Misconfigured(format!("invalid request: {m}")),
            wit::Error::Timeout(ms) => DeliveryError::retryable(format!("no response within {ms} ms")),
            wit::Error::Transport(m) => DeliveryError::retryable(format!("transport error: {m}")),
            wit::Error::TooManyRequests(n) => {
                DeliveryError::Permanent(format!("the plugin exceeded the host's limit of {n} requests per delivery"))
            }
        }
    }
}

/// Standard base64 with padding (RFC 4648), for Basic auth.
pub fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        assert_eq!(base64(b"Aladdin:open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }
}
