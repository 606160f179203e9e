//! Delivery cost per isolation mode (no-op plugin = host overhead; webhook plugin into a local
//! no-op HTTP sink), the host's HTTP client after other work, and component load time cold vs
//! from the cache.
//!
//! Run: `cargo bench -p belfry-tests --bench delivery` (release build; 2 cores here).
//! Figures go to docs/BENCHMARKS.md. For profiling: `BELFRY_BENCH_QUICK=1` measures the default
//! isolation mode only; `BELFRY_BENCH_ONLY=<prefix>` only the rows whose plugin starts with it
//! (`host` for the HTTP client rows), and then no load times.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use belfry::plugin::{Allocator, Isolation};
use belfry::plugin::{Receiver, Runtime, RuntimeOptions};
use belfry_tests::load::cpu_seconds;
use belfry_tests::{misbehave_wasm, notification, spec, webhook_wasm};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

// The daemon's allocator (mimalloc, with the scripts' memory meter): the host's side of every
// delivery measured here runs on what the daemon's runs on.
belfry::daemon_allocator!();

/// Deliveries per measurement; enough for a stable mean, short enough for CI-sized machines.
const ITERATIONS: usize = 20_000;
const WARMUP: usize = 500;

struct Mode {
    name: &'static str,
    isolation: Isolation,
    allocator: Allocator,
}

const MODES: [Mode; 3] = [
    Mode { name: "per-receiver reuse (default)", isolation: Isolation::PerReceiver, allocator: Allocator::OnDemand },
    Mode { name: "per-delivery, on-demand alloc", isolation: Isolation::PerDelivery, allocator: Allocator::OnDemand },
    Mode { name: "per-delivery, pooling alloc", isolation: Isolation::PerDelivery, allocator: Allocator::Pooling },
];

fn runtime(allocator: Allocator, cache: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeOptions { cache_dir: cache.to_path_buf(), allocator, pool_slots: 64, profiler: Default::default() })
        .expect("runtime")
}

/// Start a sink that answers 200 and discards everything.
async fn noop_sink() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = service_fn(|_req| async { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok")))) });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

/// Mean µs per operation, operations/s and this process's CPU µs per operation (the plugin
/// host and the sink together): `op` run `ITERATIONS` times split over `tasks` concurrent
/// loops, after `WARMUP` runs.
async fn timed<F, Fut>(tasks: usize, op: F) -> (f64, f64, f64)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    for _ in 0..WARMUP {
        op().await;
    }
    let (started, cpu) = (Instant::now(), cpu_seconds(std::process::id()));
    let per_task = ITERATIONS / tasks;
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    op().await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(std::process::id()) - cpu;
    let total = (per_task * tasks) as f64;
    (elapsed * 1e6 / total, total / elapsed, cpu * 1e6 / total)
}

/// The row whose plugin's request the host answers itself (a preview's capture), no network.
const ONE_GET_ANSWERED: &str = "one GET, answered by the host (no network)";

/// What the baseline does before each request.
#[derive(Clone)]
enum Before {
    Nothing,
    Spin(Duration),
    Call(Arc<Receiver>),
}

/// One baseline request to the sink, after `before`.
fn send_op(
    outbound: &belfry::plugin::Outbound,
    request: &belfry::plugin::HttpRequest,
    before: Before,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Clone + Send + 'static {
    let (outbound, request) = (outbound.clone(), request.clone());
    let n = Arc::new(notification("bench", "Bench"));
    move || {
        let (outbound, request, before, n) = (outbound.clone(), request.clone(), before.clone(), n.clone());
        Box::pin(async move {
            match before {
                Before::Nothing => {}
                Before::Spin(d) => {
                    let started = Instant::now();
                    while started.elapsed() < d {
                        std::hint::spin_loop();
                    }
                }
                Before::Call(receiver) => receiver.deliver(&n).await.map(|_| ()).expect("no-op delivery"),
            }
            outbound.send(request).await.expect("baseline request");
        })
    }
}

/// Deliveries through `receiver`; each must succeed, or (`expect_refusal`) fail.
async fn measure(receiver: Arc<Receiver>, tasks: usize, expect_refusal: bool) -> (f64, f64, f64) {
    let n = Arc::new(notification(receiver.name(), "Bench"));
    timed(tasks, move || {
        let (receiver, n) = (receiver.clone(), n.clone());
        async move {
            assert_eq!(receiver.deliver(&n).await.is_err(), expect_refusal, "unexpected delivery outcome");
        }
    })
    .await
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let cache = tempfile::tempdir().unwrap();
        let sink = noop_sink().await;

        println!("## Delivery cost ({ITERATIONS} single-alert deliveries after {WARMUP} warm-up)\n");
        println!("| plugin | isolation | tasks | µs/delivery | deliveries/s | CPU µs/delivery |");
        println!("|---|---|---|---|---|---|");
        // BELFRY_BENCH_QUICK=1: the default mode only (for profiling).
        let quick = std::env::var_os("BELFRY_BENCH_QUICK").is_some();
        for mode in MODES.iter().take(if quick { 1 } else { MODES.len() }) {
            let runtime = runtime(mode.allocator, cache.path());
            let noop = runtime.load("misbehave", misbehave_wasm(), None).await.unwrap();
            let webhook = runtime.load("webhook", webhook_wasm(), None).await.unwrap();
            for (plugin_name, plugin, config, hosts) in [
                ("no-op (host overhead)", &noop, "mode = 'noop'".to_string(), vec![]),
                ("webhook → local sink", &webhook, format!("url = 'http://{sink}/'"), vec![sink.to_string()]),
                ("webhook, no network (host refuses the request)", &webhook, format!("url = 'http://{sink}/'"), vec![]),
                ("one GET → local sink", &noop, format!("mode = 'fetch'\nurl = 'http://{sink}/'"), vec![sink.to_string()]),
                (ONE_GET_ANSWERED, &noop, format!("mode = 'fetch'\nurl = 'http://{sink}/'"), vec![sink.to_string()]),
            ] {
                if std::env::var("BELFRY_BENCH_ONLY").is_ok_and(|only| !plugin_name.starts_with(only.as_str())) {
                    continue;
                }
                let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
                let mut s = spec("bench", &config, &hosts);
                if plugin_name == ONE_GET_ANSWERED {
                    s.capture = Some(Default::default());
                }
                s.isolation = mode.isolation;
                s.limits.cpu_ms = 1_000;
                let receiver = Arc::new(plugin.bind(s).await.map_err(|_| "bind").unwrap());
                for tasks in [1, 2] {
                    let (us, per_sec, cpu) = measure(receiver.clone(), tasks, hosts.is_empty() && plugin_name.starts_with("webhook")).await;
                    println!("| {plugin_name} | {} | {tasks} | {us:.1} | {per_sec:.0} | {cpu:.1} |", mode.name);
                }
            }
        }

        // Baseline: the host's HTTP client alone, same JSON body size, no plugin involved.
        let outbound = belfry::plugin::Outbound::new(belfry::plugin::HttpGrant {
            capture: None,
            receiver: "bench".into(),
            allowed_hosts: vec![belfry::plugin::HostPattern::parse(&sink.to_string()).unwrap()],
            allow_private: true,
            timeout: Duration::from_secs(5),
            max_response_bytes: 1 << 20,
        });
        let request = belfry::plugin::HttpRequest {
            method: belfry::plugin::HttpMethod::Post,
            url: format!("http://{sink}/"),
            headers: vec![("content-type".into(), "application/json".into())],
            body: vec![b' '; 700],
        };
        if std::env::var("BELFRY_BENCH_ONLY").is_ok_and(|only| !"host HTTP client".starts_with(only.as_str())) {
            return;
        }
        for tasks in [1, 2] {
            let (us, per_sec, cpu) = timed(tasks, send_op(&outbound, &request, Before::Nothing)).await;
            println!("| host HTTP client alone → local sink (baseline) | - | {tasks} | {us:.1} | {per_sec:.0} | {cpu:.1} |");
        }

        // The same requests, each after other work: does a plugin call slow the host's network
        // path down beyond its own cost? Spinning for as long as a no-op call is the control.
        let noop = runtime(Allocator::OnDemand, cache.path()).load("misbehave", misbehave_wasm(), None).await.unwrap();
        let noop = Arc::new(noop.bind(spec("bench", "mode = 'noop'", &[])).await.map_err(|_| "bind").unwrap());
        println!("\n## The host's HTTP client after other work (one task)\n");
        println!("| before each request | µs/request | requests/s | CPU µs/request |");
        println!("|---|---|---|---|");
        for (name, before) in [
            ("nothing", Before::Nothing),
            ("6 µs of spinning", Before::Spin(Duration::from_micros(6))),
            ("a no-op plugin call", Before::Call(noop)),
        ] {
            let (us, per_sec, cpu) = timed(1, send_op(&outbound, &request, before)).await;
            println!("| {name} | {us:.1} | {per_sec:.0} | {cpu:.1} |");
        }

        println!("\n## Component load time\n");
        println!("| component | size | compile (cold) | from cache | ratio |");
        println!("|---|---|---|---|---|");
        let runtime = runtime(Allocator::OnDemand, cache.path());
        for path in [webhook_wasm(), misbehave_wasm()] {
            let bytes = std::fs::read(path).unwrap();
            let cold = best_of(5, || {
                runtime.compile_uncached(&bytes).unwrap();
            });
            let fresh_cache = tempfile::tempdir().unwrap();
            let cached_runtime = runtime_with_cache(fresh_cache.path());
            cached_runtime.load("plugin", path, None).await.unwrap(); // fills the cache
            let mut warm = Duration::MAX;
            for _ in 0..20 {
                let p = cached_runtime.load("plugin", path, None).await.unwrap();
                assert_eq!(p.source, belfry::plugin::LoadSource::Cached);
                warm = warm.min(p.load_time);
            }
            println!(
                "| {} | {} KiB | {:.1} ms | {:.2} ms | {:.0}x |",
                path.file_name().unwrap().to_string_lossy(),
                bytes.len() / 1024,
                cold.as_secs_f64() * 1e3,
                warm.as_secs_f64() * 1e3,
                cold.as_secs_f64() / warm.as_secs_f64()
            );
        }
    });
}

fn runtime_with_cache(dir: &std::path::Path) -> Runtime {
    runtime(Allocator::OnDemand, dir)
}

fn best_of(n: usize, mut f: impl FnMut()) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}
