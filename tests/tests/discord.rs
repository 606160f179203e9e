//! The Discord plugin against a stand-in that checks messages the way Discord does: content, embed and field limits, no mass mentions, its 429 answer.

use belfry::plugin::{BindError, FailureKind, Receiver};
use belfry_tests::{HttpSink, Recorded, TestRuntime, bind, discord_wasm, notification, spec};

async fn discord(rt: &TestRuntime, sink: &HttpSink) -> Receiver {
    sink.reply_with(200, &[("content-type", "application/json")], r#"{"id":"1180000000000000001"}"#);
    let plugin = rt.load(discord_wasm()).await;
    bind(&plugin, spec("dc", &format!("webhook_url = '{}'\nusername = 'Belfry'", sink.url("/api/webhooks/1/tok")), &[&sink.host()])).await
}

/// What Discord would refuse in a webhook message: none, for a valid one.
fn discord_problems(req: &Recorded) -> Vec<String> {
    let mut problems = Vec::new();
    let m = req.json();
    let chars = |v: &serde_json::Value| v.as_str().map_or(0, |s| s.chars().count());
    if chars(&m["content"]) > 2000 {
        problems.push("content over 2000".into());
    }
    let embeds = m["embeds"].as_array().cloned().unwrap_or_default();
    if embeds.len() > 10 {
        problems.push(format!("{} embeds (10 allowed)", embeds.len()));
    }
    let mut total = 0;
    for (i, e) in embeds.iter().enumerate() {
        let fields = e["fields"].as_array().cloned().unwrap_or_default();
        if chars(&e["title"]) > 256 || chars(&e["description"]) > 4096 || fields.len() > 25 {
            problems.push(format!("embed {i}: title, description or field count over the limit"));
        }
        for f in &fields {
            if chars(&f["name"]) > 256 || chars(&f["value"]) > 1024 || chars(&f["value"]) == 0 {
                problems.push(format!("embed {i}: field {f}"));
            }
            total += chars(&f["name"]) + chars(&f["value"]);
        }
        total += chars(&e["title"]) + chars(&e["description"]);
    }
    if total > 6000 {
        problems.push(format!("{total} characters in embeds (6000 allowed)"));
    }
    if m["allowed_mentions"]["parse"] != serde_json::json!([]) {
        problems.push("mass mentions are not disabled".into());
    }
    problems
}

#[tokio::test]
async fn a_message_has_an_embed_per_alert_and_reports_the_message_id() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let dc = discord(&rt, &sink).await;
    let report = dc.deliver(&notification("dc", "DiskFull")).await.unwrap();
    assert_eq!(report.remote_id.as_deref(), Some("1180000000000000001"));
    let req = &sink.wait_for(1).await[0];
    assert_eq!(req.path, "/api/webhooks/1/tok?wait=true");
    assert_eq!(discord_problems(req), Vec::<String>::new());
    let m = req.json();
    assert_eq!(m["username"], "Belfry");
    assert_eq!(m["embeds"][0]["description"], "DiskFull is on fire");
    assert_eq!(m["embeds"][0]["color"], 0xE01E5A);
    assert_eq!(m["embeds"][0]["fields"][0], serde_json::json!({"name": "severity", "value": "page", "inline": true}));
}

#[tokio::test]
async fn big_groups_and_long_texts_stay_within_discord_limits() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    sink.reply_with(200, &[], r#"{"id":"1"}"#);
    let plugin = rt.load(discord_wasm()).await;
    let big = belfry_tests::spec_for_big_input("dc", &format!("webhook_url = '{}'", sink.url("/api/webhooks/1/tok")), &[&sink.host()]);
    let dc = bind(&plugin, big).await;
    let mut n = notification("dc", "Flood");
    let one = n.alerts[0].clone();
    // 500 alerts; the first 20 (more than a message holds) with long summaries and 40 long labels.
    n.alerts = (0..500)
        .map(|i| {
            let big = i < 20;
            belfry::plugin::Alert {
                fingerprint: format!("{i:016x}"),
                annotations: if big { vec![("summary".into(), "s".repeat(5000))] } else { one.annotations.clone() },
                labels: if big { (0..40).map(|j| (format!("l{j}"), "v".repeat(2000))).collect() } else { one.labels.clone() },
                ..one.clone()
            }
        })
        .collect();
    n.title = Some("t".repeat(3000));
    dc.deliver(&n).await.unwrap();
    let req = &sink.wait_for(1).await[0];
    assert_eq!(discord_problems(req), Vec::<String>::new());
    assert!(req.json()["content"].as_str().unwrap().ends_with('…'));
}

#[tokio::test]
async fn a_429_with_the_wait_in_the_body_is_retried_after_it() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let dc = discord(&rt, &sink).await;
    sink.reply_with(
        429,
        &[("content-type", "application/json")],
        r#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#,
    );
    let failure = dc.deliver(&notification("dc", "DiskFull")).await.unwrap_err();
    assert_eq!(failure.kind, FailureKind::Retryable { retry_after: Some(std::time::Duration::from_millis(1500)) });
}

#[tokio::test]
async fn bad_configs_name_the_field() {
    let rt = TestRuntime::new();
    let plugin = rt.load(discord_wasm()).await;
    for config in ["", "webhook_url = 'discord.com/api/webhooks/1/x'"] {
        match plugin.bind(spec("dc", config, &["discord.com"])).await {
            Err(BindError::Config(errors)) => assert_eq!(errors[0].field, "webhook_url", "{config}: {errors:?}"),
            Ok(_) => panic!("accepted `{config}`"),
            Err(BindError::Plugin(f)) => panic!("{f}"),
        }
    }
}
