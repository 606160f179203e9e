//! The PagerDuty plugin against a stand-in that checks events the way the Events API v2 does: trigger, acknowledge and resolve, a stable dedup key, size limits, retry classification.

use belfry::plugin::{AlertStatus, BindError, Blame, FailureKind, Notification, Receiver};
use belfry_tests::{HttpSink, Recorded, TestRuntime, bind, notification, pagerduty_wasm, spec};

const KEY: &str = "R0123456789abcdefABCDEF012345678";

async fn pagerduty(rt: &TestRuntime, sink: &HttpSink) -> Receiver {
    sink.reply_with(
        202,
        &[("content-type", "application/json")],
        r#"{"status":"success","message":"Event processed","dedup_key":"srv-123"}"#,
    );
    let plugin = rt.load(pagerduty_wasm()).await;
    bind(&plugin, spec("pd", &format!("routing_key = '{KEY}'\nurl = '{}'", sink.url("/v2/enqueue")), &[&sink.host()])).await
}

/// What the Events API v2 would refuse in an event: none, for a valid one.
fn pagerduty_problems(req: &Recorded) -> Vec<String> {
    let mut problems = Vec::new();
    if req.method != "POST" || req.path != "/v2/enqueue" || req.header("content-type") != Some("application/json") {
        problems.push(format!("{} {} {:?}", req.method, req.path, req.header("content-type")));
    }
    if req.body.len() > 512 * 1024 {
        problems.push(format!("{} bytes (512 KB allowed)", req.body.len()));
    }
    let e = req.json();
    if e["routing_key"].as_str().is_none_or(|k| k.len() != 32) {
        problems.push("routing_key is not 32 characters".into());
    }
    let key = e["dedup_key"].as_str().unwrap_or("");
    if key.is_empty() || key.chars().count() > 255 {
        problems.push(format!("dedup_key of {} characters", key.chars().count()));
    }
    match e["event_action"].as_str() {
        Some("trigger") => {
            let p = &e["payload"];
            if p["summary"].as_str().is_none_or(|s| s.is_empty() || s.chars().count() > 1024) {
                problems.push("payload.summary missing or over 1024".into());
            }
            if p["source"].as_str().is_none_or(str::is_empty) {
                problems.push("payload.source missing".into());
            }
            if p.as_object().is_some_and(|p| p.values().any(serde_json::Value::is_null)) {
                problems.push("a null field in payload (leave optional fields out)".into());
            }
            if !matches!(p["severity"].as_str(), Some("critical" | "error" | "warning" | "info")) {
                problems.push(format!("payload.severity {}", p["severity"]));
            }
        }
        Some("resolve" | "acknowledge") => {}
        other => problems.push(format!("event_action {other:?}")),
    }
    problems
}

#[tokio::test]
async fn a_firing_group_triggers_and_its_resolve_resolves_the_same_incident() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let pd = pagerduty(&rt, &sink).await;
    let mut n = notification("pd", "DiskFull");
    n.common_annotations.push(("runbook_url".into(), "https://runbooks.example/disk".into()));
    let report = pd.deliver(&n).await.unwrap();
    assert_eq!(report.remote_id.as_deref(), Some("srv-123"));
    let mut acked = n.clone();
    acked.acked_by = Some("alice".into());
    pd.deliver(&acked).await.unwrap();
    n.status = AlertStatus::Resolved;
    n.alerts[0].status = AlertStatus::Resolved;
    pd.deliver(&n).await.unwrap();
    let got = sink.wait_for(3).await;
    for req in &got {
        assert_eq!(pagerduty_problems(req), Vec::<String>::new());
    }
    let (trigger, ack, resolve) = (got[0].json(), got[1].json(), got[2].json());
    assert_eq!(ack["event_action"], "acknowledge", "an ack in Belfry acknowledges the incident: {ack}");
    assert_eq!(ack["dedup_key"], trigger["dedup_key"]);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["payload"]["severity"], "critical", "severity=page");
    assert_eq!(trigger["payload"]["summary"], "[FIRING:1] DiskFull");
    assert_eq!(trigger["links"][0]["href"], "https://runbooks.example/disk");
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(trigger["dedup_key"], resolve["dedup_key"], "one incident per group");
    assert_eq!(trigger["dedup_key"], n.group_key.as_str());
}

#[tokio::test]
async fn long_keys_and_huge_groups_stay_within_pagerduty_limits() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    sink.reply_with(202, &[], r#"{"status":"success","dedup_key":"srv-123"}"#);
    let plugin = rt.load(pagerduty_wasm()).await;
    let big =
        belfry_tests::spec_for_big_input("pd", &format!("routing_key = '{KEY}'\nurl = '{}'", sink.url("/v2/enqueue")), &[&sink.host()]);
    let pd = bind(&plugin, big).await;
    let mut n: Notification = notification("pd", "Flood");
    n.group_key = format!("pd/...:{{{}}}", "instance=\"host\", ".repeat(100));
    n.title = Some("T".repeat(5000));
    let one = n.alerts[0].clone();
    // 10,000 alerts; the first 20 (those the details list) with 30 KB descriptions, 600 KB in all.
    n.alerts = (0..10_000)
        .map(|i| belfry::plugin::Alert {
            fingerprint: format!("{i:016x}"),
            annotations: if i < 20 { vec![("description".into(), "d".repeat(30 * 1024))] } else { Vec::new() },
            ..one.clone()
        })
        .collect();
    n.common_annotations = vec![("summary".into(), "s".repeat(100 * 1024))];
    pd.deliver(&n).await.unwrap();
    pd.deliver(&n).await.unwrap();
    let got = sink.wait_for(2).await;
    assert_eq!(pagerduty_problems(&got[0]), Vec::<String>::new());
    let (a, b) = (got[0].json(), got[1].json());
    assert_eq!(a["dedup_key"], b["dedup_key"], "the shortened key is stable");
    assert_ne!(a["dedup_key"].as_str().unwrap(), n.group_key);
    assert!(a["payload"]["custom_details"]["note"].as_str().unwrap().contains("512 KB"));
}

#[tokio::test]
async fn answers_are_classified_and_the_key_never_shows() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let pd = pagerduty(&rt, &sink).await;
    let n = notification("pd", "DiskFull");
    /// (status, headers, body) PagerDuty answers with, and the failure it must become.
    type Case<'a> = (u16, &'a [(&'a str, &'a str)], String, FailureKind, Blame);
    let cases: [Case; 4] = [
        (
            429,
            &[("retry-after", "7")],
            String::new(),
            FailureKind::Retryable { retry_after: Some(std::time::Duration::from_secs(7)) },
            Blame::Remote,
        ),
        (500, &[], format!("key {KEY} broke"), FailureKind::Retryable { retry_after: None }, Blame::Remote),
        (400, &[], r#"{"status":"invalid event","errors":["'payload.summary' is missing"]}"#.into(), FailureKind::Permanent, Blame::Remote),
        (403, &[], String::new(), FailureKind::Misconfigured, Blame::Configuration),
    ];
    for (status, headers, body, kind, blame) in cases {
        sink.reply_with(status, headers, body.clone());
        let failure = pd.deliver(&n).await.unwrap_err();
        assert_eq!((failure.kind.clone(), failure.blame), (kind, blame), "{status} {body}: {failure}");
        assert!(!failure.message.contains(KEY), "{failure}");
    }
}

#[tokio::test]
async fn bad_configs_name_the_field() {
    let rt = TestRuntime::new();
    let plugin = rt.load(pagerduty_wasm()).await;
    for (config, field) in
        [("", "routing_key"), ("routing_key = 'short'", "routing_key"), (&format!("routing_key = '{KEY}'\nurl = 'ftp://x'"), "url")]
    {
        match plugin.bind(spec("pd", config, &["events.pagerduty.com"])).await {
            Err(BindError::Config(errors)) => assert_eq!(errors[0].field, field, "{config}: {errors:?}"),
            Ok(_) => panic!("accepted `{config}`"),
            Err(BindError::Plugin(f)) => panic!("{f}"),
        }
    }
    let secret: Vec<&str> = plugin.info.config_schema.iter().filter(|f| f.secret).map(|f| f.name.as_str()).collect();
    assert_eq!(secret, ["routing_key"]);
}
