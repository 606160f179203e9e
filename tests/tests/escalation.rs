//! Black-box: escalation policies page the next receivers while a group fires unacknowledged, survive kill -9, are audited and counted, and bad policies are refused by name.

use belfry_tests::{Daemon, HttpSink, PATIENCE, http_request, webhook_receiver, webhook_wasm};

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");

fn config(sink: &HttpSink, policy: &str) -> String {
    let receiver = |name: &str| webhook_receiver(name, sink, "");
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[plugins.webhook]\npath = \"{}\"\n\n{}{}{}{policy}\n[route]\nreceiver = \"chat\"\nescalation = \"page\"\ngroup_wait = \"0s\"\ngroup_interval = \"1s\"\n",
        webhook_wasm().display(),
        receiver("chat"),
        receiver("oncall"),
        receiver("manager"),
    )
}

const POLICY: &str = "[[escalation_policies]]\nname = \"page\"\n\n[[escalation_policies.steps]]\nwait = \"2s\"\nnotify = [\"oncall\"]\n\n[[escalation_policies.steps]]\nwait = \"1s\"\nnotify = [\"manager\"]\n\n";

fn paths(sink: &HttpSink) -> Vec<String> {
    sink.requests().iter().map(|r| r.path.clone()).collect()
}

async fn wait_for_path(sink: &HttpSink, path: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !paths(sink).iter().any(|p| p == path) {
        assert!(tokio::time::Instant::now() < deadline, "nothing reached {path}: {:?}", paths(sink));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_unacknowledged_group_escalates_level_by_level_even_across_a_kill_9() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &config(&sink, POLICY)).expect("daemon starts");
    let (status, _) = http_request("POST", &daemon.url("/api/v2/alerts"), r#"[{"labels":{"alertname":"DiskFull"}}]"#).await;
    assert_eq!(status, 200);
    wait_for_path(&sink, "/chat").await;
    assert_eq!(paths(&sink), ["/chat"], "level 0: the route's receiver only");
    // The escalation is stored: a crash before its first step does not lose it.
    let daemon = daemon.kill_9_and_restart(BIN).expect("restarts");
    wait_for_path(&sink, "/oncall").await;
    wait_for_path(&sink, "/manager").await;
    let oncall = sink.requests().into_iter().find(|r| r.path == "/oncall").unwrap().json();
    assert_eq!(oncall["commonLabels"]["alertname"], "DiskFull");
    let records = daemon.audit_until(|r| r.iter().filter(|r| r["action"] == "escalation.step").count() == 2).await;
    let steps: Vec<(u64, String)> = records
        .iter()
        .filter(|r| r["action"] == "escalation.step")
        .map(|r| (r["level"].as_u64().unwrap(), r["notify"][0].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(steps, [(1, "oncall".to_string()), (2, "manager".to_string())]);
    let (_, metrics) = http_request("GET", &daemon.url("/metrics"), "").await;
    assert!(metrics.contains("belfry_escalations_total{tenant=\"default\",policy=\"page\",level=\"2\"} 1"), "{metrics}");
}

/// A schedule `primary` in UTC: a weekly rotation of `receivers` and the given overrides.
fn schedule(receivers: &str, overrides: &str) -> String {
    format!(
        "[[schedules]]\nname = \"primary\"\nlocation = \"UTC\"\n\n[[schedules.rotations]]\nreceivers = {receivers}\nstart = \"2026-10-19T09:00\"\nlength = \"7d\"\n\n{overrides}"
    )
}

#[tokio::test]
async fn a_step_pages_whoever_the_schedule_has_on_call_and_the_api_tells_who_that_is() {
    let sink = HttpSink::start().await;
    // The rotation has `oncall`; an override puts `manager` on call for the hour around now.
    let local = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let now = chrono::Utc::now();
    let overrides = format!(
        "[[schedules.overrides]]\nreceiver = \"manager\"\nstart = \"{}\"\nend = \"{}\"\n\n",
        local(now - chrono::Duration::minutes(30)),
        local(now + chrono::Duration::minutes(30))
    );
    let policy =
        "[[escalation_policies]]\nname = \"page\"\n\n[[escalation_policies.steps]]\nwait = \"1s\"\nnotify_on_call = [\"primary\"]\n\n";
    let daemon = Daemon::start(BIN, &config(&sink, &format!("{policy}{}", schedule("[\"oncall\"]", &overrides)))).expect("daemon starts");
    let (status, _) = http_request("POST", &daemon.url("/api/v2/alerts"), r#"[{"labels":{"alertname":"DiskFull"}}]"#).await;
    assert_eq!(status, 200);
    wait_for_path(&sink, "/manager").await;
    assert_eq!(paths(&sink), ["/chat", "/manager"], "the override, not the rotation, is paged");
    let records = daemon.audit_until(|r| r.iter().any(|r| r["action"] == "escalation.step")).await;
    let step = records.iter().find(|r| r["action"] == "escalation.step").unwrap();
    assert_eq!(step["on_call"], serde_json::json!({"primary": "manager"}));

    let (status, body) = http_request("GET", &daemon.url("/api/belfry/v1/oncall"), "").await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["onCall"], serde_json::json!([{"schedule": "primary", "receiver": "manager", "source": "overrides[0]"}]));
    let (_, body) = http_request("GET", &daemon.url("/api/belfry/v1/oncall?at=2030-01-01T12:00:00Z"), "").await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["onCall"][0]["receiver"], "oncall");
    assert_eq!(body["onCall"][0]["source"], "rotations[0]");
    let (status, body) = http_request("GET", &daemon.url("/api/belfry/v1/oncall?at=tomorrow"), "").await;
    assert_eq!(status, 400);
    assert!(body.contains("at: `tomorrow` is not an RFC 3339 time"), "{body}");

    // Schedules are configuration: a reload without the override puts the rotation back.
    daemon.write_file("belfry.toml", Some(&config(&sink, &format!("{policy}{}", schedule("[\"oncall\"]", "")))));
    let (status, body) = http_request("POST", &daemon.url("/-/reload"), "").await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = http_request("GET", &daemon.url("/api/belfry/v1/oncall"), "").await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["onCall"], serde_json::json!([{"schedule": "primary", "receiver": "oncall", "source": "rotations[0]"}]));
}

#[test]
fn bad_policies_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sink = rt.block_on(HttpSink::start());
    for (policy, expected) in [
        ("", "route.escalation: no escalation policy is named `page`"),
        (
            &POLICY.replace("notify = [\"oncall\"]", "notify = [\"nobody\"]"),
            "escalation_policies[0].steps[0].notify: no receiver is named `nobody`",
        ),
        (&POLICY.replace("wait = \"2s\"", "wait = \"0s\""), "escalation_policies[0].steps[0].wait: must be at least 1s"),
        (
            &POLICY.replace("notify = [\"oncall\"]", "notify_on_call = [\"primary\"]"),
            "escalation_policies[0].steps[0].notify_on_call: no schedule is named `primary`; add a [[schedules]] entry",
        ),
        (
            &format!("{POLICY}{}", schedule("[\"oncall\", \"nobody\"]", "")),
            "schedules[0].rotations[0].receivers: no receiver is named `nobody`",
        ),
        (
            &format!("{POLICY}{}", schedule("[\"oncall\"]", "").replace("length = \"7d\"", "length = \"10s\"")),
            "schedules[0].rotations[0].length: must be at least 1m",
        ),
        (
            &format!("{POLICY}{}", schedule("[\"oncall\"]", "").replace("2026-10-19T09:00", "monday")),
            "schedules[0].rotations[0].start: `monday` is not a local date and time",
        ),
    ] {
        std::fs::write(dir.path().join("belfry.toml"), config(&sink, policy)).unwrap();
        let out = std::process::Command::new(BIN).args(["check", "--config"]).arg(dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "expected `{expected}` in: {stderr}");
    }
}
