//! The SMTP capability: composes a plugin's message as MIME and sends it through the receiver's configured server.
//!
//! The operator's `[receivers.smtp]` table is the grant: the host owns the server, the TLS mode
//! and the credentials, so the plugin (the email channel) never sees them. lettre does the
//! protocol: STARTTLS, implicit TLS, AUTH PLAIN/LOGIN, MIME, header encoding.

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use super::bindings::belfry::receiver::smtp::{Error, Message as PluginMessage};
use super::outbound::{Capture, CapturedMail};

/// A message larger than this is refused before it is sent (most servers stop at 10–35 MB).
pub const MAX_MESSAGE_BYTES: usize = 10 << 20;
/// Recipients (to and cc) per message.
pub const MAX_RECIPIENTS: usize = 50;

/// One receiver's SMTP grant, ready to send.
#[derive(Clone)]
pub struct Mailer {
    receiver: String,
    smarthost: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    timeout: std::time::Duration,
    capture: Option<Capture>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        f.debug_struct("Mailer").field("receiver", &self.receiver).field("smarthost", &self.smarthost).finish_non_exhaustive()
    }
}

impl Mailer {
    /// A client for `config`; `ca_pem` is the content of its `ca_file`, if any. The error
    /// names the setting at fault (the config check has already caught most of them).
    pub fn new(receiver: &str, config: &SmtpConfig, ca_pem: Option<&[u8]>, capture: Option<Capture>) -> Result<Mailer, String> {
        let (host, port) = config.host_port()?;
        let tls_parameters = || -> Result<TlsParameters, String> {
            let mut builder = TlsParameters::builder(host.clone());
            if let Some(pem) = ca_pem {
                for block in pem_certificates(pem) {
                    let cert = Certificate::from_pem(block.as_bytes()).map_err(|e| format!("ca_file: {e}"))?;
                    builder = builder.add_root_certificate(cert);
                }
            }
            builder.build_rustls().map_err(|e| format!("TLS setup for {host}: {e}"))
        };
        let tls = match config.tls {
            SmtpTls::Starttls => Tls::Required(tls_parameters()?),
            SmtpTls::Implicit => Tls::Wrapper(tls_parameters()?),
            SmtpTls::None => Tls::None,
        };
        let hello = config.hello.clone().unwrap_or_else(|| "belfry".into());
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
            .port(port)
            .tls(tls)
            .hello_name(ClientId::Domain(hello))
            .timeout(Some(config.timeout));
        if let Some(user) = &config.username {
            builder = builder.credentials(Credentials::new(user.clone(), config.password.clone().unwrap_or_default()));
        }
        Ok(Mailer {
            receiver: receiver.to_string(),
            smarthost: config.smarthost.clone(),
            transport: builder.build(),
            timeout: config.timeout,
            capture,
        })
    }

    /// Compose and send `message`, or say why not (in the WIT's terms).
    pub async fn send(&self, message: PluginMessage) -> Result<(), Error> {
        let email = compose(message)?;
        let formatted = email.formatted();
        if formatted.len() > MAX_MESSAGE_BYTES {
            return Err(Error::InvalidMessage(format!(
                "the message is {} bytes; the host sends at most {MAX_MESSAGE_BYTES}",
                formatted.len()
            )));
        }
        if let Some(capture) = &self.capture {
            let envelope = email.envelope();
            capture.lock().expect("capture lock").mails.push(CapturedMail {
                smarthost: self.smarthost.clone(),
                from: envelope.from().map(|a| a.to_string()).unwrap_or_default(),
                to: envelope.to().iter().map(|a| a.to_string()).collect(),
                message: String::from_utf8_lossy(&formatted).into_owned(),
            });
            return Ok(());
        }
        // lettre bounds only the connect; a server that stops answering must not hold the
        // delivery until the plugin's wall-clock limit.
        match tokio::time::timeout(self.timeout, self.transport.send_raw(email.envelope(), &formatted)).await {
            Ok(result) => result.map(|_| ()).map_err(|e| classify(&self.receiver, &self.smarthost, &e)),
            Err(_) => Err(Error::Temporary(format!(
                "{}: no answer within {} ms (smtp.timeout of receiver `{}`)",
                self.smarthost,
                self.timeout.as_millis(),
                self.receiver
            ))),
        }
    }
}

/// The plugin's fields → a MIME message: multipart/alternative when there is an HTML part.
fn compose(m: PluginMessage) -> Result<Message, Error> {
    let mailbox = |field: &str, text: &str| -> Result<Mailbox, Error> {
        text.trim().parse::<Mailbox>().map_err(|e| Error::InvalidMessage(format!("{field}: `{text}` is not an email address ({e})")))
    };
    if m.to.is_empty() {
        return Err(Error::InvalidMessage("to: at least one recipient".into()));
    }
    if m.to.len() + m.cc.len() > MAX_RECIPIENTS {
        return Err(Error::InvalidMessage(format!("at most {MAX_RECIPIENTS} recipients (to and cc) per message")));
    }
    // A header must be one line: a newline in the subject would start a header of its own.
    let subject: String = m.subject.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
    let mut builder = Message::builder()
        .from(mailbox("from", &m.from)?)
        .subject(subject)
        .date_now()
        .message_id(Some(format!("<{}@belfry>", random_id())))
        .user_agent(concat!("Belfry/", env!("CARGO_PKG_VERSION")).to_string());
    for to in &m.to {
        builder = builder.to(mailbox("to", to)?);
    }
    for cc in &m.cc {
        builder = builder.cc(mailbox("cc", cc)?);
    }
    if let Some(key) = &m.thread_key {
        let root = format!("<{}@belfry>", hex(&ring::digest::digest(&ring::digest::SHA256, key.as_bytes()).as_ref()[..16]));
        builder = builder.in_reply_to(root.clone()).references(root);
    }
    let built = match m.html_body {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(m.text_body, html)),
        None => builder.singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(m.text_body)),
    };
    built.map_err(|e| Error::InvalidMessage(e.to_string()))
}

/// lettre's error → the WIT's: the reply code decides who must act.
fn classify(receiver: &str, smarthost: &str, e: &lettre::transport::smtp::Error) -> Error {
    let code = e.status().map(|c| c.to_string());
    let text = format!("{smarthost}: {e}");
    match code.as_deref() {
        // Authentication required, too weak, or refused: only the operator can fix it.
        Some("530" | "534" | "535" | "538") => {
            Error::Auth(format!("{text} (check username and password in [receivers.smtp] of receiver `{receiver}`)"))
        }
        _ if e.is_permanent() => Error::Rejected(text),
        _ if e.is_tls() || text.contains("certificate") => {
            Error::Temporary(format!("{text} (TLS failed; if the server uses a private CA, set smtp.ca_file)"))
        }
        _ => Error::Temporary(text),
    }
}

/// The certificates of a PEM bundle, one block each (lettre takes one at a time).
fn pem_certificates(pem: &[u8]) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else { break };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

fn random_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system's random source");
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `[receivers.smtp]`: the server an email receiver sends through. The host holds it; the
/// plugin only composes messages.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// `host:port` of the SMTP server (Alertmanager's `smarthost`), e.g. `smtp.example.com:587`.
    pub smarthost: String,
    /// How the connection is secured.
    #[serde(default)]
    pub tls: SmtpTls,
    /// User name for SMTP AUTH (PLAIN or LOGIN); none: no authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for SMTP AUTH; may be a `${ENV}`, `${file:...}` or `enc:v1:` secret.
    #[serde(default)]
    pub password: Option<String>,
    /// A PEM file of extra CA certificates to trust (a private CA), besides the web's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name sent in EHLO (default: `belfry`).
    #[serde(default)]
    pub hello: Option<String>,
    /// Time allowed for a whole send: connect, TLS, AUTH and the message (default 30s).
    #[serde(default = "default_smtp_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl SmtpConfig {
    /// `smarthost` split into host and port; the error says what is wrong.
    pub fn host_port(&self) -> Result<(String, u16), String> {
        let (host, port) = self
            .smarthost
            .rsplit_once(':')
            .ok_or_else(|| format!("`{}` has no port; write host:port, e.g. smtp.example.com:587", self.smarthost))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{}` has no host", self.smarthost));
        }
        let port = port.parse::<u16>().map_err(|_| format!("`{port}` is not a port number"))?;
        Ok((host.to_string(), port))
    }

    /// Problems as (key under `smtp`, message).
    pub fn check(&self, base_dir: &Path) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Err(why) = self.host_port() {
            problems.push(("smarthost".into(), why));
        }
        if self.password.is_some() && self.username.is_none() {
            problems.push(("username".into(), "a password needs a username".into()));
        }
        if self.tls == SmtpTls::None && self.password.is_some() {
            problems.push((
                "tls".into(),
                "`none` would send the password in clear text; use `starttls` (port 587) or `implicit` (port 465)".into(),
            ));
        }
        if let Some(path) = &self.ca_file {
            let path = if path.is_absolute() { path.clone() } else { base_dir.join(path) };
            match std::fs::read(&path) {
                Ok(pem) if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") => {}
                Ok(_) => problems.push(("ca_file".into(), format!("{} holds no PEM certificate", path.display()))),
                Err(e) => problems.push(("ca_file".into(), format!("cannot read {}: {e}", path.display()))),
            }
        }
        if self.timeout.is_zero() {
            problems.push(("timeout".into(), "must be greater than zero".into()));
        }
        problems
    }
}

fn default_smtp_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The TLS mode of an SMTP connection.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
    /// No TLS at all: only for a relay on the same host. Refused together with a password.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> PluginMessage {
        PluginMessage {
            from: "Belfry <belfry@example.com>".into(),
            to: vec!["oncall@example.com".into()],
            cc: vec![],
            subject: "[FIRING:1] Disk\r\nBcc: victim@example.com".into(),
            text_body: "text".into(),
            html_body: Some("<p>html</p>".into()),
            thread_key: Some("{}:{alertname=\"Disk\"}".into()),
        }
    }

    #[test]
    fn a_newline_in_the_subject_cannot_add_a_header() {
        let text = String::from_utf8(compose(message()).unwrap().formatted()).unwrap();
        assert!(!text.lines().any(|l| l.starts_with("Bcc:")), "{text}");
        assert!(text.contains("Subject: [FIRING:1] Disk  Bcc: victim@example.com"), "{text}");
    }

    #[test]
    fn html_makes_an_alternative_and_the_thread_key_a_stable_reference() {
        let a = String::from_utf8(compose(message()).unwrap().formatted()).unwrap();
        let b = String::from_utf8(compose(message()).unwrap().formatted()).unwrap();
        assert!(a.contains("multipart/alternative"), "{a}");
        let refs = |t: &str| t.lines().find(|l| l.starts_with("References:")).map(str::to_string);
        assert_eq!(refs(&a), refs(&b));
        assert!(refs(&a).is_some());
        let id = |t: &str| t.lines().find(|l| l.starts_with("Message-ID:")).map(str::to_string);
        assert_ne!(id(&a), id(&b), "each message has its own id");
    }

    #[test]
    fn bad_addresses_are_named() {
        let mut m = message();
        m.to = vec!["oncall@example.com".into(), "not an address".into()];
        match compose(m) {
            Err(Error::InvalidMessage(why)) => assert!(why.contains("to: `not an address`"), "{why}"),
            other => panic!("{other:?}"),
        }
        let mut m = message();
        m.to.clear();
        assert!(matches!(compose(m), Err(Error::InvalidMessage(_))));
    }

    #[test]
    fn pem_bundles_split_into_certificates() {
        let pem = b"junk\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let certs = pem_certificates(pem);
        assert_eq!(certs.len(), 2);
        assert!(certs[1].contains("BBB"));
    }
}
