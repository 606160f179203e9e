//! The Belfry test kit: built components, a recording HTTP stand-in, receivers bound to real plugins, and a daemon launcher.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use belfry::plugin::{BindError, HostPattern, Plugin, Receiver, ReceiverSpec, Runtime, RuntimeOptions};
use belfry::plugin::{Isolation, Limits};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

pub mod load;
pub mod pgo;
pub mod smtp;

/// The webhook plugin component, built from `plugins/webhook`.
pub fn webhook_wasm() -> &'static Path {
    Path::new(env!("BELFRY_WASM_WEBHOOK"))
}

/// The Slack plugin component, built from `plugins/slack`.
pub fn slack_wasm() -> &'static Path {
    Path::new(env!("BELFRY_WASM_SLACK"))
}

/// The PagerDuty plugin component, built from `plugins/pagerduty`.
pub fn pagerduty_wasm() -> &'static Path {
    Path::new(env!("BELFRY_WASM_PAGERDUTY"))
}

/// The Discord plugin component, built from `plugins/discord`.
pub fn discord_wasm() -> &'static Path {
    Path::new(env!("BELFRY_WASM_DISCORD"))
}

/// The Telegram plugin component, built from `plugins/telegram`.
pub fn telegram_wasm() -> &'static Path {
    Path::new(env!("BELFRY_WASM_TELEGRAM"))
}

/// The Opsgenie plugin component, built from `plugins/opsgenie`.
pub fn opsgenie_wasm() -> &'static Path {
    Path::new(env!("BELFRY_WASM_OPSGENIE"))
}

/// The SMS (Twilio) plugin component, built from `plugins/sms`.
pub fn sms_wasm() -> &'static Path {
    Path::new(env!("BELFRY_WASM_SMS"))
}

/// The Microsoft Teams plugin component, built from `plugins/msteams`.
pub fn msteams_wasm() -> &'static Path {
    Path::new(env!("BELFRY_WASM_MSTEAMS"))
}

/// The email plugin component, built from `plugins/email`.
pub fn email_wasm() -> &'static Path {
    Path::new(env!("BELFRY_WASM_EMAIL"))
}

/// The misbehaving fixture component, built from `tests/fixtures/misbehave`.
pub fn misbehave_wasm() -> &'static Path {
    Path::new(env!("BELFRY_WASM_MISBEHAVE"))
}

/// How long tests wait for something that should happen at once (generous for slow CI).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The value of the sample `series` (its name with its labels, as `/metrics` writes them, e.g.
/// `belfry_store_commit_duration_seconds_count`) in the text of `/metrics`, if it is there.
pub fn metric_sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A plugin runtime with a private cache directory.
pub struct TestRuntime {
    /// The runtime.
    pub runtime: Runtime,
    /// Its cache directory (deleted on drop).
    pub cache: tempfile::TempDir,
}

impl TestRuntime {
    /// A runtime with on-demand allocation.
    pub fn new() -> TestRuntime {
        let cache = tempfile::tempdir().expect("temp dir");
        let runtime = Runtime::new(RuntimeOptions {
            cache_dir: cache.path().to_path_buf(),
            allocator: Default::default(),
            pool_slots: 16,
            profiler: Default::default(),
        })
        .expect("runtime");
        TestRuntime { runtime, cache }
    }

    /// Load a component, panicking with the reason if it does not load.
    pub async fn load(&self, path: &Path) -> Arc<Plugin> {
        let key = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        self.runtime.load(&key, path, None).await.unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
    }
}

impl Default for TestRuntime {
    fn default() -> Self {
        Self::new()
    }
}

/// A `[[receivers]]` TOML entry: the webhook plugin posting to `sink` at `/{name}`, with the
/// sink allow-listed (loopback allowed), and `extra` keys (fallback, retry, ...).
pub fn webhook_receiver(name: &str, sink: &HttpSink, extra: &str) -> String {
    format!(
        "[[receivers]]\nname = \"{name}\"\nplugin = \"webhook\"\nallowed_hosts = [\"{host}\"]\nallow_private_addresses = true\n{extra}\nconfig = {{ url = \"{url}\" }}\n\n",
        host = sink.host(),
        url = sink.url(&format!("/{name}")),
    )
}

/// [`webhook_receiver`] `name`, and a `[route]` to it that notifies each alert on its own at
/// once (`group_by = ["..."]`, `group_wait = "0s"`, `group_interval = "50ms"`).
pub fn webhook_receiver_toml(name: &str, sink: &HttpSink) -> String {
    format!(
        "{}[route]\nreceiver = \"{name}\"\ngroup_by = [\"...\"]\ngroup_wait = \"0s\"\ngroup_interval = \"50ms\"\n",
        webhook_receiver(name, sink, "")
    )
}

/// A single-tenant daemon config: listening on 127.0.0.1:0, `extra` TOML sections, the
/// webhook plugin, and one receiver `receiver` posting to `sink` that every alert is routed to.
pub fn webhook_daemon_config(receiver: &str, sink: &HttpSink, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n{extra}\n\n[plugins.webhook]\npath = \"{}\"\n\n{}",
        webhook_wasm().display(),
        webhook_receiver_toml(receiver, sink)
    )
}

/// A receiver spec for tests: tenant `t1`, loopback allowed on `allowed_hosts`, default limits.
pub fn spec(name: &str, config_toml: &str, allowed_hosts: &[&str]) -> ReceiverSpec {
    ReceiverSpec {
        tenant: "t1".into(),
        name: name.into(),
        config: toml::from_str(config_toml).expect("test config is valid TOML"),
        allowed_hosts: allowed_hosts.iter().map(|h| HostPattern::parse(h).expect("test host pattern")).collect(),
        allow_private_addresses: true,
        // The production CPU budget: tests run in parallel on 2 cores, so a tighter one would be flaky.
        limits: Limits { memory_mib: 32, request_timeout_ms: 5_000, ..Limits::default() },
        isolation: Isolation::PerReceiver,
        max_in_flight: 64,
        secrets: Vec::new(),
        capture: None,
        smtp: None,
    }
}

/// [`spec`] with a wide CPU budget, for tests about sizes: copying 1,000 alerts into the
/// sandbox runs unoptimized in test builds (the host's generated bindings) and shares 2 cores
/// with the other tests. docs/BENCHMARKS.md measures release builds.
pub fn spec_for_big_input(name: &str, config_toml: &str, allowed_hosts: &[&str]) -> ReceiverSpec {
    let mut spec = spec(name, config_toml, allowed_hosts);
    spec.limits.cpu_ms = 2_000;
    spec
}

/// Bind `spec` to `plugin`, panicking with the plugin's complaints if it refuses.
pub async fn bind(plugin: &Arc<Plugin>, spec: ReceiverSpec) -> Receiver {
    match plugin.bind(spec).await {
        Ok(r) => r,
        Err(BindError::Config(errors)) => panic!("config refused: {errors:?}"),
        Err(BindError::Plugin(f)) => panic!("plugin failed to validate: {f}"),
    }
}

/// A notification with one firing alert, as the dispatcher builds it.
pub fn notification(receiver: &str, alertname: &str) -> belfry::plugin::Notification {
    let alert = belfry::alert::Alert {
        labels: [("alertname", alertname), ("severity", "page")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        annotations: [("summary".to_string(), format!("{alertname} is on fire"))].into_iter().collect(),
        starts_at: chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap().into(),
        ends_at: None,
        generator_url: "http://prometheus.local/graph".into(),
    };
    belfry::dispatch::single_alert_notification("t1", receiver, &alert, "http://belfry.local", chrono::Utc::now())
}

/// A request the stand-in received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
    /// When it arrived.
    pub received: std::time::Instant,
}

impl Recorded {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the stand-in answers.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// A local HTTP endpoint that records every request and answers with a configurable reply.
pub struct HttpSink {
    /// Where it listens (127.0.0.1, random port).
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    arrived: Arc<Notify>,
    reply: Arc<Mutex<Reply>>,
    hold: Arc<tokio::sync::watch::Sender<bool>>,
}

impl HttpSink {
    /// Start on 127.0.0.1:0, answering 200 "ok".
    pub async fn start() -> HttpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let reply = Arc::new(Mutex::new(Reply { status: 200, headers: Vec::new(), body: b"ok".to_vec() }));
        let hold = Arc::new(tokio::sync::watch::Sender::new(false));
        let (r, a, rep, h) = (requests.clone(), arrived.clone(), reply.clone(), hold.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (r, a, rep, h) = (r.clone(), a.clone(), rep.clone(), h.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (r, a, rep, mut held) = (r.clone(), a.clone(), rep.clone(), h.subscribe());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
                            let received = std::time::Instant::now();
                            r.lock().unwrap().push(Recorded {
                                method: parts.method.to_string(),
                                path,
                                headers: parts.headers,
                                body,
                                received,
                            });
                            a.notify_waiters();
                            let _ = held.wait_for(|held| !*held).await;
                            let reply = rep.lock().unwrap().clone();
                            let mut response = hyper::Response::builder().status(reply.status);
                            for (k, v) in &reply.headers {
                                response = response.header(k, v);
                            }
                            Ok::<_, std::convert::Infallible>(response.body(Full::new(Bytes::from(reply.body))).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        HttpSink { addr, requests, arrived, reply, hold }
    }

    /// While `true`, requests are recorded but not answered (a channel that hangs); `false`
    /// answers the waiting ones.
    pub fn hold_replies(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The allow-list entry for this sink.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Answer every later request with `status`, `headers` and `body`.
    pub fn reply_with(&self, status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) {
        *self.reply.lock().unwrap() =
            Reply { status, headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), body: body.into() };
    }

    /// How many requests arrived so far (cheap: nothing is copied).
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Wait until at least `n` requests arrived (panics after [`PATIENCE`]).
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.arrived.notified();
            if self.count() >= n {
                return self.requests();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got = self.requests();
                panic!("expected {n} requests at the sink, got {}: {:?}", got.len(), got);
            }
        }
    }
}

/// A `belfry serve` process started from the built binary.
pub struct Daemon {
    child: Child,
    /// The API address it printed.
    pub addr: SocketAddr,
    /// Its working directory with the config (deleted on drop).
    pub dir: tempfile::TempDir,
    stderr: Arc<Mutex<String>>,
}

/// The daemon exited instead of serving.
#[derive(Debug)]
pub struct DaemonFailed {
    /// Its exit code.
    pub code: Option<i32>,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// The config file it was given.
    pub config: PathBuf,
}

impl Daemon {
    /// Write `config_toml` to `belfry.toml` in a fresh directory and run `bin serve` on it.
    /// `bin` is `env!("CARGO_BIN_EXE_belfry-under-test")` (only integration tests see that variable).
    pub fn start(bin: &str, config_toml: &str) -> Result<Daemon, DaemonFailed> {
        Daemon::start_with_files(bin, config_toml, &[])
    }

    /// Like [`Daemon::start`], with more files (e.g. `tenants/acme/tenant.toml`) beside the config.
    pub fn start_with_files(bin: &str, config_toml: &str, files: &[(&str, &str)]) -> Result<Daemon, DaemonFailed> {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("belfry.toml"), config_toml).expect("write config");
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).expect("create dirs");
            std::fs::write(path, text).expect("write file");
        }
        Daemon::spawn(bin, dir)
    }

    /// Write (or with `None`, delete) a file in the daemon's directory.
    pub fn write_file(&self, path: &str, text: Option<&str>) {
        let path = self.dir.path().join(path);
        match text {
            Some(text) => {
                std::fs::create_dir_all(path.parent().unwrap()).expect("create dirs");
                std::fs::write(path, text).expect("write file");
            }
            None => std::fs::remove_dir_all(path.parent().unwrap()).expect("remove tenant dir"),
        }
    }

    /// Kill the process with SIGKILL (no shutdown path runs), then start it again on the same
    /// directory, config and store.
    pub fn kill_9_and_restart(mut self, bin: &str) -> Result<Daemon, DaemonFailed> {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        Daemon::spawn(bin, dir)
    }

    fn spawn(bin: &str, dir: tempfile::TempDir) -> Result<Daemon, DaemonFailed> {
        let config = dir.path().join("belfry.toml");
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn belfry");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let stderr_done = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first_line).expect("read stdout");
        match first_line.trim().strip_prefix("belfry listening on http://") {
            Some(addr) => Ok(Daemon { child, addr: addr.parse().expect("address"), dir, stderr }),
            None => {
                let status = child.wait().expect("wait");
                let _ = stderr_done.join();
                let stderr = stderr.lock().unwrap().clone();
                Err(DaemonFailed { code: status.code(), stderr, config })
            }
        }
    }

    /// Poll the audit trail until `done` holds for its records (or panic after [`PATIENCE`]).
    pub async fn audit_until(&self, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let path = self.dir.path().join("data/audit.jsonl");
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // Complete lines only: the trail's thread may be writing the next ones.
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            let records: Vec<serde_json::Value> =
                complete.lines().map(|l| serde_json::from_str(l).expect("every audit line is JSON")).collect();
            if done(&records) {
                return records;
            }
            assert!(std::time::Instant::now() < deadline, "audit trail never got there:\n{records:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Stop the process with SIGTERM, as a service manager does, and wait for it to exit
    /// (panics after [`PATIENCE`]).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {} failed", self.pid());
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "SIGTERM did not stop the daemon:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client for talking to the daemon.
pub async fn http_request(method: &str, url: &str, body: &str) -> (u16, String) {
    http_request_with(method, url, body, &[]).await
}

/// [`http_request`] with extra headers.
pub async fn http_request_with(method: &str, url: &str, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, _, body) = http_exchange(method, url, body, headers).await;
    (status, body)
}

/// One request; the response's status, headers and body.
pub async fn http_exchange(method: &str, url: &str, body: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, String) {
    let uri: hyper::Uri = url.parse().expect("url");
    let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", uri.authority().unwrap().as_str())
        .header("content-type", "application/json");
    let req = headers.iter().fold(req, |req, (k, v)| req.header(*k, *v)).body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let response = sender.send_request(req).await.expect("send");
    let status = response.status().as_u16();
    let response_headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, response_headers, String::from_utf8_lossy(&body).into_owned())
}
