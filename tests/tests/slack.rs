//! The Slack plugin against a local stand-in that checks requests the way Slack does: Block Kit limits, auth, the Web API's `ok`/`error` answers, retry classification.

use belfry::plugin::{BindError, Blame, FailureKind, Notification, Receiver};
use belfry_tests::{HttpSink, Recorded, TestRuntime, bind, notification, slack_wasm, spec};
use serde_json::Value;

async fn slack(rt: &TestRuntime, sink: &HttpSink, config: &str) -> Receiver {
    let plugin = rt.load(slack_wasm()).await;
    bind(&plugin, spec("chat", config, &[&sink.host()])).await
}

fn webhook_config(sink: &HttpSink) -> String {
    format!("webhook_url = '{}'", sink.url("/services/T000/B000/XXXX"))
}

/// What Slack would refuse in a message (api.slack.com/reference/block-kit): none, for a valid one.
fn slack_problems(req: &Recorded) -> Vec<String> {
    let mut problems = Vec::new();
    if req.method != "POST" || req.header("content-type") != Some("application/json") {
        problems.push(format!("{} with content type {:?}", req.method, req.header("content-type")));
    }
    let body = req.json();
    if body["text"].as_str().is_none_or(str::is_empty) {
        problems.push("no `text` (the notification fallback)".into());
    }
    let blocks = body["attachments"][0]["blocks"].as_array().cloned().unwrap_or_default();
    if blocks.is_empty() || blocks.len() > 50 {
        problems.push(format!("{} blocks (1 to 50 allowed)", blocks.len()));
    }
    for (i, b) in blocks.iter().enumerate() {
        let chars = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
        match b["type"].as_str() {
            Some("header") if chars(&b["text"]["text"]) > 150 => problems.push(format!("block {i}: header over 150")),
            Some("section") => {
                if chars(&b["text"]["text"]) > 3000 {
                    problems.push(format!("block {i}: section text over 3000"));
                }
                let fields = b["fields"].as_array().map_or(0, Vec::len);
                if fields > 10 || b["fields"].as_array().is_some_and(|f| f.iter().any(|f| chars(&f["text"]) > 2000)) {
                    problems.push(format!("block {i}: more than 10 fields or a field over 2000"));
                }
            }
            Some("actions") => {
                for e in b["elements"].as_array().unwrap() {
                    if chars(&e["text"]["text"]) > 75 || !e["url"].as_str().is_some_and(|u| u.starts_with("http")) {
                        problems.push(format!("block {i}: bad button {e}"));
                    }
                }
            }
            Some("header" | "context") => {}
            other => problems.push(format!("block {i}: unknown type {other:?}")),
        }
    }
    problems
}

fn with_runbook(mut n: Notification) -> Notification {
    n.common_annotations.push(("runbook_url".into(), "https://runbooks.example/disk".into()));
    n.title = Some("[FIRING:1] DiskFull".into());
    n.body = Some("[FIRING] Disk <90%> & rising".into());
    n
}

#[tokio::test]
async fn a_webhook_message_is_block_kit_with_severity_colour_fields_and_links() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let chat = slack(&rt, &sink, &webhook_config(&sink)).await;
    chat.deliver(&with_runbook(notification("chat", "DiskFull"))).await.unwrap();
    let req = &sink.wait_for(1).await[0];
    assert_eq!(req.path, "/services/T000/B000/XXXX");
    assert_eq!(slack_problems(req), Vec::<String>::new());
    let body = req.json();
    assert_eq!(body["text"], "[FIRING:1] DiskFull");
    let attachment = &body["attachments"][0];
    assert_eq!(attachment["color"], "#E01E5A", "severity=page is red");
    let blocks = attachment["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["text"]["text"], "[FIRING:1] DiskFull");
    assert_eq!(blocks[1]["text"]["text"], "[FIRING] Disk &lt;90%&gt; &amp; rising", "mrkdwn escaped");
    assert_eq!(blocks[2]["fields"][0]["text"], "*alertname*\nDiskFull");
    let buttons: Vec<&str> =
        blocks.last().unwrap()["elements"].as_array().unwrap().iter().map(|b| b["text"]["text"].as_str().unwrap()).collect();
    assert_eq!(buttons, ["Runbook", "Source", "Open in Belfry"]);
}

#[tokio::test]
async fn chat_post_message_sends_the_token_and_channel_and_reports_the_ts() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    sink.reply_with(200, &[("content-type", "application/json")], r#"{"ok":true,"channel":"C1","ts":"1700000000.000100"}"#);
    let config = format!("token = 'xoxb-test-token'\nchannel = '#alerts'\napi_url = '{}'", sink.url("/api"));
    let chat = slack(&rt, &sink, &config).await;
    let report = chat.deliver(&notification("chat", "DiskFull")).await.unwrap();
    assert_eq!(report.remote_id.as_deref(), Some("1700000000.000100"));
    let req = &sink.wait_for(1).await[0];
    assert_eq!(req.path, "/api/chat.postMessage");
    assert_eq!(req.header("authorization"), Some("Bearer xoxb-test-token"));
    assert_eq!(req.json()["channel"], "#alerts");
    assert_eq!(slack_problems(req), Vec::<String>::new());
}

#[tokio::test]
async fn ten_thousand_alerts_and_huge_annotations_stay_within_slack_limits() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    // The host passes the first `limits.max_alerts` (1,000) alerts; the plugin keeps to 50 blocks.
    let plugin = rt.load(slack_wasm()).await;
    let chat = bind(&plugin, belfry_tests::spec_for_big_input("chat", &webhook_config(&sink), &[&sink.host()])).await;
    let mut n = with_runbook(notification("chat", "Flood"));
    let one = n.alerts[0].clone();
    n.alerts = (0..10_000).map(|i| belfry::plugin::Alert { fingerprint: format!("{i:016x}"), ..one.clone() }).collect();
    n.body = Some(format!("{}\n", "x".repeat(100 * 1024)).repeat(2));
    n.title = Some("T".repeat(500));
    n.common_labels = (0..40).map(|i| (format!("label{i}"), "v".repeat(5000))).collect();
    chat.deliver(&n).await.unwrap();
    let req = &sink.wait_for(1).await[0];
    assert_eq!(slack_problems(req), Vec::<String>::new());
    let blocks = req.json()["attachments"][0]["blocks"].as_array().unwrap().len();
    assert_eq!(blocks, 50);
}

#[tokio::test]
async fn answers_are_classified_and_secrets_never_show() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let config = format!("token = 'xoxb-s3cret-tok3n'\nchannel = 'C1'\napi_url = '{}'", sink.url("/api"));
    let chat = slack(&rt, &sink, &config).await;
    let n = notification("chat", "DiskFull");
    /// (status, headers, body) Slack answers with, and the failure it must become.
    type Case<'a> = (u16, &'a [(&'a str, &'a str)], &'a str, FailureKind, Blame);
    let cases: [Case; 5] = [
        (
            429,
            &[("retry-after", "30")],
            "",
            FailureKind::Retryable { retry_after: Some(std::time::Duration::from_secs(30)) },
            Blame::Remote,
        ),
        (503, &[], "xoxb-s3cret-tok3n unavailable", FailureKind::Retryable { retry_after: None }, Blame::Remote),
        (200, &[], r#"{"ok":false,"error":"invalid_auth"}"#, FailureKind::Misconfigured, Blame::Configuration),
        (200, &[], r#"{"ok":false,"error":"ratelimited"}"#, FailureKind::Retryable { retry_after: None }, Blame::Remote),
        (200, &[], r#"{"ok":false,"error":"invalid_blocks"}"#, FailureKind::Permanent, Blame::Remote),
    ];
    for (status, headers, body, kind, blame) in cases {
        sink.reply_with(status, headers, body);
        let failure = chat.deliver(&n).await.unwrap_err();
        assert_eq!((failure.kind.clone(), failure.blame), (kind, blame), "{status} {body}: {failure}");
        assert!(!failure.message.contains("s3cret"), "{failure}");
    }
}

#[tokio::test]
async fn bad_configs_name_the_field() {
    let rt = TestRuntime::new();
    let plugin = rt.load(slack_wasm()).await;
    for (config, field) in [
        ("", "webhook_url"),
        ("token = 'xoxb-1'", "channel"),
        ("token = 'abc'\nchannel = 'C1'", "token"),
        ("webhook_url = 'ftp://x'", "webhook_url"),
        ("webhook_url = 'https://x'\ntoken = 'xoxb-1'\nchannel = 'C1'", "webhook_url"),
    ] {
        match plugin.bind(spec("chat", config, &["hooks.slack.com"])).await {
            Err(BindError::Config(errors)) => assert_eq!(errors[0].field, field, "{config}: {errors:?}"),
            Ok(_) => panic!("accepted `{config}`"),
            Err(BindError::Plugin(f)) => panic!("{f}"),
        }
    }
    let info = &plugin.info;
    let secret: Vec<&str> = info.config_schema.iter().filter(|f| f.secret).map(|f| f.name.as_str()).collect();
    assert_eq!(secret, ["webhook_url", "token"]);
}
