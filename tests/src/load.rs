//! Load generation for benchmarks: keep-alive HTTP/1.1 posting, percentiles, and a process's RSS and CPU time from /proc.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::{HttpSink, webhook_wasm};

/// The routing bench's daemon config, which the profile-guided build's training runs too: one
/// webhook receiver `hook` posting to `sink`, the tenant's `route.rhai`, every alert its own
/// group (`group_by = ["..."]`) notified at once (`group_wait = "0s"`, `group_interval = "1s"`),
/// compiled plugins cached in `cache_dir`.
pub fn burst_config(sink: &HttpSink, cache_dir: &std::path::Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 16777216

[runtime]
cache_dir = "{cache}"

[plugins.webhook]
path = "{webhook}"

[[receivers]]
name = "hook"
plugin = "webhook"
allowed_hosts = ["{host}"]
allow_private_addresses = true
config = {{ url = "{url}" }}

[route]
receiver = "hook"
script = "route.rhai"
group_by = ["..."]
group_wait = "0s"
group_interval = "1s"
"#,
        cache = cache_dir.display(),
        webhook = webhook_wasm().display(),
        host = sink.host(),
        url = sink.url("/hook"),
    )
}

/// The daemon binary a bench runs: `BELFRY_BENCH_DAEMON` if set (e.g. the profile-guided
/// build of `scripts/release`, `target/pgo/release/belfry`), else `built`, the package's own
/// release build of it.
pub fn daemon_binary(built: &str) -> String {
    std::env::var("BELFRY_BENCH_DAEMON").unwrap_or_else(|_| built.to_string())
}

/// One keep-alive connection to the daemon.
pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Open a keep-alive connection.
pub async fn connect(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// POST `body` to `/api/v2/alerts`, assert 200, and return the request's latency.
pub async fn post_alerts(sender: &mut Sender, addr: SocketAddr, body: Bytes) -> Duration {
    let req = hyper::Request::post("/api/v2/alerts")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let started = Instant::now();
    sender.ready().await.unwrap();
    let response = sender.send_request(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    started.elapsed()
}

/// POST every body of `bodies` to `/api/v2/alerts` over `connections` keep-alive connections at
/// once (body `i` on connection `i % connections`), each answered 200; returns every request's
/// latency.
pub async fn post_over(addr: SocketAddr, bodies: &[Bytes], connections: usize) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for c in 0..connections {
        let mine: Vec<Bytes> = bodies.iter().skip(c).step_by(connections).cloned().collect();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            let mut latencies = Vec::with_capacity(mine.len());
            for body in mine {
                latencies.push(post_alerts(&mut sender, addr, body).await);
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(bodies.len());
    for task in tasks {
        latencies.extend(task.await.expect("a posting task panicked"));
    }
    latencies
}

/// The `p` quantile (0..=1) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Resident memory of a process, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024.0
}

/// CPU time (user + system) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}
