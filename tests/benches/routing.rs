//! Routing and grouping: Rhai evaluations per second, 20,000 unique alerts to delivered, idle CPU with 20K live groups, end-to-end latency at 10K alerts/s, script reload latency; the burst and idle measures against Alertmanager too.
//!
//! Run: `cargo bench -p belfry-tests --bench routing` (release, 2 cores here). The daemon is the
//! real binary in its own process (`BELFRY_BENCH_DAEMON` names another build of it, such as
//! `scripts/release`'s), delivering through the webhook plugin to an HTTP sink in this process.
//! The burst runs in rounds (`BELFRY_BENCH_BURSTS`, 5), each on a fresh daemon and, where
//! Alertmanager is installed (Debian's `prometheus-alertmanager`), then on a fresh Alertmanager,
//! so that the ratio compares runs at the same machine speed; the idle measure runs against it
//! last. Figures go to docs/BENCHMARKS.md.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use belfry::alert::Alert;
use belfry::route::{RouteOptions, Router, RouterSpec};
use belfry_tests::load::{burst_config, connect, cpu_seconds, daemon_binary, percentile, post_alerts, post_over};
use belfry_tests::{Daemon, HttpSink};
use bytes::Bytes;

// The daemon's allocator here too: the route evaluations measured in this process run on what
// the daemon's run on (mimalloc, with the scripts' memory meter).
belfry::daemon_allocator!();

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");
const EXAMPLE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/multi-tenant/tenants/payments/route.rhai");

fn alert(labels: &[(&str, &str)]) -> Alert {
    Alert {
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        annotations: [("summary".to_string(), "p99 latency above 2s".to_string())].into_iter().collect(),
        starts_at: chrono::Utc::now(),
        ends_at: None,
        generator_url: String::new(),
    }
}

/// Evaluations per second of the 7-rule example script on one core, against the same
/// alerts with no script (the fixed cost of routing).
fn route_evaluations() {
    let spec = |script: Option<&str>| RouterSpec {
        tenant: "payments".into(),
        fallback: "payments-chat".into(),
        defaults: RouteOptions::default(),
        receivers: ["payments-oncall", "payments-chat", "payments-db"].iter().map(|s| s.to_string()).collect(),
        time_intervals: HashSet::from(["weekend".to_string()]),
        escalation_policies: HashSet::from(["payments-critical".to_string()]),
        script: script.map(Into::into),
    };
    let common = [("cluster", "eu-1"), ("instance", "10.0.0.7:9100"), ("job", "node")];
    let variants: Vec<Alert> = [
        vec![("alertname", "ApiDown"), ("severity", "critical")],
        vec![("alertname", "ReplicationLag"), ("service", "postgres"), ("severity", "warning")],
        vec![("alertname", "Slow"), ("severity", "warning"), ("component", "card-processor")],
        vec![("alertname", "Slow"), ("env", "staging"), ("severity", "warning")],
        vec![("alertname", "CertExpiry"), ("severity", "info")],
        vec![("alertname", "DiskFilling"), ("severity", "warning")],
        vec![("alertname", "Watchdog")],
    ]
    .into_iter()
    .map(|mut v| {
        v.extend(common);
        alert(&v)
    })
    .collect();
    let now = chrono::Utc::now();
    let rate = |router: &Router| {
        for a in &variants {
            std::hint::black_box(router.route(a, now));
        }
        let n = 300_000;
        let started = Instant::now();
        for i in 0..n {
            std::hint::black_box(router.route(&variants[i % variants.len()], now));
        }
        n as f64 / started.elapsed().as_secs_f64()
    };
    let scripted = Router::build(spec(Some(EXAMPLE_SCRIPT))).expect("the example compiles and passes its tests");
    let plain = Router::build(spec(None)).unwrap();
    let (with_script, without) = (rate(&scripted), rate(&plain));
    println!("## Routing script evaluation (one core)\n");
    println!("| router | evaluations/s | per alert |");
    println!("|---|---|---|");
    println!("| examples/multi-tenant/tenants/payments/route.rhai (7 rules) | {with_script:.0} | {:.2} µs |", 1e6 / with_script);
    println!("| no script (the [route] receiver) | {without:.0} | {:.2} µs |", 1e6 / without);
}

/// Unique alerts `first..first + n`, each its own group; `sent_us` carries the send time.
fn batch(first: usize, n: usize, sent_us: u128) -> Bytes {
    let alerts: Vec<String> = (first..first + n)
        .map(|i| {
            format!(
                r#"{{"labels":{{"alertname":"HighLatency","instance":"10.{}.{}.{}:9100","job":"node","severity":"warning","sent_us":"{sent_us}"}},"annotations":{{"summary":"p99 latency above 2s"}},"startsAt":"2026-11-23T10:00:00Z","endsAt":"2099-01-01T00:00:00Z"}}"#,
                i / 65536,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect();
    Bytes::from(format!("[{}]", alerts.join(",")))
}

async fn wait_for_requests(sink: &HttpSink, n: usize) {
    while sink.count() < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A `key=<number>` field of the last log line containing `marker`, once there are more than `before` such lines.
fn logged_ms(daemon: &Daemon, marker: &str, before: usize, key: &str) -> Option<Duration> {
    let log = daemon.stderr();
    if log.matches(marker).count() <= before {
        return None;
    }
    let line = log.lines().rev().find(|l| l.contains(marker)).unwrap();
    let ms: f64 = line.split(&format!("{key}=")).nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    Some(Duration::from_secs_f64(ms / 1e3))
}

/// Rewrite the script `times` times; for each, from the daemon's log: the time from the
/// file's write to the new script routing (`since_write_ms`), and, with alerts held, how
/// long re-routing them all took after that (`reroute_ms`).
async fn reload_latencies(daemon: &Daemon, times: usize, held: bool) -> (Vec<Duration>, Vec<Duration>) {
    let (mut in_effect, mut rerouted) = (Vec::new(), Vec::new());
    for i in 0..times {
        let log = daemon.stderr();
        let (before, before_rerouted) = (log.matches("routing script reloaded").count(), log.matches("held alerts re-routed").count());
        daemon.write_file("route.rhai", Some(&format!("// revision {i}\nfn route(alert) {{ () }}\n")));
        loop {
            if let Some(d) = logged_ms(daemon, "routing script reloaded", before, "since_write_ms") {
                in_effect.push(d);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if held {
            loop {
                if let Some(d) = logged_ms(daemon, "held alerts re-routed", before_rerouted, "reroute_ms") {
                    rerouted.push(d);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    in_effect.sort();
    rerouted.sort();
    (in_effect, rerouted)
}

fn main() {
    route_evaluations();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let sink = HttpSink::start().await;
        let bin = daemon_binary(BIN);
        println!("\nThe daemon: {bin}");
        let start_daemon = || {
            Daemon::start_with_files(
                &bin,
                &burst_config(&sink, Path::new(concat!(env!("CARGO_TARGET_TMPDIR"), "/routing-bench-cache"))),
                &[("route.rhai", "fn route(alert) { () }")],
            )
            .expect("daemon starts")
        };
        let e2e_only = std::env::var_os("BELFRY_BENCH_E2E_ONLY").is_some();
        let alertmanager = if e2e_only { None } else { alertmanager_binary() };

        // 20,000 unique alerts, each its own group, from the first POST to all delivered: a
        // round is a fresh daemon's burst, then the same on a fresh Alertmanager (where
        // installed), so that both meet the machine at the same speed. The last round's daemon
        // stays for the measures after it.
        let rounds = if e2e_only { 1 } else { burst_rounds() };
        let (mut ours, mut theirs, mut commits) = (Vec::new(), Vec::new(), Commits::default());
        let mut empty_reload = Vec::new();
        let mut daemon = None;
        for round in 0..rounds {
            drop(daemon.take());
            let fresh = start_daemon();
            if round + 1 == rounds {
                empty_reload = reload_latencies(&fresh, 10, false).await.0;
            }
            if !e2e_only {
                let before = Commits::read(&fresh).await;
                ours.push(burst(fresh.addr, &sink, fresh.pid()).await);
                commits.add(&Commits::read(&fresh).await.since(&before));
                if let Some(am) = &alertmanager {
                    theirs.push(alertmanager_burst(am).await);
                }
            }
            daemon = Some(fresh);
        }
        let daemon = daemon.expect("at least one round");
        let addr = daemon.addr;
        let epoch = Instant::now();
        if !e2e_only {
            if let Some(am) = &alertmanager {
                println!("\nAlertmanager beside it: {} ({})", alertmanager_version(am), am.display());
            }
            print_bursts(&ours, &theirs, &commits);
        }
        if std::env::var_os("BELFRY_BENCH_BURST_ONLY").is_some() {
            return;
        }

        // Idle: 20K live groups with a 1 s group_interval and nothing changing.
        let idle = idle_cores(daemon.pid(), if e2e_only { 1 } else { 20 }).await;
        println!("\n## Idle\n");
        println!("| measure | value |");
        println!("|---|---|");
        println!("| daemon CPU while idle with 20,000 live groups (group_interval 1s, 20 s window) | {idle:.4} cores |");

        // End to end at 10,000 alerts/s: 100 new alerts every 10 ms for 5 s.
        let before = sink.count();
        let mut sender = connect(addr).await;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        // BELFRY_BENCH_PER_TICK=10 measures the latency at 1K alerts/s.
        let per_tick: usize = std::env::var("BELFRY_BENCH_PER_TICK").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
        let load_start = Instant::now();
        let mut answered_at = std::collections::HashMap::new();
        let mut post_latencies = Vec::new();
        for p in 0..500 {
            tick.tick().await;
            let sent_us = epoch.elapsed().as_micros();
            post_latencies.push(post_alerts(&mut sender, addr, batch(1_000_000 + p * per_tick, per_tick, sent_us)).await);
            answered_at.insert(sent_us as u64, epoch.elapsed());
        }
        post_latencies.sort();
        let offered = (500 * per_tick) as f64 / load_start.elapsed().as_secs_f64();
        wait_for_requests(&sink, before + 500 * per_tick).await;
        let (mut latencies, mut after_answer): (Vec<Duration>, Vec<Duration>) = sink.requests()[before..]
            .iter()
            .map(|r| {
                let sent: u64 = r.json()["alerts"][0]["labels"]["sent_us"].as_str().unwrap().parse().unwrap();
                let received = r.received.duration_since(epoch);
                (received - Duration::from_micros(sent), received.saturating_sub(answered_at[&sent]))
            })
            .unzip();
        latencies.sort();
        after_answer.sort();
        println!("\n## End to end at {offered:.0} alerts/s (group_wait 0, each alert its own group)\n");
        println!("| | POST sent to webhook request at the sink | of which: the POST (durable commit) | POST answered to webhook request |");
        println!("|---|---|---|---|");
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        for (name, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
            let (a, b, c) = (percentile(&latencies, p), percentile(&post_latencies, p), percentile(&after_answer, p));
            println!("| {name} | {} | {} | {} |", ms(a), ms(b), ms(c));
        }

        let held = daemon_alerts(&daemon).await;
        let (loaded_reload, rerouted) = reload_latencies(&daemon, 10, true).await;
        println!("\n## Script reload: file written to new routes in effect (inotify, debounce, compile, self-tests, swap)\n");
        println!("| alerts held | median | max |");
        println!("|---|---|---|");
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        for (n, l) in [(0, &empty_reload), (held, &loaded_reload)] {
            println!("| {n} | {:.1} ms | {:.1} ms |", ms(percentile(l, 0.5)), ms(*l.last().unwrap()));
        }
        println!(
            "\nThen, in the background, every held alert re-routed by the new script: median {:.0} ms, max {:.0} ms ({held} alerts)",
            ms(percentile(&rerouted, 0.5)),
            ms(*rerouted.last().unwrap())
        );
        drop(daemon);
        if let Some(am) = &alertmanager {
            compare_idle_with_alertmanager(am, idle).await;
        }
    });
}

/// The daemon's journal commits so far, from `belfry_store_commit_duration_seconds` on
/// `/metrics`: were a burst to wait rather than compute, a slow disk would show here.
#[derive(Default)]
struct Commits {
    count: f64,
    sum: f64,
    over_10ms: f64,
    over_100ms: f64,
}

impl Commits {
    async fn read(daemon: &Daemon) -> Commits {
        let text = belfry_tests::http_request("GET", &daemon.url("/metrics"), "").await.1;
        let sample = |name: &str| {
            let series = format!("belfry_store_commit_duration_seconds{name}");
            belfry_tests::metric_sample(&text, &series).unwrap_or_else(|| panic!("no {series} in /metrics"))
        };
        let count = sample("_count");
        Commits {
            count,
            sum: sample("_sum"),
            over_10ms: count - sample("_bucket{le=\"0.01\"}"),
            over_100ms: count - sample("_bucket{le=\"0.1\"}"),
        }
    }

    fn add(&mut self, more: &Commits) {
        self.count += more.count;
        self.sum += more.sum;
        self.over_10ms += more.over_10ms;
        self.over_100ms += more.over_100ms;
    }

    fn since(&self, before: &Commits) -> Commits {
        Commits {
            count: self.count - before.count,
            sum: self.sum - before.sum,
            over_10ms: self.over_10ms - before.over_10ms,
            over_100ms: self.over_100ms - before.over_100ms,
        }
    }
}

/// What the 20,000-alert burst took: wall times from the first POST, and the CPU of the
/// server under test and of this bench (client and sink).
#[derive(Default)]
struct Burst {
    accepted: Duration,
    delivered: Duration,
    server_cpu: f64,
    bench_cpu: f64,
}

/// POST 20,000 unique alerts (200 POSTs of 100 over 4 keep-alive connections) to the server at
/// `addr` (process `pid`) and wait until `sink` has 20,000 more requests.
async fn burst(addr: SocketAddr, sink: &HttpSink, pid: u32) -> Burst {
    let bodies: Vec<Bytes> = (0..200).map(|p| batch(p * 100, 100, 0)).collect();
    let before = sink.count();
    let (server_cpu, bench_cpu) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    let started = Instant::now();
    post_over(addr, &bodies, 4).await;
    let accepted = started.elapsed();
    wait_for_requests(sink, before + 20_000).await;
    Burst {
        accepted,
        delivered: started.elapsed(),
        server_cpu: cpu_seconds(pid) - server_cpu,
        bench_cpu: cpu_seconds(std::process::id()) - bench_cpu,
    }
}

/// The CPU process `pid` uses over `seconds`, after a second to settle, in cores.
async fn idle_cores(pid: u32, seconds: u64) -> f64 {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64()
}

/// Alertmanager, the program the issue's targets compare with, if this machine has it
/// (Debian's `prometheus-alertmanager`, which `scripts/test` installs for the client tests).
/// `BELFRY_BENCH_ALERTMANAGER` names another binary, or, empty, skips the comparison.
fn alertmanager_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BELFRY_BENCH_ALERTMANAGER") {
        return (!path.is_empty()).then(|| path.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| [dir.join("prometheus-alertmanager"), dir.join("alertmanager")]).find(|p| p.is_file())
}

/// An Alertmanager process with the same route as Belfry's above: every alert its own group
/// (`group_by: ['...']`), `group_wait: 0s`, `group_interval: 1s`, a webhook to the sink.
struct Alertmanager {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    async fn start(bin: &Path, sink: &HttpSink) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: hook\n  group_by: ['...']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 4h\n\
                 receivers:\n- name: hook\n  webhook_configs:\n  - url: '{}'\n    send_resolved: false\n",
                sink.url("/hook")
            ),
        )
        .unwrap();
        // A free port: Alertmanager does not report the one it was given for :0.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let child = std::process::Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start alertmanager");
        let am = Alertmanager { child, addr, _dir: dir };
        let ready = format!("http://{addr}/-/ready");
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() && belfry_tests::http_request("GET", &ready, "").await.0 == 200 {
                return am;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("alertmanager did not become ready on {addr}");
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many bursts the burst measure takes (`BELFRY_BENCH_BURSTS`, 5 unless set): one burst
/// on a virtual machine can meet a passing slowdown, so the figure is their median, with the range.
fn burst_rounds() -> usize {
    std::env::var("BELFRY_BENCH_BURSTS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(5)
}

/// The burst against a fresh Alertmanager with a sink of its own.
async fn alertmanager_burst(bin: &Path) -> Burst {
    let sink = HttpSink::start().await;
    let am = Alertmanager::start(bin, &sink).await;
    burst(am.addr, &sink, am.child.id()).await
}

fn alertmanager_version(bin: &Path) -> String {
    let version = std::process::Command::new(bin).arg("--version").output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&version).split_whitespace().nth(2).unwrap_or("?").to_string()
}

/// The median of `values` (the upper one of an even count), and their range.
fn median_and_range(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[0], values[values.len() - 1])
}

/// The bursts, round by round, then their medians; Alertmanager's beside them when it ran.
fn print_bursts(ours: &[Burst], theirs: &[Burst], commits: &Commits) {
    let per_alert = |cpu: f64| cpu * 1e6 / 20_000.0;
    let delivered = |b: &Burst| b.delivered.as_secs_f64();
    let accepted = |b: &Burst| b.accepted.as_secs_f64();
    let server_cpu = |b: &Burst| b.server_cpu;
    let bench_cpu = |b: &Burst| b.bench_cpu;
    let stat = |f: &dyn Fn(&Burst) -> f64, of: &[Burst]| median_and_range(of.iter().map(f).collect());
    println!("\n## 20,000 unique alerts (each its own group) to delivered through the webhook plugin\n");
    println!(
        "{} rounds, each a fresh daemon's burst{}:\n",
        ours.len(),
        if theirs.is_empty() { "" } else { ", then a fresh Alertmanager's" }
    );
    if theirs.is_empty() {
        println!("| round | first POST to the 20,000th webhook request | daemon CPU per alert |");
        println!("|---|---|---|");
    } else {
        println!(
            "| round | first POST to the 20,000th webhook request | daemon CPU per alert | Alertmanager | its CPU per alert | ratio |"
        );
        println!("|---|---|---|---|---|---|");
    }
    for (i, b) in ours.iter().enumerate() {
        print!("| {} | {:.3} s | {:.0} µs |", i + 1, delivered(b), per_alert(b.server_cpu));
        if let Some(a) = theirs.get(i) {
            print!(" {:.3} s | {:.0} µs | {:.1}x faster |", delivered(a), per_alert(a.server_cpu), delivered(a) / delivered(b));
        }
        println!();
    }
    println!("\nMedians over the rounds (range in brackets):\n");
    println!("| measure | value |");
    println!("|---|---|");
    let (median, low, high) = stat(&accepted, ours);
    println!("| all 200 POSTs answered | {median:.3} s ({low:.3}–{high:.3}) |");
    let (median, low, high) = stat(&delivered, ours);
    println!("| first POST to the 20,000th webhook request at the sink | {median:.3} s ({low:.3}–{high:.3}) |");
    let (cpu, low, high) = stat(&server_cpu, ours);
    println!(
        "| daemon CPU in that time (user + system) | {cpu:.2} core-seconds, {:.0} µs per alert ({:.0}–{:.0}) |",
        per_alert(cpu),
        per_alert(low),
        per_alert(high)
    );
    let (bench, _, _) = stat(&bench_cpu, ours);
    println!("| this bench's client and HTTP sink in that time | {bench:.2} core-seconds, {:.0} µs per alert |", per_alert(bench));
    println!(
        "| the store's journal commits in all the bursts (POSTs wait for theirs) | {}, mean {:.2} ms, {} over 10 ms, {} over 100 ms |",
        commits.count,
        commits.sum * 1e3 / commits.count.max(1.0),
        commits.over_10ms,
        commits.over_100ms
    );
    if !theirs.is_empty() {
        let (median, low, high) = stat(&delivered, theirs);
        println!("| Alertmanager: first POST to the 20,000th webhook request | {median:.3} s ({low:.3}–{high:.3}) |");
        let (cpu, _, _) = stat(&server_cpu, theirs);
        println!("| Alertmanager: its CPU per alert | {:.0} µs |", per_alert(cpu));
        let (ratio, low, high) = median_and_range(ours.iter().zip(theirs).map(|(b, a)| delivered(a) / delivered(b)).collect());
        println!("| Belfry faster, round by round | {ratio:.1}x ({low:.1}–{high:.1}) |");
    }
}

/// The idle measure against Alertmanager holding the same 20,000 groups, with the ratio. A
/// fresh one, burst again, rather than the last round's kept alive: idle, Alertmanager uses most
/// of a core, which would be taken from Belfry's measures that run in between.
async fn compare_idle_with_alertmanager(bin: &Path, ours: f64) {
    let sink = HttpSink::start().await;
    let am = Alertmanager::start(bin, &sink).await;
    burst(am.addr, &sink, am.child.id()).await;
    let theirs = idle_cores(am.child.id(), 20).await;
    println!("\n## Idle against Alertmanager {} ({})\n", alertmanager_version(bin), bin.display());
    println!("| measure | Belfry | Alertmanager | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| CPU while idle with 20,000 live groups (group_interval 1s, 20 s window) | {ours:.4} cores | {theirs:.4} cores | {:.0}x less |",
        theirs / ours
    );
}

async fn daemon_alerts(daemon: &Daemon) -> usize {
    let (_, body) = belfry_tests::http_request("GET", &daemon.url("/api/v2/alerts"), "").await;
    serde_json::from_str::<serde_json::Value>(&body).unwrap().as_array().unwrap().len()
}
