//! Outbound HTTP for plugins: allow-listed hosts only, internal address ranges refused, bounded in time and size.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;

use super::bindings::belfry::receiver::http::{Error, Method, Request, Response};

/// One entry of a receiver's `allowed_hosts`: a host name, `*.suffix`, or an IP, with an optional port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl HostPattern {
    /// Parse `example.com`, `*.example.com`, `127.0.0.1:8080`, `[::1]:80`.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let bad =
            |why: &str| format!("`{s}` is not a host pattern: {why} (write e.g. `hooks.slack.com`, `*.example.com` or `127.0.0.1:8080`)");
        if s.contains("://") || s.contains('/') {
            return Err(bad("give a host, not a URL"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h, after.strip_prefix(':'))
        } else if s.matches(':').count() == 1 {
            let (h, p) = s.split_once(':').expect("one colon");
            (h, Some(p))
        } else {
            (s, None)
        };
        let port = match port {
            Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("bad port"))?),
            None => None,
        };
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (host, false),
        };
        if host.is_empty() || host.contains('*') || host.chars().any(|c| c.is_whitespace()) {
            return Err(bad("empty host, or a wildcard not of the form `*.suffix`"));
        }
        Ok(HostPattern { host: host.to_ascii_lowercase(), wildcard, port })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        let host_ok = if self.wildcard {
            host.strip_suffix(&self.host).is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1)
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// Where a URL points: its host (lower case, without brackets) and port.
pub struct Target {
    /// The parsed URL.
    pub uri: http::Uri,
    /// Its host.
    pub host: String,
    /// Its port, or the scheme's.
    pub port: u16,
}

impl Target {
    /// Parse an `http://` or `https://` URL; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad URL `{url}`: {e}"))?;
        let scheme_port = match uri.scheme_str() {
            Some("http") => 80,
            Some("https") => 443,
            _ => return Err(format!("URL `{url}` must start with http:// or https://")),
        };
        let host = uri.host().ok_or_else(|| format!("URL `{url}` has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(scheme_port);
        Ok(Target { uri, host, port })
    }
}

/// Whether `allowed_hosts` lets a plugin reach `host:port`.
pub fn allows(allowed_hosts: &[HostPattern], host: &str, port: u16) -> bool {
    allowed_hosts.iter().any(|p| p.matches(host, port))
}

/// Why `host:port` may not be reached, and what to do.
pub fn not_allowed(host: &str, port: u16, receiver: &str) -> String {
    format!("host `{host}:{port}` is not in allowed_hosts of receiver `{receiver}`; add it there if this plugin should reach it")
}

/// Addresses a plugin may not reach unless its receiver sets `allow_private_addresses`:
/// loopback, private, link-local, shared (CGNAT), unspecified, multicast and broadcast.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// What one receiver's plugin may do over HTTP.
#[derive(Clone, Debug)]
pub struct HttpGrant {
    /// Receiver name, for messages.
    pub receiver: String,
    /// Hosts it may reach.
    pub allowed_hosts: Vec<HostPattern>,
    /// Whether internal address ranges are reachable.
    pub allow_private: bool,
    /// Timeout per request.
    pub timeout: Duration,
    /// Response bodies are cut here.
    pub max_response_bytes: u64,
    /// Preview mode (`belfry template render`): requests that pass the checks are recorded
    /// here and answered `200 {"ok":true}` instead of being sent.
    pub capture: Option<Capture>,
}

/// Request headers that carry a credential whatever its encoding (`Basic` is base64 of
/// `user:password`; a cookie or API key is the secret itself).
const CREDENTIAL_HEADERS: [&str; 6] = ["authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token", "api-key"];

/// How a preview shows header `name`'s `value`: a credential header as its scheme and `***`
/// (`Basic ***`), any other with `mask` (the receiver's secrets) applied.
pub fn shown_header(name: &str, value: &str, mask: &dyn Fn(&str) -> String) -> String {
    if !CREDENTIAL_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        return mask(value);
    }
    match value.split_once(' ') {
        Some((scheme, _)) if scheme.chars().all(|c| c.is_ascii_alphabetic()) => format!("{scheme} ***"),
        _ => "***".to_string(),
    }
}

/// What a preview (`belfry template render`) recorded instead of sending.
pub type Capture = std::sync::Arc<std::sync::Mutex<Captured>>;

/// The requests and mails of a preview.
#[derive(Debug, Default)]
pub struct Captured {
    /// HTTP requests that passed the checks.
    pub requests: Vec<Request>,
    /// Mails composed for the SMTP capability.
    pub mails: Vec<CapturedMail>,
}

/// One mail as it would have been sent.
#[derive(Debug)]
pub struct CapturedMail {
    /// The server it would have gone to.
    pub smarthost: String,
    /// Envelope sender.
    pub from: String,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// The message, headers and MIME body.
    pub message: String,
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

/// One receiver's HTTP client: its own connection pool, its own address policy.
#[derive(Clone)]
pub struct Outbound {
    grant: Arc<HttpGrant>,
    client: Client<Connector, Full<Bytes>>,
}

const USER_AGENT: &str = concat!("Belfry/", env!("CARGO_PKG_VERSION"));

impl Outbound {
    /// A client that enforces `grant`.
    pub fn new(grant: HttpGrant) -> Outbound {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver { allow_private: grant.allow_private });
        http.enforce_http(false);
        http.set_connect_timeout(Some(grant.timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Outbound { grant: Arc::new(grant), client }
    }

    /// The grant this client enforces.
    pub fn grant(&self) -> &HttpGrant {
        &self.grant
    }

    /// Send a plugin's request, or say why not.
    pub async fn send(&self, request: Request) -> Result<Response, Error> {
        let Target { uri, host, port } = Target::parse(&request.url).map_err(Error::InvalidRequest)?;
        let grant = &self.grant;
        if !allows(&grant.allowed_hosts, &host, port) {
            return Err(Error::Denied(not_allowed(&host, port, &grant.receiver)));
        }
        if let Ok(ip) = host.parse::<IpAddr>()
            && is_internal(ip)
            && !grant.allow_private
        {
            return Err(Error::Denied(format!(
                "address {ip} is internal; set allow_private_addresses = true on receiver `{}` to allow it",
                grant.receiver
            )));
        }
        if let Some(capture) = &grant.capture {
            capture.lock().expect("capture lock").requests.push(request);
            return Ok(Response { status: 200, headers: Vec::new(), body: br#"{"ok":true}"#.to_vec(), body_truncated: false });
        }
        let mut builder = http::Request::builder().method(method(request.method)).uri(uri);
        for (name, value) in &request.headers {
            let lower = name.to_ascii_lowercase();
            if matches!(lower.as_str(), "host" | "content-length" | "transfer-encoding" | "connection" | "user-agent") {
                continue;
            }
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::InvalidRequest(format!("invalid header name `{name}`")))?;
            let value =
                http::HeaderValue::from_str(value).map_err(|_| Error::InvalidRequest(format!("invalid value for header `{name}`")))?;
            builder = builder.header(name, value);
        }
        let req = builder
            .header(http::header::USER_AGENT, USER_AGENT)
            .body(Full::new(Bytes::from(request.body)))
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let limit = grant.max_response_bytes;
        let timeout = grant.timeout;
        let exchange = async {
            let response = self.client.request(req).await.map_err(|e| Error::Transport(describe_client_error(&e)))?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let (body, body_truncated) = read_limited(response.into_body(), limit).await?;
            Ok(Response { status, headers, body, body_truncated })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(timeout.as_millis() as u64)),
        }
    }
}

/// Read at most `limit` bytes; stop (and drop the connection) beyond it.
async fn read_limited(mut body: hyper::body::Incoming, limit: u64) -> Result<(Vec<u8>, bool), Error> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Transport(format!("reading the response body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            let room = (limit as usize).saturating_sub(out.len());
            if data.len() > room {
                out.extend_from_slice(&data[..room]);
                return Ok((out, true));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok((out, false))
}

fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error as _;
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

fn method(m: Method) -> http::Method {
    match m {
        Method::Get => http::Method::GET,
        Method::Post => http::Method::POST,
        Method::Put => http::Method::PUT,
        Method::Patch => http::Method::PATCH,
        Method::Delete => http::Method::DELETE,
    }
}

/// DNS resolution that drops internal addresses unless allowed, so an allow-listed name that
/// resolves (or is rebound) to an internal address cannot be used to reach it. The connector
/// connects to exactly the addresses returned here.
#[derive(Clone)]
pub struct GuardedResolver {
    allow_private: bool,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| allow_private || !is_internal(a.ip())).collect();
            if allowed.is_empty() && !addrs.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("`{host}` resolves only to internal addresses, which this receiver may not reach"),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_host_and_port() {
        let exact = HostPattern::parse("hooks.slack.com").unwrap();
        assert!(exact.matches("hooks.slack.com", 443));
        assert!(!exact.matches("evil-hooks.slack.com", 443));
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com", 80));
        assert!(wild.matches("a.b.example.com", 80));
        assert!(!wild.matches("example.com", 80));
        assert!(!wild.matches("badexample.com", 80));
        let port = HostPattern::parse("127.0.0.1:8080").unwrap();
        assert!(port.matches("127.0.0.1", 8080));
        assert!(!port.matches("127.0.0.1", 8081));
        let v6 = HostPattern::parse("[::1]:80").unwrap();
        assert!(v6.matches("::1", 80));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in ["https://x.com/", "", "*.", "a*.com", "x.com:0", "x.com:http"] {
            assert!(HostPattern::parse(p).is_err(), "{p}");
        }
    }

    #[test]
    fn internal_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
