//! Black-box: Rhai routing scripts, their hot reload, grouping, inhibition, time intervals, and `belfry route test`.

use std::process::Command;
use std::time::Duration;

use belfry_tests::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");

/// Receivers `pager`, `chat` and `fallback`, each posting to `sink` at `/<name>`; `[route]`
/// runs `route.rhai` with `route_extra` keys, and `extra` is appended.
fn config(sink: &HttpSink, route_extra: &str, extra: &str) -> String {
    // On a loaded machine a debug build's plugin call can pass the default 100 ms CPU budget;
    // the retry after such a stop repeats a notification that had reached the sink (at least
    // once), which these tests, counting notifications, are not about.
    let receiver = |name: &str| webhook_receiver(name, sink, "limits = { cpu_ms = 5000 }");
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[plugins.webhook]\npath = \"{}\"\n\n{}{}{}\n[route]\nreceiver = \"fallback\"\nscript = \"route.rhai\"\ngroup_wait = \"0s\"\ngroup_interval = \"50ms\"\n{route_extra}\n{extra}",
        webhook_wasm().display(),
        receiver("pager"),
        receiver("chat"),
        receiver("fallback"),
    )
}

async fn post(daemon: &Daemon, alerts: &str) {
    let (status, body) = http_request("POST", &daemon.url("/api/v2/alerts"), alerts).await;
    assert_eq!(status, 200, "{body}");
}

/// The webhook payloads that arrived at `/<receiver>`.
fn payloads(sink: &HttpSink, receiver: &str) -> Vec<Value> {
    sink.requests().iter().filter(|r| r.path == format!("/{receiver}")).map(|r| r.json()).collect()
}

fn alertnames(payload: &Value) -> Vec<String> {
    payload["alerts"].as_array().unwrap().iter().map(|a| a["labels"]["alertname"].as_str().unwrap().to_string()).collect()
}

/// Wait until `receiver` got at least `n` payloads.
async fn wait_for_receiver(sink: &HttpSink, receiver: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = payloads(sink, receiver);
        if got.len() >= n {
            return got;
        }
        assert!(tokio::time::Instant::now() < deadline, "expected {n} payloads at /{receiver}, got {got:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const SCRIPT: &str = r#"
fn route(alert) {
    if alert.labels.severity == "critical" { return ["pager", "chat"]; }
    if alert.labels.team == "broken" { throw "this team has no route"; }
    if matches(alert.labels.team, "web|api") { return #{ receiver: "chat", group_by: ["team"] }; }
}
fn tests() {
    [ #{ labels: #{ severity: "critical" }, expect: ["pager", "chat"] },
      #{ labels: #{ team: "api" }, expect: "chat" } ]
}
"#;

#[tokio::test]
async fn a_script_routes_to_several_receivers_groups_and_falls_back_on_errors() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start_with_files(BIN, &config(&sink, "", ""), &[("route.rhai", SCRIPT)]).expect("daemon starts");

    post(&daemon, r#"[{"labels":{"alertname":"Down","severity":"critical"}}]"#).await;
    assert_eq!(alertnames(&wait_for_receiver(&sink, "pager", 1).await[0]), ["Down"]);
    assert_eq!(alertnames(&wait_for_receiver(&sink, "chat", 1).await[0]), ["Down"], "continue: both receivers");

    // group_by team: two alerts of team api posted together are one notification.
    post(&daemon, r#"[{"labels":{"alertname":"Slow","team":"api"}},{"labels":{"alertname":"Errors","team":"api"}}]"#).await;
    let chat = wait_for_receiver(&sink, "chat", 2).await;
    let mut names = alertnames(&chat[1]);
    names.sort();
    assert_eq!(names, ["Errors", "Slow"]);
    assert_eq!(chat[1]["groupLabels"], serde_json::json!({"team": "api"}));

    // A script error sends the alert to the fallback receiver and says why.
    post(&daemon, r#"[{"labels":{"alertname":"Odd","team":"broken"}}]"#).await;
    assert_eq!(alertnames(&wait_for_receiver(&sink, "fallback", 1).await[0]), ["Odd"]);
    let log = daemon.stderr();
    assert!(log.contains("routing script failed on an alert") && log.contains("this team has no route"), "{log}");
    assert!(log.contains("line 4"), "the script line is named: {log}");

    // The API reports the receivers each alert went to.
    let (_, listed) = http_request("GET", &daemon.url("/api/v2/alerts?filter=alertname%3D%22Down%22"), "").await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["receivers"], serde_json::json!([{"name": "pager"}, {"name": "chat"}]));
}

#[tokio::test]
async fn group_wait_collects_alerts_posted_one_by_one_into_one_notification() {
    let sink = HttpSink::start().await;
    let script = "fn route(alert) { () }";
    let route = "group_by = [\"alertname\"]\n";
    let config = config(&sink, route, "").replace("group_wait = \"0s\"", "group_wait = \"1s\"");
    let daemon = Daemon::start_with_files(BIN, &config, &[("route.rhai", script)]).expect("daemon starts");
    for instance in ["a", "b", "c"] {
        post(&daemon, &format!(r#"[{{"labels":{{"alertname":"Down","instance":"{instance}"}}}}]"#)).await;
    }
    let got = wait_for_receiver(&sink, "fallback", 1).await;
    assert_eq!(got[0]["alerts"].as_array().unwrap().len(), 3, "{got:?}");
    // Re-posting the same alerts (as Prometheus does) sends nothing new.
    post(&daemon, r#"[{"labels":{"alertname":"Down","instance":"a"}}]"#).await;
    post(&daemon, r#"[{"labels":{"alertname":"Marker"}}]"#).await;
    let got = wait_for_receiver(&sink, "fallback", 2).await;
    assert_eq!(alertnames(&got[1]), ["Marker"], "the re-post was deduplicated: {got:?}");
}

#[tokio::test]
async fn a_changed_script_goes_live_without_restart_and_a_broken_one_is_rejected() {
    let sink = HttpSink::start().await;
    let daemon =
        Daemon::start_with_files(BIN, &config(&sink, "group_by = [\"...\"]", ""), &[("route.rhai", "fn route(alert) { \"pager\" }")])
            .expect("daemon starts");
    post(&daemon, r#"[{"labels":{"alertname":"First"}}]"#).await;
    wait_for_receiver(&sink, "pager", 1).await;

    // Save a new script: the file watcher reloads it.
    daemon.write_file("route.rhai", Some("fn route(alert) { \"chat\" }"));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut n = 0;
    while payloads(&sink, "chat").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the new script never took effect: {}", daemon.stderr());
        n += 1;
        post(&daemon, &format!(r#"[{{"labels":{{"alertname":"Probe{n}"}}}}]"#)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(daemon.stderr().contains("routing script reloaded"));

    // A script that does not compile, and one whose self-test fails: both rejected, chat keeps routing.
    for (broken, complaint) in [
        ("fn route(alert) {\n  \"pager\"\n  let = 1;\n}", "route.rhai:3"),
        ("fn route(alert) { \"pager\" }\nfn tests() { [#{ labels: #{}, expect: \"chat\" }] }", "expected receivers [\"chat\"]"),
    ] {
        daemon.write_file("route.rhai", Some(broken));
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !daemon.stderr().contains(complaint) {
            assert!(tokio::time::Instant::now() < deadline, "no rejection logged: {}", daemon.stderr());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = payloads(&sink, "chat").len();
        n += 1;
        post(&daemon, &format!(r#"[{{"labels":{{"alertname":"Probe{n}"}}}}]"#)).await;
        wait_for_receiver(&sink, "chat", before + 1).await;
    }
    assert!(daemon.stderr().contains("the previous script keeps routing"));
    // The tenant sees the last refusal in its API, not only in the daemon's log.
    let (status, seen) = http_request("GET", &daemon.url("/api/belfry/v1/config"), "").await;
    assert_eq!(status, 200, "{seen}");
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert_eq!((&seen["lastRejection"]["by"], &seen["lastRejection"]["current"]), (&"file-watcher".into(), &true.into()), "{seen}");
    assert!(seen["lastRejection"]["error"].as_str().unwrap().contains("expected receivers [\"chat\"]"), "{seen}");
    assert_eq!((&seen["routing"]["loadedBy"], &seen["routing"]["selfTestsPassed"]), (&"file-watcher".into(), &0.into()), "{seen}");
    assert!(seen["routing"]["file"].as_str().unwrap().ends_with("route.rhai"), "{seen}");
    let reload_metric = "alertmanager_config_last_reload_successful{tenant=\"default\"}";
    let metrics = http_request("GET", &daemon.url("/metrics"), "").await.1;
    assert!(metrics.contains(&format!("{reload_metric} 0")), "{metrics}");

    // Reload through the API rejects it too, naming file and line.
    daemon.write_file("route.rhai", Some("fn route(alert) {\n  \"pager\"\n  let = 1;\n}"));
    let (status, body) = http_request("POST", &daemon.url("/-/reload"), "").await;
    assert_eq!(status, 400);
    assert!(body.contains("route.rhai:3: "), "{body}");

    // Fixed: the metric says so.
    daemon.write_file("route.rhai", Some("fn route(alert) { \"pager\" }"));
    assert_eq!(http_request("POST", &daemon.url("/-/reload"), "").await.0, 200);
    let metrics = http_request("GET", &daemon.url("/metrics"), "").await.1;
    assert!(metrics.contains(&format!("{reload_metric} 1")), "{metrics}");
}

#[tokio::test]
async fn a_firing_source_inhibits_its_targets_until_it_resolves() {
    let sink = HttpSink::start().await;
    let rules = "[[inhibit_rules]]\nsource_matchers = ['severity=\"critical\"']\ntarget_matchers = ['severity=\"warning\"']\nequal = [\"cluster\"]\n";
    let daemon = Daemon::start_with_files(BIN, &config(&sink, "group_by = [\"...\"]", rules), &[("route.rhai", "fn route(alert) { () }")])
        .expect("daemon starts");
    post(&daemon, r#"[{"labels":{"alertname":"ClusterDown","severity":"critical","cluster":"eu"}}]"#).await;
    wait_for_receiver(&sink, "fallback", 1).await;
    post(
        &daemon,
        r#"[{"labels":{"alertname":"Slow","severity":"warning","cluster":"eu"}},{"labels":{"alertname":"SlowUS","severity":"warning","cluster":"us"}}]"#,
    )
    .await;
    let got = wait_for_receiver(&sink, "fallback", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_names: Vec<Vec<String>> = payloads(&sink, "fallback").iter().map(alertnames).collect();
    assert_eq!(got_names, [vec!["ClusterDown"], vec!["SlowUS"]], "the eu warning is inhibited: {got:?}");
    let (_, listed) = http_request("GET", &daemon.url("/api/v2/alerts?filter=alertname%3D%22Slow%22"), "").await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["status"]["state"], "suppressed");
    assert_eq!(listed[0]["status"]["inhibitedBy"].as_array().unwrap().len(), 1);
    let (_, hidden) = http_request("GET", &daemon.url("/api/v2/alerts?inhibited=false&filter=alertname%3D%22Slow%22"), "").await;
    assert_eq!(hidden, "[]");

    // The source resolves: the warning is notified.
    post(&daemon, r#"[{"labels":{"alertname":"ClusterDown","severity":"critical","cluster":"eu"},"endsAt":"2020-01-01T00:00:00Z","startsAt":"2019-12-31T00:00:00Z"}]"#)
        .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !payloads(&sink, "fallback").iter().any(|p| alertnames(p) == ["Slow"]) {
        assert!(tokio::time::Instant::now() < deadline, "the warning was never released: {:?}", payloads(&sink, "fallback"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_mute_time_interval_holds_a_route_while_others_deliver() {
    let sink = HttpSink::start().await;
    let always = "[[time_intervals]]\nname = \"always\"\n[[time_intervals.intervals]]\n";
    let script = r#"fn route(alert) { [#{ receiver: "pager", mute_time_intervals: ["always"] }, "chat"] }"#;
    let daemon = Daemon::start_with_files(BIN, &config(&sink, "", always), &[("route.rhai", script)]).expect("daemon starts");
    post(&daemon, r#"[{"labels":{"alertname":"Down"}}]"#).await;
    wait_for_receiver(&sink, "chat", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(payloads(&sink, "pager").is_empty(), "pager is muted by the time interval");
    // The alert is held in its group, not lost.
    let (_, groups) = http_request("GET", &daemon.url("/api/v2/alerts/groups"), "").await;
    let groups: Value = serde_json::from_str(&groups).unwrap();
    let receivers: Vec<&str> = groups.as_array().unwrap().iter().map(|g| g["receiver"]["name"].as_str().unwrap()).collect();
    assert!(receivers.contains(&"pager") && receivers.contains(&"chat"), "{groups}");
}

#[tokio::test]
async fn the_notification_log_survives_kill_9_so_nothing_is_sent_twice() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start_with_files(BIN, &config(&sink, "group_by = [\"...\"]", ""), &[("route.rhai", "fn route(alert) { () }")])
        .expect("daemon starts");
    post(&daemon, r#"[{"labels":{"alertname":"Once"}}]"#).await;
    wait_for_receiver(&sink, "fallback", 1).await;
    // Give the log entry a moment to be written (it is not awaited before delivery).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let daemon = daemon.kill_9_and_restart(BIN).expect("restarts");
    post(&daemon, r#"[{"labels":{"alertname":"Marker"}}]"#).await;
    let got = wait_for_receiver(&sink, "fallback", 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let names: Vec<Vec<String>> = payloads(&sink, "fallback").iter().map(alertnames).collect();
    assert_eq!(names, [vec!["Once"], vec!["Marker"]], "Once was not repeated after the restart: {got:?}");
}

#[tokio::test]
async fn a_group_that_notified_before_a_restart_waits_out_its_group_interval_after_it() {
    let sink = HttpSink::start().await;
    let script = r#"fn route(alert) { #{ receiver: "fallback", group_by: ["alertname"], group_interval: "1h" } }"#;
    let daemon = Daemon::start_with_files(BIN, &config(&sink, "", ""), &[("route.rhai", script)]).expect("daemon starts");
    post(&daemon, r#"[{"labels":{"alertname":"Disk","instance":"a"}}]"#).await;
    wait_for_receiver(&sink, "fallback", 1).await;
    // Disk gains an alert: it waits for the hour's end, restart or not.
    post(&daemon, r#"[{"labels":{"alertname":"Disk","instance":"b"}}]"#).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the log entry is written after delivery
    let daemon = daemon.kill_9_and_restart(BIN).expect("restarts");
    // Marker is a new group: group_wait (0 s), and a bound on the wait below.
    post(&daemon, r#"[{"labels":{"alertname":"Marker"}}]"#).await;
    wait_for_receiver(&sink, "fallback", 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let names: Vec<Vec<String>> = payloads(&sink, "fallback").iter().map(alertnames).collect();
    assert_eq!(names, [vec!["Disk"], vec!["Marker"]], "Disk's new alert waits for its group_interval");
}

#[test]
fn route_test_prints_the_routes_and_verifies_receivers() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/multi-tenant");
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(["route", "test", "--config", examples]).args(args).output().expect("runs");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stdout, stderr) = run(&["--tenant", "payments", "alertname=ApiDown", "severity=critical", "cluster=eu"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("payments-oncall\n  group_by [alertname, cluster] -> group {alertname=\"ApiDown\", cluster=\"eu\"}"),
        "{stdout}"
    );
    assert!(stdout.contains("group_wait 0s group_interval 1m repeat_interval 1h"), "{stdout}");
    assert!(stdout.contains("payments-chat"), "{stdout}");

    let (code, _, stderr) = run(&["--tenant", "payments", "service=postgres", "--verify-receivers", "payments-db"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = run(&["--tenant", "payments", "service=postgres", "--verify-receivers", "payments-chat"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("expected receivers [\"payments-chat\"], the alert goes to [\"payments-db\"]"), "{stderr}");
    let (code, _, stderr) = run(&["--tenant", "nobody", "a=b"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no tenant `nobody`"), "{stderr}");
    // Business hours come from the clock, which --at sets.
    let night = run(&["--tenant", "payments", "--at", "2026-11-23T22:00:00Z", "severity=warning", "component=card-processor"]);
    assert!(night.1.contains("payments-oncall"), "{}", night.1);
}

#[tokio::test]
async fn reloads_under_load_lose_no_alert_and_notify_none_twice() {
    let sink = HttpSink::start().await;
    let daemon =
        Daemon::start_with_files(BIN, &config(&sink, "group_by = [\"...\"]", ""), &[("route.rhai", "fn route(alert) { \"pager\" }")])
            .expect("daemon starts");
    const BATCHES: usize = 40;
    const PER_BATCH: usize = 50;
    for b in 0..BATCHES {
        let alerts: Vec<String> = (0..PER_BATCH).map(|i| format!(r#"{{"labels":{{"alertname":"A{b}-{i}"}}}}"#)).collect();
        post(&daemon, &format!("[{}]", alerts.join(","))).await;
        // Reload while alerts arrive: the file watcher every 4th batch, the API every 10th.
        if b % 4 == 0 {
            daemon.write_file("route.rhai", Some(&format!("// revision {b}\nfn route(alert) {{ \"pager\" }}")));
        }
        if b % 10 == 5 {
            assert_eq!(http_request("POST", &daemon.url("/-/reload"), "").await.0, 200);
        }
    }
    let total = BATCHES * PER_BATCH;
    let got = wait_for_receiver(&sink, "pager", total).await;
    // Anything sent twice would follow within a few group intervals.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut names: Vec<String> = payloads(&sink, "pager").iter().flat_map(alertnames).collect();
    assert_eq!(names.len(), total, "one notification per alert: {} extra", names.len() as i64 - total as i64);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), total, "every alert, none twice");
    assert_eq!(got.len(), total);

    // A script that sends everything elsewhere moves every held alert: each reaches `chat` once.
    daemon.write_file("route.rhai", Some("fn route(alert) { \"chat\" }"));
    wait_for_receiver(&sink, "chat", total).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut moved: Vec<String> = payloads(&sink, "chat").iter().flat_map(alertnames).collect();
    moved.sort();
    moved.dedup();
    assert_eq!((moved.len(), payloads(&sink, "chat").len()), (total, total));
    assert_eq!(payloads(&sink, "pager").len(), total, "nothing more to the old receiver");
    assert!(daemon.stderr().contains("held alerts re-routed by the new script"), "{}", daemon.stderr());
}
