//! Black-box: `belfry serve` as a process on 127.0.0.1:0, alerts in over HTTP, webhook payloads out to a local receiver.

use belfry_tests::{Daemon, HttpSink, PATIENCE, http_request, metric_sample, misbehave_wasm, webhook_daemon_config, webhook_wasm};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");

/// A config with the webhook plugin pointed at `sink`; `extra` is appended.
fn config(sink: &HttpSink, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
external_url = "http://belfry.example:9093"

[runtime]
cache_dir = "cache"

[plugins.webhook]
path = "{webhook}"

[plugins.misbehave]
path = "{misbehave}"

[[receivers]]
name = "team-hook"
plugin = "webhook"
allowed_hosts = ["{host}"]
allow_private_addresses = true
config = {{ url = "{url}", headers = {{ X-Source = "belfry" }} }}

[route]
receiver = "team-hook"
group_by = ["..."]
group_wait = "0s"
group_interval = "50ms"
{extra}
"#,
        webhook = webhook_wasm().display(),
        misbehave = misbehave_wasm().display(),
        host = sink.host(),
        url = sink.url("/hook"),
    )
}

#[tokio::test]
async fn posted_alerts_arrive_as_alertmanager_webhook_payloads() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &config(&sink, "")).expect("daemon starts");
    let url = daemon.url("/api/v2/alerts");
    let (status, body) = http_request(
        "POST",
        &url,
        r#"[
          {"labels":{"alertname":"HighLatency","service":"api","severity":"page"},
           "annotations":{"summary":"p99 above 2s","runbook_url":"http://runbooks/latency"},
           "startsAt":"2026-11-23T10:00:00.123Z","endsAt":"0001-01-01T00:00:00Z",
           "generatorURL":"http://prometheus:9090/graph?g0.expr=x"},
          {"labels":{"alertname":"DiskFull","service":"db"},
           "startsAt":"2026-11-23T09:00:00Z","endsAt":"2099-01-01T00:00:00Z"}
        ]"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, ""));
    let firing = sink.wait_for(2).await;
    // Resolve DiskFull explicitly, as Prometheus does.
    let (status, _) = http_request(
        "POST",
        &url,
        r#"[{"labels":{"alertname":"DiskFull","service":"db"},"startsAt":"2026-11-23T09:00:00Z","endsAt":"2026-11-23T09:30:00Z"}]"#,
    )
    .await;
    assert_eq!(status, 200);
    let all = sink.wait_for(3).await;
    assert_eq!(firing.len(), 2);

    let payloads: Vec<serde_json::Value> = all
        .iter()
        .map(|r| {
            assert_eq!(r.method, "POST");
            assert_eq!(r.path, "/hook");
            assert_eq!(r.header("x-source"), Some("belfry"));
            assert_eq!(r.header("content-type"), Some("application/json"));
            r.json()
        })
        .collect();
    let find = |name: &str, status: &str| {
        payloads
            .iter()
            .find(|p| p["commonLabels"]["alertname"] == name && p["status"] == status)
            .unwrap_or_else(|| panic!("no {status} {name} in {payloads:?}"))
    };

    let disk = json!({"alertname": "DiskFull", "service": "db"});
    assert_eq!(
        *find("DiskFull", "resolved"),
        json!({
            "version": "4",
            "receiver": "team-hook",
            "status": "resolved",
            "groupKey": "team-hook/...:{alertname=\"DiskFull\", service=\"db\"}",
            "truncatedAlerts": 0,
            "groupLabels": disk,
            "commonLabels": disk,
            "commonAnnotations": {},
            "externalURL": "http://belfry.example:9093",
            "alerts": [{
                "status": "resolved",
                "labels": disk,
                "annotations": {},
                "startsAt": "2026-11-23T09:00:00Z",
                "endsAt": "2026-11-23T09:30:00Z",
                "generatorURL": "",
                // Alertmanager's fingerprint of {alertname="DiskFull", service="db"}.
                "fingerprint": belfry::alert::Fingerprint::of(&[("alertname", "DiskFull"), ("service", "db")]
                    .iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).to_string(),
            }],
        })
    );
    assert_eq!(find("DiskFull", "firing")["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    let latency = find("HighLatency", "firing");
    assert_eq!(latency["alerts"][0]["startsAt"], "2026-11-23T10:00:00.123Z");
    assert_eq!(latency["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(latency["alerts"][0]["generatorURL"], "http://prometheus:9090/graph?g0.expr=x");
    assert_eq!(latency["commonAnnotations"]["runbook_url"], "http://runbooks/latency");
    assert_eq!(latency["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);
}

#[tokio::test]
async fn prometheus_resends_are_deduplicated() {
    let sink = HttpSink::start().await;
    // One delivery at a time: deliveries finish in queue order, so once the marker posted last
    // has arrived, any duplicate queued before it would have arrived too.
    let text = config(&sink, "").replace("cache_dir = \"cache\"", "cache_dir = \"cache\"\nmax_in_flight = 1");
    let daemon = Daemon::start(BIN, &text).expect("daemon starts");
    let url = daemon.url("/api/v2/alerts");
    // Prometheus re-sends a firing alert every evaluation with the same startsAt and a later endsAt.
    for ends in ["2099-01-01T00:04:00Z", "2099-01-01T00:05:00Z", "2099-01-01T00:06:00Z"] {
        let body = format!(r#"[{{"labels":{{"alertname":"Flappy"}},"startsAt":"2026-11-23T10:00:00Z","endsAt":"{ends}"}}]"#);
        assert_eq!(http_request("POST", &url, &body).await.0, 200);
    }
    // A different alert after the re-sends: once it arrives, every earlier delivery has too.
    assert_eq!(http_request("POST", &url, r#"[{"labels":{"alertname":"Marker"}}]"#).await.0, 200);
    let got = sink.wait_for(2).await;
    let names: Vec<String> = sink.requests().iter().map(|r| r.json()["commonLabels"]["alertname"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.iter().filter(|n| *n == "Flappy").count(), 1, "{names:?}");
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn accepted_alerts_survive_kill_9_and_their_resolve_still_goes_out() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &config(&sink, "")).expect("daemon starts");
    // Firing now, resolving by itself in a few seconds (nobody will re-send it).
    let ends = (chrono::Utc::now() + chrono::Duration::seconds(4)).to_rfc3339();
    let body = format!(r#"[{{"labels":{{"alertname":"Survivor","severity":"page"}},"endsAt":"{ends}"}}]"#);
    assert_eq!(http_request("POST", &daemon.url("/api/v2/alerts"), &body).await.0, 200);
    assert_eq!(sink.wait_for(1).await[0].json()["status"], "firing");

    let daemon = daemon.kill_9_and_restart(BIN).expect("restarts on the same store");
    let (status, listed) = http_request("GET", &daemon.url("/api/v2/alerts"), "").await;
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["labels"]["alertname"], "Survivor", "{listed}");

    // At least once: the firing notification may be repeated if the kill came before its
    // "notified" mark reached the disk, but the resolve must come, from the restarted daemon.
    let mut seen = 2;
    loop {
        let got = sink.wait_for(seen).await;
        let last = got[seen - 1].json();
        assert_eq!(last["commonLabels"]["alertname"], "Survivor");
        if last["status"] == "resolved" {
            break;
        }
        assert!(seen < 3, "the firing notification was repeated more than once: {got:?}");
        seen += 1;
    }
}

#[tokio::test]
async fn bad_requests_get_a_clear_400_and_the_daemon_keeps_serving() {
    let sink = HttpSink::start().await;
    let mut daemon = Daemon::start(BIN, &config(&sink, "")).expect("daemon starts");
    let url = daemon.url("/api/v2/alerts");
    for (body, needle) in [
        ("not json", "."),
        (r#"[{"labels":{"alertname":"A"}},{"labels":{"bad-name":"x"}}]"#, "[1].labels.bad-name"),
        (r#"[{"labels":{"alertname":"A"},"startsAt":"2026-11-23T10:00:00Z","endsAt":"2026-11-23T09:00:00Z"}]"#, "[0].endsAt"),
        (r#"[{"labels":{}}]"#, "[0].labels"),
    ] {
        let (status, response) = http_request("POST", &url, body).await;
        assert_eq!(status, 400, "{body}");
        let response: serde_json::Value = serde_json::from_str(&response).expect("JSON error body");
        assert_eq!(response["code"], 400);
        assert!(response["message"].as_str().unwrap().starts_with(needle), "{response}");
    }
    // All or nothing: the valid first alert of a rejected batch was not delivered.
    assert!(sink.requests().is_empty());

    assert_eq!(http_request("DELETE", &url, "").await.0, 405);
    assert_eq!(http_request("GET", &daemon.url("/nope"), "").await.0, 404);
    assert_eq!(http_request("GET", &daemon.url("/-/healthy"), "").await, (200, "OK".into()));
    assert_eq!(http_request("GET", &daemon.url("/-/ready"), "").await, (200, "OK".into()));

    let (status, _) = http_request("POST", &url, r#"[{"labels":{"alertname":"StillHere"}}]"#).await;
    assert_eq!(status, 200);
    assert_eq!(sink.wait_for(1).await[0].json()["commonLabels"]["alertname"], "StillHere");
    assert!(daemon.is_running());
}

#[tokio::test]
async fn a_plugin_that_traps_is_logged_with_blame_and_the_daemon_carries_on() {
    let sink = HttpSink::start().await;
    let text = config(&sink, "")
        .replace("[route]", "[[receivers]]\nname = \"broken\"\nplugin = \"misbehave\"\nconfig = { mode = \"panic\" }\n\n[route]")
        .replace("receiver = \"team-hook\"\n", "receiver = \"broken\"\n");
    let daemon = Daemon::start(BIN, &text).expect("daemon starts");
    let (status, _) = http_request("POST", &daemon.url("/api/v2/alerts"), r#"[{"labels":{"alertname":"Boom"}}]"#).await;
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + PATIENCE;
    while !daemon.stderr().contains("delivery failed") {
        assert!(std::time::Instant::now() < deadline, "no failure logged:\n{}", daemon.stderr());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let log = daemon.stderr();
    let line = log.lines().find(|l| l.contains("delivery failed")).unwrap();
    for needle in ["tenant=default", "receiver=broken", "plugin=misbehave", "blame=\"plugin\"", "kind=\"trap\"", "unreachable"] {
        assert!(line.contains(needle), "missing {needle} in: {line}");
    }
    // Counted per plugin, with what its calls used.
    let metrics = http_request("GET", &daemon.url("/metrics"), "").await.1;
    assert!(metrics.contains("belfry_plugin_traps_total{plugin=\"misbehave\",kind=\"trap\"} 1"), "{metrics}");
    let memory = metric_sample(&metrics, "belfry_plugin_memory_bytes{plugin=\"misbehave\"}")
        .unwrap_or_else(|| panic!("no memory gauge in:\n{metrics}"));
    assert!(memory > 0.0, "{metrics}");
    assert!(metrics.contains("belfry_plugin_cpu_seconds_total{plugin=\"misbehave\"} "), "{metrics}");
    assert_eq!(http_request("GET", &daemon.url("/-/healthy"), "").await.0, 200);
}

#[test]
fn config_errors_name_the_file_and_key_and_exit_2() {
    let sink_host = "127.0.0.1:9";
    let base = format!(
        "[plugins.webhook]\npath = \"{}\"\n\n[[receivers]]\nname = \"r\"\nplugin = \"webhook\"\nallowed_hosts = [\"{sink_host}\"]\nconfig = {{ url = \"http://{sink_host}/\" }}\n\n[route]\nreceiver = \"r\"\n",
        webhook_wasm().display()
    );
    let cases = [
        // (change, the line and what the message starts with)
        (base.replace("[route]", "[route]\nreciever = \"r\""), 11, "route.reciever: unknown field `reciever`"),
        (base.replace("plugin = \"webhook\"", "plugin = \"slack\""), 6, "receivers[0].plugin"),
        (base.replace("receiver = \"r\"", "receiver = \"nobody\""), 11, "route.receiver"),
        (base.replace("url = \"http://", "url = \"ftp://"), 8, "receivers[0].config.url"),
        (base.replace("config = {", "config = { bogus = true, "), 8, "receivers[0].config.bogus"),
        (base.replace(&webhook_wasm().display().to_string(), "/nonexistent/webhook.wasm"), 2, "plugins.webhook.path"),
        (base.replace("path = ", &format!("sha256 = \"{}\"\npath = ", "ab".repeat(32))), 3, "plugins.webhook.path"),
    ];
    for (text, line, key) in cases {
        let failed = match Daemon::start(BIN, &text) {
            Ok(_) => panic!("accepted a bad config expecting {key}:\n{text}"),
            Err(failed) => failed,
        };
        assert_eq!(failed.code, Some(2), "{}", failed.stderr);
        let expected = format!("{}:{line}: {key}", failed.config.display());
        assert!(failed.stderr.contains(&expected), "expected `{expected}` in:\n{}", failed.stderr);
    }
}

#[tokio::test]
async fn sigterm_stops_the_daemon_with_its_audit_trail_complete_and_intact() {
    let sink = HttpSink::start().await;
    let mut daemon = Daemon::start(BIN, &config(&sink, "")).expect("daemon starts");
    let body = json!([{"labels": {"alertname": "Term"}}]).to_string();
    assert_eq!(http_request("POST", &daemon.url("/api/v2/alerts"), &body).await.0, 200);
    sink.wait_for(1).await;
    // At once: the delivery's record may still be queued for the trail's thread.
    assert!(daemon.terminate().success(), "{}", daemon.stderr());
    let trail = std::fs::read_to_string(daemon.dir.path().join("data/audit.jsonl")).unwrap();
    assert!(trail.lines().any(|l| l.contains("\"action\":\"notify.delivered\"")), "{trail}");
    assert!(daemon.stderr().contains("belfry stopped"), "{}", daemon.stderr());
    let verify =
        std::process::Command::new(BIN).args(["audit", "verify"]).arg(daemon.dir.path().join("data/audit.jsonl")).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
}

#[tokio::test]
async fn the_store_s_commit_and_checkpoint_durations_are_exported() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &config(&sink, "")).expect("daemon starts");
    let metrics = || async { http_request("GET", &daemon.url("/metrics"), "").await.1 };
    let before = metric_sample(&metrics().await, "belfry_store_commit_duration_seconds_count").expect("exported from the start");
    let alert = r#"[{"labels":{"alertname":"DiskFull"}}]"#;
    assert_eq!(http_request("POST", &daemon.url("/api/v2/alerts"), alert).await.0, 200);
    // The POST was answered after its commit, so the commit is counted already.
    let text = metrics().await;
    assert!(metric_sample(&text, "belfry_store_commit_duration_seconds_count").unwrap() > before, "{text}");
    assert!(metric_sample(&text, "belfry_store_commit_duration_seconds_bucket{le=\"10.0\"}").is_some(), "{text}");
    // The writer checkpoints what waits once it has been idle for half a second.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let text = metrics().await;
        if metric_sample(&text, "belfry_store_checkpoint_duration_seconds_count").is_some_and(|n| n >= 1.0) {
            assert!(metric_sample(&text, "belfry_store_checkpoint_duration_seconds_sum").unwrap() > 0.0, "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint counted in:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn with_the_perfmap_profiler_perf_can_name_the_plugins_functions() {
    let sink = HttpSink::start().await;
    let config = config(&sink, "").replace("[runtime]\n", "[runtime]\nprofiler = \"perfmap\"\n");
    let daemon = Daemon::start(BIN, &config).expect("daemon starts");
    // wasmtime writes the map as it loads each component: the daemon is ready only after that.
    let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", daemon.pid()));
    let text = std::fs::read_to_string(&map).unwrap_or_else(|e| panic!("{}: {e}", map.display()));
    let _ = std::fs::remove_file(&map);
    // One line per compiled function: `<address> <size> <name>`.
    let wasm = text.lines().filter(|l| l.contains("wasm[")).count();
    assert!(wasm > 50, "too few plugin functions named in {}:\n{}", map.display(), &text[..text.len().min(2000)]);
    // Off by default: no map for a daemon that was not asked for one.
    let plain = Daemon::start(BIN, &self::config(&sink, "")).expect("daemon starts");
    assert!(!std::path::Path::new(&format!("/tmp/perf-{}.map", plain.pid())).exists());
}

#[tokio::test]
async fn a_reload_says_what_re_routed_a_tenant_without_a_script() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &webhook_daemon_config("hook", &sink, "")).unwrap();
    let (status, _) = http_request("POST", &daemon.url("/api/v2/alerts"), r#"[{"labels":{"alertname":"Held"}}]"#).await;
    assert_eq!(status, 200);
    sink.wait_for(1).await;
    assert_eq!(http_request("POST", &daemon.url("/-/reload"), "").await.0, 200);
    let deadline = std::time::Instant::now() + PATIENCE;
    while !daemon.stderr().contains("held alerts re-routed") {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.stderr());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let log = daemon.stderr();
    assert!(log.contains("held alerts re-routed by the new configuration") && !log.contains("by the new script"), "{log}");
}
