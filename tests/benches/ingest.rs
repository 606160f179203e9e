//! Ingest throughput and latency (durable), RSS with 100K active alerts, restart time with 100K stored.
//!
//! Run: `cargo bench -p belfry-tests --bench ingest` (release build of the daemon, 2 cores here).
//! The daemon is the real binary in its own process (`BELFRY_BENCH_DAEMON` names another build
//! of it, such as `scripts/release`'s), with its store on disk (fsync on commit)
//! and one receiver on the no-op fixture plugin, so delivery costs little and ingest dominates.
//! Figures go to docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use belfry_tests::load::{daemon_binary, percentile, post_over, rss_mib};
use belfry_tests::{Daemon, misbehave_wasm};
use bytes::Bytes;

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");
const CONNECTIONS: usize = 4;
const POSTS: usize = 200;
const ALERTS_PER_POST: usize = 100;

fn config() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 16777216

[runtime]
cache_dir = "{cache}"

# Room for the worst-case restart below (130K alerts); the rate limit stays at its default.
[limits]
max_alerts = 200000

[plugins.noop]
path = "{}"

[[receivers]]
name = "sink"
plugin = "noop"
config = {{ mode = "noop" }}

[route]
receiver = "sink"
group_by = {group_by}
group_wait = "0s"
"#,
        misbehave_wasm().display(),
        group_by = group_by(),
        cache = concat!(env!("CARGO_TARGET_TMPDIR"), "/ingest-bench-cache"),
    )
}

/// The route's `group_by`: `["alertname", "team"]` (10 groups, as a team-routed setup has), or
/// `BELFRY_BENCH_GROUP_BY='["..."]'` for the worst case of one group per alert.
fn group_by() -> String {
    std::env::var("BELFRY_BENCH_GROUP_BY").unwrap_or_else(|_| r#"["alertname", "team"]"#.to_string())
}

/// A Prometheus-like batch: distinct alerts `first..first + n` with realistic labels.
fn batch(first: usize, n: usize) -> String {
    let alerts: Vec<String> = (first..first + n)
        .map(|i| {
            format!(
                r#"{{"labels":{{"alertname":"HighLatency","instance":"10.0.{}.{}:9100","job":"node","severity":"page","team":"t{}"}},"annotations":{{"summary":"p99 latency above 2s on instance {i}","runbook_url":"https://runbooks.example/latency"}},"startsAt":"2026-11-23T10:00:00Z","endsAt":"2099-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph?g0.expr=latency"}}"#,
                i / 256,
                i % 256,
                i % 10
            )
        })
        .collect();
    format!("[{}]", alerts.join(","))
}

/// Send `posts` batches starting at alert `first` over `connections` keep-alive connections;
/// returns wall time and per-request latencies.
async fn load(addr: std::net::SocketAddr, first: usize, posts: usize, connections: usize) -> (Duration, Vec<Duration>) {
    let bodies: Vec<Bytes> = (0..posts).map(|p| Bytes::from(batch(first + p * ALERTS_PER_POST, ALERTS_PER_POST))).collect();
    let started = Instant::now();
    let latencies = post_over(addr, &bodies, connections).await;
    (started.elapsed(), latencies)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        // A first start compiles the plugin into the cache (cranelift's memory stays with that
        // process); the measured daemon loads it from the cache, as every later start does.
        let bin = daemon_binary(BIN);
        let cold = Daemon::start(&bin, &config()).expect("daemon starts");
        let cold_rss = rss_mib(cold.pid());
        drop(cold);
        let daemon = Daemon::start(&bin, &config()).expect("daemon starts");
        let addr = daemon.addr;
        let idle_rss = rss_mib(daemon.pid());
        // Warm-up: connections, plugin instances, store file growth.
        load(addr, 10_000_000, 20, CONNECTIONS).await;

        println!(
            "## Ingest ({POSTS} POSTs x {ALERTS_PER_POST} alerts, {CONNECTIONS} keep-alive connections, durable, group_by = {})\n",
            group_by()
        );
        println!("| run | alerts/s | p50 request | p99 request |");
        println!("|---|---|---|---|");
        for run in 1..=3 {
            let (wall, mut latencies) = load(addr, run * 1_000_000, POSTS, CONNECTIONS).await;
            latencies.sort();
            let rate = (POSTS * ALERTS_PER_POST) as f64 / wall.as_secs_f64();
            println!(
                "| {run} | {rate:.0} | {:.2} ms | {:.2} ms |",
                percentile(&latencies, 0.50).as_secs_f64() * 1e3,
                percentile(&latencies, 0.99).as_secs_f64() * 1e3
            );
        }

        // Fill up to 100K active alerts in total (the runs above stored 20K + 2K of them).
        let stored = 3 * POSTS * ALERTS_PER_POST + 20 * ALERTS_PER_POST;
        let more = 100_000 - stored;
        load(addr, 20_000_000, more / ALERTS_PER_POST, CONNECTIONS).await;
        tokio::time::sleep(Duration::from_secs(2)).await; // deliveries and their marks settle
        let (_, listed) = belfry_tests::http_request("GET", &daemon.url("/api/v2/alerts?filter=team%3D%22t3%22"), "").await;
        let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 10_000, "a tenth of 100K alerts");
        let pid = daemon_pid(&daemon);
        println!("\n## Memory and restart with 100,000 active alerts\n");
        println!("| measure | value |");
        println!("|---|---|");
        let listing_rss = rss_mib(pid);
        let loaded_rss = settled_rss_mib(pid).await;
        println!("| RSS idle, first start (compiles the plugin) | {cold_rss:.1} MiB |");
        println!("| RSS idle, plugin from the cache | {idle_rss:.1} MiB |");
        println!("| RSS with 100K active alerts | {loaded_rss:.1} MiB |");
        println!("| memory per active alert | {:.1} KiB |", (loaded_rss - idle_rss) * 1024.0 / 100_000.0);
        println!("| RSS right after listing 10K of them (`GET /api/v2/alerts`), before the allocator returns what the listing freed | {listing_rss:.1} MiB |");

        let (daemon, restarted) = restart(daemon, 100_000).await;
        println!("| restart (kill -9 to serving, 100K alerts loaded) | {:.2} s |", restarted.as_secs_f64());
        println!("| RSS after restart | {:.1} MiB |", settled_rss_mib(daemon_pid(&daemon)).await);

        // The worst case: killed right after a burst, before the journal is folded into the
        // tables, so the start replays it first.
        load(daemon.addr, 30_000_000, 300, CONNECTIONS).await;
        let (_, restarted) = restart(daemon, 130_000).await;
        println!("| restart killed right after 30K more alerts (journal not folded), 130K loaded | {:.2} s |", restarted.as_secs_f64());
    });
}

/// Kill the daemon with SIGKILL and start it again on its store; the time until it serves again
/// with all `stored` alerts back (checked on team t3's tenth).
async fn restart(daemon: Daemon, stored: usize) -> (Daemon, Duration) {
    let started = Instant::now();
    let daemon = daemon.kill_9_and_restart(&daemon_binary(BIN)).expect("restarts");
    let restart = started.elapsed();
    let (_, listed) = belfry_tests::http_request("GET", &daemon.url("/api/v2/alerts?filter=team%3D%22t3%22"), "").await;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), stored / 10, "every alert is back");
    (daemon, restart)
}

/// The RSS once the allocator has returned what the last requests freed: it keeps freed memory
/// up to `belfry::alloc::PURGE_DELAY_MS` and returns it at its next collect.
async fn settled_rss_mib(pid: u32) -> f64 {
    let delay = Duration::from_millis(belfry::alloc::PURGE_DELAY_MS as u64);
    tokio::time::sleep(delay + 2 * belfry::alloc::COLLECT_EVERY).await;
    rss_mib(pid)
}

fn daemon_pid(daemon: &Daemon) -> u32 {
    daemon.pid()
}
