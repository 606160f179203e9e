//! A real SMTP server on loopback for the email channel's tests: mailin's protocol engine, STARTTLS or implicit TLS, AUTH, and a record of every message.
//!
//! The server is strict the way a mail provider is: it offers AUTH only over TLS, refuses MAIL
//! before a successful AUTH when credentials are set, and checks the credentials. Tests can
//! make it refuse the next messages with any reply code.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mailin::response::{AUTH_OK, INVALID_CREDENTIALS, OK};
use mailin::{Action, AuthMechanism, Handler, Response, SessionBuilder};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How clients reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpMode {
    /// Plain connection, STARTTLS offered (submission, port 587).
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
    /// No TLS at all (a local relay).
    Plain,
}

/// One message as the server received it.
#[derive(Clone, Debug)]
pub struct ReceivedMail {
    /// Envelope sender (MAIL FROM).
    pub from: String,
    /// Envelope recipients (RCPT TO).
    pub to: Vec<String>,
    /// The message: headers and body, as sent.
    pub data: String,
    /// Whether the session was encrypted when the message was sent.
    pub tls: bool,
    /// The user that authenticated, if any.
    pub user: Option<String>,
}

impl ReceivedMail {
    /// The value of the first header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push_str(line.trim_start());
                    continue;
                }
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_string());
            }
        }
        value
    }
}

#[derive(Default)]
struct Shared {
    mails: Vec<ReceivedMail>,
    /// Replies to the end of the next messages' data, first first; empty: 250 OK.
    refusals: Vec<(u16, String)>,
    /// Authentication attempts, successful or not, as (user, password).
    logins: Vec<(String, String)>,
    /// The refusal to send instead of the session's 250 for the message just ended. (mailin
    /// stays in its DATA state after a refusal, where RFC 5321 ends the transaction either way;
    /// so the session is told OK and the client gets the refusal.)
    refusing: Option<(u16, String)>,
    /// Stop answering anything (a server that hangs).
    stalled: bool,
}

/// A running SMTP server on 127.0.0.1.
pub struct SmtpServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    arrived: Arc<Notify>,
}

/// The test CA's certificate, which signed the server's (for `smtp.ca_file`).
pub fn test_ca_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/ca.pem")
}

fn tls_acceptor() -> TlsAcceptor {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("server.pem")).expect("server.pem").collect::<Result<_, _>>().expect("certificates");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
    TlsAcceptor::from(Arc::new(config))
}

impl SmtpServer {
    /// Start a server in `mode`; with `credentials`, clients must AUTH (PLAIN or LOGIN) with them.
    pub async fn start(mode: SmtpMode, credentials: Option<(&str, &str)>) -> SmtpServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind SMTP server");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let arrived = Arc::new(Notify::new());
        let credentials = credentials.map(|(u, p)| (u.to_string(), p.to_string()));
        let acceptor = tls_acceptor();
        let (s, a) = (shared.clone(), arrived.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else { return };
                let handler =
                    SessionHandler { shared: s.clone(), arrived: a.clone(), credentials: credentials.clone(), ..Default::default() };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(stream, peer.ip(), mode, handler, acceptor).await;
                });
            }
        });
        SmtpServer { addr, shared, arrived }
    }

    /// `127.0.0.1:PORT`, for `smarthost`.
    pub fn smarthost(&self) -> String {
        self.addr.to_string()
    }

    /// Answer the end of the next message's data with `code` and `text` instead of 250 OK;
    /// each call queues one refusal.
    pub fn refuse_next(&self, code: u16, text: &str) {
        self.shared.lock().unwrap().refusals.push((code, text.to_string()));
    }

    /// From now on, read but never answer: a server that hangs.
    pub fn stall(&self) {
        self.shared.lock().unwrap().stalled = true;
    }

    /// Every message accepted so far.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.shared.lock().unwrap().mails.clone()
    }

    /// Every AUTH attempt so far, as (user, password).
    pub fn logins(&self) -> Vec<(String, String)> {
        self.shared.lock().unwrap().logins.clone()
    }

    /// Wait until at least `n` messages were accepted (panics after [`crate::PATIENCE`]).
    pub async fn wait_for(&self, n: usize) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + crate::PATIENCE;
        loop {
            let notified = self.arrived.notified();
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("expected {n} mails at the SMTP server, got {}: {mails:?}", mails.len());
            }
        }
    }
}

/// One SMTP session's decisions: credentials, and recording what arrives.
#[derive(Default)]
struct SessionHandler {
    shared: Arc<Mutex<Shared>>,
    arrived: Arc<Notify>,
    credentials: Option<(String, String)>,
    tls: Arc<AtomicBool>,
    user: Option<String>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl SessionHandler {
    fn check(&mut self, user: &str, password: &str) -> Response {
        self.shared.lock().unwrap().logins.push((user.to_string(), password.to_string()));
        match &self.credentials {
            Some((u, p)) if u == user && p == password => {
                self.user = Some(user.to_string());
                AUTH_OK
            }
            _ => INVALID_CREDENTIALS,
        }
    }
}

impl Handler for SessionHandler {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.from = from.to_string();
        self.to.clear();
        OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        self.to.push(to.to_string());
        OK
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, _to: &[String]) -> Response {
        self.data.clear();
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut shared = self.shared.lock().unwrap();
        if !shared.refusals.is_empty() {
            shared.refusing = Some(shared.refusals.remove(0));
            return OK;
        }
        shared.mails.push(ReceivedMail {
            from: self.from.clone(),
            to: self.to.clone(),
            data: String::from_utf8_lossy(&self.data).into_owned(),
            tls: self.tls.load(Ordering::Relaxed),
            user: self.user.clone(),
        });
        drop(shared);
        self.arrived.notify_waiters();
        OK
    }

    fn auth_plain(&mut self, _authorization_id: &str, authentication_id: &str, password: &str) -> Response {
        self.check(authentication_id, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        self.check(username, password)
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    ip: IpAddr,
    mode: SmtpMode,
    handler: SessionHandler,
    acceptor: TlsAcceptor,
) -> std::io::Result<()> {
    let mut builder = SessionBuilder::new("smtp.belfry.test");
    if handler.credentials.is_some() {
        builder.enable_auth(AuthMechanism::Plain).enable_auth(AuthMechanism::Login);
    }
    if mode == SmtpMode::Starttls {
        builder.enable_start_tls();
    }
    if mode == SmtpMode::Plain && handler.credentials.is_some() {
        builder.insecure_enable_plaintext_auth();
    }
    let implicit = mode == SmtpMode::Implicit;
    handler.tls.store(implicit, Ordering::Relaxed);
    // The session owns the handler; this handle tells it when STARTTLS has taken effect.
    let tls_active = handler.tls.clone();
    let shared = handler.shared.clone();
    let mut session = builder.build(ip, handler);
    if implicit {
        let mut tls = BufReader::new(acceptor.accept(stream).await?);
        session.tls_active();
        write(&mut tls, &session.greeting()).await?;
        run(&mut session, &mut tls, &shared).await?;
        return Ok(());
    }
    let mut plain = BufReader::new(stream);
    write(&mut plain, &session.greeting()).await?;
    if run(&mut session, &mut plain, &shared).await? == Ended::UpgradeTls {
        let mut tls = BufReader::new(acceptor.accept(plain.into_inner()).await?);
        session.tls_active();
        tls_active.store(true, Ordering::Relaxed);
        run(&mut session, &mut tls, &shared).await?;
    }
    Ok(())
}

#[derive(PartialEq, Eq)]
enum Ended {
    Closed,
    UpgradeTls,
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut mailin::Session<SessionHandler>,
    stream: &mut BufReader<S>,
    shared: &Mutex<Shared>,
) -> std::io::Result<Ended> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if stream.read_until(b'\n', &mut line).await? == 0 {
            return Ok(Ended::Closed);
        }
        let mut response = session.process(&line);
        {
            let mut shared = shared.lock().unwrap();
            if shared.stalled {
                continue;
            }
            if let Some((code, text)) = shared.refusing.take() {
                response = Response::custom(code, text);
            }
        }
        match response.action {
            Action::Reply => write(stream, &response).await?,
            Action::Close => {
                write(stream, &response).await?;
                return Ok(Ended::Closed);
            }
            Action::UpgradeTls => {
                write(stream, &response).await?;
                return Ok(Ended::UpgradeTls);
            }
            Action::NoReply => {}
        }
    }
}

async fn write<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut BufReader<S>, response: &Response) -> std::io::Result<()> {
    let bytes = response.buffer()?;
    stream.get_mut().write_all(&bytes).await?;
    stream.get_mut().flush().await
}
