//! Belfry's hot path against the two candidate HA engines, on this machine: a batch of 100 alerts durable before the answer, a notification-log entry, a lease renewal with a fencing token.
//!
//! Starts each engine with `scripts/engines` in a temporary directory on loopback, runs each
//! operation sequentially (latency) and from 8 concurrent clients (throughput), and prints a
//! Markdown table for docs/HA.md. PostgreSQL commits with `synchronous_commit=on` (fsynced before
//! the reply); JetStream 2.9 acknowledges once a message is in the page cache (it has no setting
//! to sync each write), which the table says.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;

const ROUNDS: usize = 300;
const CLIENTS: usize = 8;
const BATCH: usize = 100;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A throwaway engine: started by scripts/engines, stopped on drop.
struct Engine {
    dir: PathBuf,
}

impl Engine {
    fn start(kind: &str, port: u16) -> Engine {
        let dir = PathBuf::from(
            String::from_utf8(Command::new("mktemp").args(["-d", "/tmp/belfry-engine.XXXXXX"]).output().unwrap().stdout).unwrap().trim(),
        );
        let status = Command::new("bash")
            .arg(repository().join("scripts/engines"))
            .arg(format!("start-{kind}"))
            .arg(&dir)
            .arg(port.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "scripts/engines start-{kind} failed");
        Engine { dir }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(repository().join("scripts/engines")).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An alert as Belfry stores it, about the size of a Prometheus alert with a few labels.
fn alert(i: usize) -> serde_json::Value {
    serde_json::json!({
        "labels": {"alertname": "DiskFull", "instance": format!("host-{i}:9100"), "job": "node", "severity": "warning", "cluster": "eu-1"},
        "annotations": {"summary": format!("host-{i} disk at 97%"), "runbook_url": "https://runbooks.example/disk"},
        "startsAt": "2026-12-08T10:00:00Z", "endsAt": "2026-12-08T10:05:00Z", "generatorURL": "http://prometheus.example/graph"
    })
}

/// p50 and p99 of `samples`, in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)].as_secs_f64() * 1e3;
    (at(0.50), at(0.99))
}

struct Row {
    engine: &'static str,
    operation: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    per_second: f64,
    unit: &'static str,
}

/// Run `op` ROUNDS times in a row (latency), then from CLIENTS tasks at once for ROUNDS each
/// (throughput: operations per second times `per_op` units).
async fn measure<F, Fut>(engine: &'static str, operation: &'static str, unit: &'static str, per_op: usize, op: F) -> Row
where
    F: Fn(usize, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut samples = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let started = Instant::now();
        op(0, i).await;
        samples.push(started.elapsed());
    }
    let (p50_ms, p99_ms) = percentiles(samples);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let op = op.clone();
            tokio::spawn(async move {
                for i in 0..ROUNDS {
                    op(c + 1, i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let per_second = (CLIENTS * ROUNDS * per_op) as f64 / started.elapsed().as_secs_f64();
    Row { engine, operation, p50_ms, p99_ms, per_second, unit }
}

async fn postgres() -> Vec<Row> {
    let port = free_port();
    let _engine = Engine::start("postgres", port);
    let url = format!("host=127.0.0.1 port={port} user=belfry dbname=postgres");
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect to postgres");
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("postgres connection: {e}");
            }
        });
        client
    };
    let setup = connect().await;
    setup
        .batch_execute(
            "CREATE TABLE alerts (tenant text, fingerprint text, body jsonb NOT NULL, PRIMARY KEY (tenant, fingerprint));
             CREATE TABLE notify_log (tenant text, group_key text, entry jsonb NOT NULL, PRIMARY KEY (tenant, group_key));
             CREATE TABLE leases (name text PRIMARY KEY, holder text, expires timestamptz NOT NULL DEFAULT '-infinity', fence bigint NOT NULL DEFAULT 0);",
        )
        .await
        .unwrap();
    // One connection per client, as a pool would hand out; statements prepared once.
    let mut clients = Vec::new();
    for c in 0..=CLIENTS {
        let client = connect().await;
        setup.execute("INSERT INTO leases (name) VALUES ($1)", &[&format!("tenant-{c}")]).await.unwrap();
        let upsert = client
            .prepare(
                "INSERT INTO alerts (tenant, fingerprint, body) SELECT $1, f, b FROM UNNEST($2::text[], $3::jsonb[]) AS u(f, b)
                 ON CONFLICT (tenant, fingerprint) DO UPDATE SET body = EXCLUDED.body",
            )
            .await
            .unwrap();
        let log = client
            .prepare(
                "INSERT INTO notify_log (tenant, group_key, entry) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant, group_key) DO UPDATE SET entry = EXCLUDED.entry",
            )
            .await
            .unwrap();
        let renew = client
            .prepare(
                "UPDATE leases SET holder = $1, expires = now() + make_interval(secs => 5),
                     fence = CASE WHEN holder = $1 THEN fence ELSE fence + 1 END
                 WHERE name = $2 AND (holder = $1 OR expires < now()) RETURNING fence",
            )
            .await
            .unwrap();
        clients.push(std::sync::Arc::new((client, upsert, log, renew)));
    }
    let bodies: std::sync::Arc<Vec<serde_json::Value>> = std::sync::Arc::new((0..BATCH).map(alert).collect());
    let mut rows = Vec::new();
    let c = clients.clone();
    let b = bodies.clone();
    rows.push(
        measure("PostgreSQL 15", "100 alerts, one statement, durable", "alerts/s", BATCH, move |client, i| {
            let (c, b) = (c[client].clone(), b.clone());
            async move {
                let fps: Vec<String> = (0..BATCH).map(|k| format!("{:016x}", (i * BATCH + k) as u64 * 2654435761)).collect();
                c.0.execute(&c.1, &[&format!("tenant-{client}"), &fps, &*b]).await.unwrap();
            }
        })
        .await,
    );
    let c = clients.clone();
    rows.push(
        measure("PostgreSQL 15", "a notification-log entry", "entries/s", 1, move |client, i| {
            let c = c[client].clone();
            async move {
                let entry = serde_json::json!({"firing": [1, 2, 3], "resolved": [], "at": "2026-12-08T10:00:00Z"});
                c.0.execute(&c.2, &[&format!("tenant-{client}"), &format!("web/alertname:{{alertname=\"A{}\"}}", i % 50), &entry])
                    .await
                    .unwrap();
            }
        })
        .await,
    );
    let c = clients.clone();
    rows.push(
        measure("PostgreSQL 15", "a lease renewal (fenced)", "renewals/s", 1, move |client, _| {
            let c = c[client].clone();
            async move {
                let fence = c.0.query_opt(&c.3, &[&format!("replica-{client}"), &format!("tenant-{client}")]).await.unwrap();
                assert!(fence.is_some(), "the holder renews its own lease");
            }
        })
        .await,
    );
    rows
}

async fn nats() -> Vec<Row> {
    let port = free_port();
    let _engine = Engine::start("nats", port);
    let client = async_nats::connect(format!("nats://127.0.0.1:{port}")).await.expect("connect to nats");
    let js = async_nats::jetstream::new(client.clone());
    // Streams created with the JetStream API's own request: async-nats 0.52 cannot parse 2.9's
    // answer to its stream-info call ("data did not match any variant of untagged enum
    // Response"), so its stream and KV handles are not used; a KV put is a publish to
    // `$KV.<bucket>.<key>`, a KV compare-and-set one with `Nats-Expected-Last-Subject-Sequence`.
    for (name, config) in [
        (
            "ALERTS",
            serde_json::json!({"name": "ALERTS", "subjects": ["alerts.>"], "storage": "file", "max_msgs_per_subject": 1, "num_replicas": 1}),
        ),
        (
            "KV_notify_log",
            serde_json::json!({"name": "KV_notify_log", "subjects": ["$KV.notify_log.>"], "storage": "file", "max_msgs_per_subject": 1, "allow_rollup_hdrs": true, "deny_delete": true, "discard": "new", "allow_direct": true, "num_replicas": 1}),
        ),
        (
            "KV_leases",
            serde_json::json!({"name": "KV_leases", "subjects": ["$KV.leases.>"], "storage": "file", "max_msgs_per_subject": 1, "max_age": 5_000_000_000u64, "allow_rollup_hdrs": true, "deny_delete": true, "discard": "new", "allow_direct": true, "num_replicas": 1}),
        ),
    ] {
        let answer = client.request(format!("$JS.API.STREAM.CREATE.{name}"), config.to_string().into()).await.expect("stream create");
        let answer: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap();
        assert!(answer.get("error").is_none(), "{name}: {answer}");
    }
    let bodies: std::sync::Arc<Vec<Bytes>> = std::sync::Arc::new((0..BATCH).map(|i| Bytes::from(alert(i).to_string())).collect());
    let mut rows = Vec::new();
    let (j, b) = (js.clone(), bodies.clone());
    rows.push(
        measure("NATS JetStream 2.9", "100 alerts, acks awaited (page cache, not fsynced)", "alerts/s", BATCH, move |client, i| {
            let (j, b) = (j.clone(), b.clone());
            async move {
                let mut acks = Vec::with_capacity(BATCH);
                for (k, body) in b.iter().enumerate() {
                    let subject = format!("alerts.tenant-{client}.{:016x}", (i * BATCH + k) as u64 * 2654435761);
                    acks.push(j.publish(subject, body.clone()).await.unwrap());
                }
                for ack in acks {
                    ack.await.unwrap();
                }
            }
        })
        .await,
    );
    let l = js.clone();
    rows.push(
        measure("NATS JetStream 2.9", "a notification-log entry (KV put)", "entries/s", 1, move |client, i| {
            let l = l.clone();
            async move {
                let entry = Bytes::from_static(br#"{"firing":[1,2,3],"resolved":[],"at":"2026-12-08T10:00:00Z"}"#);
                l.publish(format!("$KV.notify_log.tenant-{client}.group-{}", i % 50), entry).await.unwrap().await.unwrap();
            }
        })
        .await,
    );
    let mut revisions = Vec::new();
    for c in 0..=CLIENTS {
        let ack = js.publish(format!("$KV.leases.tenant-{c}"), Bytes::from(format!("replica-{c}"))).await.unwrap().await.unwrap();
        revisions.push(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(ack.sequence)));
    }
    let (l, r) = (js.clone(), std::sync::Arc::new(revisions));
    rows.push(
        measure("NATS JetStream 2.9", "a lease renewal (KV compare-and-set)", "renewals/s", 1, move |client, _| {
            let (l, r) = (l.clone(), r.clone());
            async move {
                let last = r[client].load(std::sync::atomic::Ordering::SeqCst);
                let publish = async_nats::jetstream::message::PublishMessage::build()
                    .payload(Bytes::from(format!("replica-{client}")))
                    .expected_last_subject_sequence(last);
                let ack = l
                    .send_publish(format!("$KV.leases.tenant-{client}"), publish)
                    .await
                    .unwrap()
                    .await
                    .expect("the holder renews its own lease");
                r[client].store(ack.sequence, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .await,
    );
    rows
}

#[tokio::main]
async fn main() {
    let mut rows = postgres().await;
    rows.extend(nats().await);
    println!("| engine | operation | sequential p50 | p99 | {CLIENTS} clients at once |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("| {} | {} | {:.2} ms | {:.2} ms | {:.0} {} |", r.engine, r.operation, r.p50_ms, r.p99_ms, r.per_second, r.unit);
    }
}
