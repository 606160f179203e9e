//! The training workload of a profile-guided release build (`scripts/release`): the daemon's hot paths, driven the way production drives them.
//!
//! LLVM's profile-guided optimisation lays out and inlines a binary by what a run of its
//! instrumented build executed. That run is this workload: the 20,000-alert burst of the
//! routing bench, steady ingest, grouped alerts, a silence, resolves, the read API, a script
//! reload, then SIGTERM, on which the instrumented daemon writes its profile.

use std::time::Duration;

use bytes::Bytes;

use crate::load::{burst_config, connect, post_alerts, post_over};
use crate::{Daemon, HttpSink, http_request};

/// What one training run did, for its caller to check and print.
#[derive(Debug)]
pub struct Training {
    /// Webhook requests the sink received.
    pub delivered: usize,
    /// Of those, notifications of resolved alerts.
    pub resolved: usize,
    /// Of those, notifications of alerts the silence covers (none, if silences work).
    pub silenced: usize,
    /// Whether the daemon exited with success after SIGTERM.
    pub clean_exit: bool,
}

const SCRIPT: &str = r#"
fn route(alert) {
    if alert.labels.severity == "critical" {
        return #{ receiver: "hook", group_by: ["alertname", "cluster"] };
    }
    if matches(alert.labels.alertname, "^(Silenced|Disk.*)$") {
        return #{ receiver: "hook", group_by: ["alertname"] };
    }
    ()
}
"#;

/// Run the workload against the daemon binary `bin` with `burst` unique alerts (the routing
/// bench uses 20,000), then stop it with SIGTERM.
pub async fn train(bin: &str, burst: usize) -> Training {
    let sink = HttpSink::start().await;
    let config = burst_config(&sink, &std::env::temp_dir().join("belfry-pgo-cache"));
    let mut daemon = Daemon::start_with_files(bin, &config, &[("route.rhai", SCRIPT)]).expect("the daemon starts");
    let addr = daemon.addr;

    // The burst: unique alerts, each its own group, 100 per POST over 4 connections.
    post_over(addr, &batches_of_100("HighLatency", burst, None), 4).await;
    sink.wait_for(burst).await;

    // Steady ingest on one connection, and alerts that group (one notification per group).
    let mut sender = connect(addr).await;
    for tick in 0..20 {
        post_alerts(&mut sender, addr, alerts("Steady", "warning", 1_000_000 + tick * 10, 10, None)).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    post_alerts(&mut sender, addr, alerts("ApiDown", "critical", 0, 50, None)).await;
    post_alerts(&mut sender, addr, alerts("DiskFilling", "warning", 0, 50, None)).await;
    sink.wait_for(burst + 200 + 2).await;

    // A silence, and alerts it mutes.
    let now = chrono::Utc::now();
    let silence = serde_json::json!({
        "matchers": [{"name": "alertname", "value": "Silenced", "isRegex": false, "isEqual": true}],
        "startsAt": now.to_rfc3339(),
        "endsAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "createdBy": "pgo-train",
        "comment": "training",
    });
    assert_eq!(http_request("POST", &daemon.url("/api/v2/silences"), &silence.to_string()).await.0, 200);
    post_alerts(&mut sender, addr, alerts("Silenced", "warning", 0, 20, None)).await;

    // The read API and the metrics, as dashboards and amtool poll them.
    for path in ["/api/v2/alerts", "/api/v2/alerts/groups", "/api/v2/silences", "/api/v2/status", "/metrics", "/-/healthy", "/-/ready"] {
        assert_eq!(http_request("GET", &daemon.url(path), "").await.0, 200, "GET {path}");
    }

    // Resolves: the first tenth of the burst ends; each group sends its resolved notification.
    let ended = (burst / 10).max(1);
    let before = sink.count();
    post_over(addr, &batches_of_100("HighLatency", ended, Some(now)), 2).await;
    let (mut resolved, mut seen) = (0, before);
    while resolved < ended {
        let got = sink.wait_for(seen + 1).await;
        resolved += got[seen..].iter().filter(|r| r.json()["status"] == "resolved").count();
        seen = got.len();
    }

    // A script reload, as a tenant's edit triggers it.
    let reloads = daemon.stderr().matches("routing script reloaded").count();
    daemon.write_file("route.rhai", Some(&format!("// edited\n{SCRIPT}")));
    let deadline = std::time::Instant::now() + crate::PATIENCE;
    while daemon.stderr().matches("routing script reloaded").count() == reloads {
        assert!(std::time::Instant::now() < deadline, "the script's reload was never logged:\n{}", daemon.stderr());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let clean_exit = daemon.terminate().success();
    let requests = sink.requests();
    let needle = br#""alertname":"Silenced""#;
    let silenced = requests.iter().filter(|r| r.body.windows(needle.len()).any(|w| w == needle)).count();
    Training { delivered: requests.len(), resolved, silenced, clean_exit }
}

/// Alerts `0..n` named `alertname` (severity `warning`), in bodies of 100; resolved at `ended` if given.
fn batches_of_100(alertname: &str, n: usize, ended: Option<chrono::DateTime<chrono::Utc>>) -> Vec<Bytes> {
    (0..n).step_by(100).map(|first| alerts(alertname, "warning", first, (n - first).min(100), ended)).collect()
}

/// `n` alerts named `alertname` with numbered instances from `first`; resolved at `ended` if given.
fn alerts(alertname: &str, severity: &str, first: usize, n: usize, ended: Option<chrono::DateTime<chrono::Utc>>) -> Bytes {
    let ends_at = ended.map_or("2099-01-01T00:00:00Z".to_string(), |t| t.to_rfc3339());
    let alerts: Vec<String> = (first..first + n)
        .map(|i| {
            format!(
                r#"{{"labels":{{"alertname":"{alertname}","cluster":"eu-1","instance":"10.{}.{}.{}:9100","job":"node","severity":"{severity}"}},"annotations":{{"summary":"{alertname} on instance {i}"}},"startsAt":"2026-11-23T10:00:00Z","endsAt":"{ends_at}"}}"#,
                i / 65536,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect();
    Bytes::from(format!("[{}]", alerts.join(",")))
}
