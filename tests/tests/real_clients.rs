//! The real clients against Belfry: amtool (Alertmanager 0.25's CLI) and Prometheus as the alert sender.
//!
//! `scripts/test` installs them from Debian (`prometheus-alertmanager`, `prometheus`).

use std::process::Command;
use std::time::{Duration, Instant};

use belfry_tests::{Daemon, HttpSink, PATIENCE, webhook_daemon_config};

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");

fn config(sink: &HttpSink) -> String {
    webhook_daemon_config("team-hook", sink, "")
}

/// Run a client tool; panics with its output if it fails or is missing.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}); `bash scripts/test` installs it from Debian"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{tool} {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test]
async fn amtool_works_against_belfry_unchanged() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &config(&sink)).expect("daemon starts");
    let url = format!("--alertmanager.url=http://{}", daemon.addr);
    let amtool = |args: &[&str]| {
        let mut all = vec![url.as_str()];
        all.extend_from_slice(args);
        run("amtool", &all)
    };

    amtool(&["alert", "add", "alertname=AmtoolTest", "service=db", "--annotation=summary=hello"]);
    assert_eq!(sink.wait_for(1).await[0].json()["commonLabels"]["alertname"], "AmtoolTest");
    let listed: serde_json::Value = serde_json::from_str(&amtool(&["alert", "query", "-o", "json"])).unwrap();
    assert_eq!(listed[0]["labels"]["service"], "db");
    assert_eq!(listed[0]["annotations"]["summary"], "hello");
    assert!(amtool(&["alert", "query", "service=db"]).contains("AmtoolTest"));
    assert!(!amtool(&["alert", "query", "service=web"]).contains("AmtoolTest"));

    let id = amtool(&["silence", "add", "-a", "alice", "-c", "maintenance", "-d", "1h", "alertname=AmtoolTest"]).trim().to_string();
    assert_eq!(id.len(), 36, "a silence id: {id}");
    assert_eq!(amtool(&["silence", "query", "-q"]).trim(), id);
    let silenced: serde_json::Value = serde_json::from_str(&amtool(&["alert", "query", "--silenced", "-o", "json"])).unwrap();
    assert_eq!(silenced[0]["status"]["silencedBy"][0], id.as_str());
    amtool(&["silence", "expire", &id]);
    assert_eq!(amtool(&["silence", "query", "--expired", "-q"]).trim(), id);
    assert!(amtool(&["silence", "query", "-q"]).trim().is_empty());
    assert!(amtool(&["config", "show"]).contains("team-hook"));
}

#[tokio::test]
async fn prometheus_sends_its_alerts_to_belfry_unchanged() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &config(&sink)).expect("daemon starts");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n- name: belfry\n  interval: 1s\n  rules:\n  - alert: AlwaysFiring\n    expr: vector(1)\n    labels: {severity: page}\n    annotations: {summary: from prometheus}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{evaluation_interval: 1s}}\nrule_files: [rules.yml]\nalerting:\n  alertmanagers:\n  - static_configs: [{{targets: ['{}']}}]\n",
            daemon.addr
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg("--web.listen-address=127.0.0.1:0")
        // Prometheus discovers Belfry ~5 s after start, and re-sends firing alerts every
        // resend-delay (1 min by default): 1 s gets the first alert through quickly, and
        // exercises Belfry's dedup of re-sends for real.
        .arg("--rules.alert.resend-delay=1s")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus runs; `bash scripts/test` installs it from Debian");
    let got = sink.wait_for(1).await;
    let payload = got[0].json();
    assert_eq!(payload["commonLabels"]["alertname"], "AlwaysFiring");
    assert_eq!(payload["commonLabels"]["severity"], "page");
    assert_eq!(payload["commonAnnotations"]["summary"], "from prometheus");
    assert!(payload["alerts"][0]["generatorURL"].as_str().unwrap().contains("vector"));
    // Prometheus re-sends the firing alert every evaluation: still one alert, one notification.
    let deadline = Instant::now() + Duration::from_secs(3).min(PATIENCE);
    while Instant::now() < deadline {
        let (_, listed) = belfry_tests::http_request("GET", &daemon.url("/api/v2/alerts"), "").await;
        let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(sink.requests().len(), 1);
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}
