//! The webhook plugin against a local stand-in: Alertmanager's payload, auth, truncation, retry classification, config errors.

use std::time::Duration;

use belfry::plugin::{BindError, Blame, FailureKind, Receiver};
use belfry_tests::{HttpSink, TestRuntime, bind, notification, spec, webhook_wasm};
use serde_json::json;

async fn webhook(rt: &TestRuntime, sink: &HttpSink, extra: &str) -> Receiver {
    let plugin = rt.load(webhook_wasm()).await;
    bind(&plugin, spec("hook", &format!("url = '{}'\n{extra}", sink.url("/alerts")), &[&sink.host()])).await
}

#[tokio::test]
async fn payload_is_alertmanagers_webhook_message_v4() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let hook = webhook(&rt, &sink, "").await;
    let n = notification("hook", "DiskFull");
    let fingerprint = n.alerts[0].fingerprint.clone();
    hook.deliver(&n).await.unwrap();
    let req = &sink.wait_for(1).await[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/alerts");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert!(req.header("user-agent").unwrap().starts_with("Belfry/"));
    let labels = json!({"alertname": "DiskFull", "severity": "page"});
    assert_eq!(
        req.json(),
        json!({
            "version": "4",
            "receiver": "hook",
            "status": "firing",
            "groupKey": "hook/...:{alertname=\"DiskFull\", severity=\"page\"}",
            "truncatedAlerts": 0,
            "groupLabels": labels,
            "commonLabels": labels,
            "commonAnnotations": {"summary": "DiskFull is on fire"},
            "externalURL": "http://belfry.local",
            "alerts": [{
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "DiskFull is on fire"},
                "startsAt": "2026-11-23T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.local/graph",
                "fingerprint": fingerprint,
            }],
        })
    );
    // Label sets are written in name order, as Alertmanager does (Go marshals maps sorted).
    let raw = String::from_utf8_lossy(&req.body);
    assert!(raw.contains(r#""labels":{"alertname":"DiskFull","severity":"page"}"#), "{raw}");
}

#[tokio::test]
async fn the_host_passes_at_most_limits_max_alerts_and_counts_the_rest() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let hook = webhook(&rt, &sink, "").await;
    let mut n = notification("hook", "Flood");
    let one = n.alerts[0].clone();
    n.alerts = (0..10_000).map(|i| belfry::plugin::Alert { fingerprint: format!("{i:016x}"), ..one.clone() }).collect();
    hook.deliver(&n).await.unwrap();
    let body = sink.wait_for(1).await[0].json();
    assert_eq!(body["alerts"].as_array().unwrap().len(), 1000);
    assert_eq!(body["truncatedAlerts"], 9000);
}

#[tokio::test]
async fn max_alerts_truncates_and_counts() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let hook = webhook(&rt, &sink, "max_alerts = 2").await;
    let mut n = notification("hook", "Many");
    let one = n.alerts[0].clone();
    n.alerts = (0..5).map(|i| belfry::plugin::Alert { fingerprint: format!("{i:016x}"), ..one.clone() }).collect();
    n.truncated_alerts = 3; // already cut upstream
    hook.deliver(&n).await.unwrap();
    let body = sink.wait_for(1).await[0].json();
    assert_eq!(body["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(body["alerts"][1]["fingerprint"], "0000000000000001");
    assert_eq!(body["truncatedAlerts"], 6);
}

#[tokio::test]
async fn custom_headers_and_bearer_auth_are_sent() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let hook = webhook(&rt, &sink, "bearer_token = 's3cr3t-token'\nheaders = { X-Team = 'db' }").await;
    hook.deliver(&notification("hook", "A")).await.unwrap();
    let req = &sink.wait_for(1).await[0];
    assert_eq!(req.header("authorization"), Some("Bearer s3cr3t-token"));
    assert_eq!(req.header("x-team"), Some("db"));
}

#[tokio::test]
async fn basic_auth_is_sent() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let hook = webhook(&rt, &sink, "basic_auth_user = 'Aladdin'\nbasic_auth_password = 'open sesame'").await;
    hook.deliver(&notification("hook", "A")).await.unwrap();
    assert_eq!(sink.wait_for(1).await[0].header("authorization"), Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="));
}

#[tokio::test]
async fn statuses_are_classified_for_retry() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let hook = webhook(&rt, &sink, "").await;
    type Case<'a> = (u16, &'a [(&'a str, &'a str)], FailureKind, Blame);
    let cases: [Case; 6] = [
        (429, &[("retry-after", "7")], FailureKind::Retryable { retry_after: Some(Duration::from_secs(7)) }, Blame::Remote),
        (503, &[], FailureKind::Retryable { retry_after: None }, Blame::Remote),
        (500, &[("retry-after", "1")], FailureKind::Retryable { retry_after: Some(Duration::from_secs(1)) }, Blame::Remote),
        (400, &[], FailureKind::Permanent, Blame::Remote),
        (404, &[], FailureKind::Permanent, Blame::Remote),
        (403, &[], FailureKind::Misconfigured, Blame::Configuration),
    ];
    for (status, headers, kind, blame) in cases {
        sink.reply_with(status, headers, "nope");
        let failure = hook.deliver(&notification("hook", "A")).await.unwrap_err();
        assert_eq!((failure.kind.clone(), failure.blame), (kind, blame), "HTTP {status}: {failure}");
        assert!(failure.message.contains(&status.to_string()), "{failure}");
    }
    sink.reply_with(204, &[], "");
    assert_eq!(hook.deliver(&notification("hook", "A")).await.unwrap().status, Some(204));
}

#[tokio::test]
async fn unreachable_endpoint_is_retryable() {
    let rt = TestRuntime::new();
    let plugin = rt.load(webhook_wasm()).await;
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let hook = bind(&plugin, spec("hook", &format!("url = 'http://127.0.0.1:{port}/'"), &[&format!("127.0.0.1:{port}")])).await;
    let failure = hook.deliver(&notification("hook", "A")).await.unwrap_err();
    assert!(matches!(failure.kind, FailureKind::Retryable { .. }), "{failure}");
}

#[tokio::test]
async fn secrets_never_appear_in_errors() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let hook = webhook(&rt, &sink, "bearer_token = 'tok-XYZZY-123'").await;
    // A service that echoes the credentials back in its error body.
    sink.reply_with(401, &[], "invalid token tok-XYZZY-123");
    let failure = hook.deliver(&notification("hook", "A")).await.unwrap_err();
    assert_eq!(failure.kind, FailureKind::Misconfigured);
    assert!(failure.message.contains("invalid token ***"), "{failure}");
    assert!(!failure.to_string().contains("XYZZY"), "{failure}");
}

#[tokio::test]
async fn bad_configs_are_rejected_with_every_field_named() {
    let rt = TestRuntime::new();
    let plugin = rt.load(webhook_wasm()).await;
    let cases: [(&str, &[&str]); 5] = [
        ("url = 'ftp://x'", &["url"]),
        ("max_alerts = -1\nurl = 'http://x/'", &["max_alerts"]),
        ("url = 'http://x/'\nbearer_token = 'a'\nbasic_auth_user = 'u'\nbasic_auth_password = 'p'", &["bearer_token"]),
        ("url = 'http://x/'\nbasic_auth_user = 'u'", &["basic_auth_user"]),
        ("urll = 'http://x/'\nmax_alerts = 'ten'", &["url", "max_alerts", "urll"]),
    ];
    for (config, fields) in cases {
        match plugin.bind(spec("hook", config, &[])).await {
            Err(BindError::Config(errors)) => {
                let got: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(got, fields, "{config}: {errors:?}");
                assert!(errors.iter().all(|e| !e.message.is_empty()));
            }
            Err(BindError::Plugin(f)) => panic!("{config}: plugin failed: {f}"),
            Ok(_) => panic!("{config}: accepted"),
        }
    }
}

#[tokio::test]
async fn schema_marks_secrets() {
    let rt = TestRuntime::new();
    let plugin = rt.load(webhook_wasm()).await;
    let schema = &plugin.info.config_schema;
    let secret = |name: &str| schema.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no field {name}")).secret;
    assert!(secret("bearer_token") && secret("basic_auth_password") && secret("headers"));
    assert!(!secret("url") && !secret("basic_auth_user"));
    assert!(schema.iter().find(|f| f.name == "url").unwrap().required);
}

#[tokio::test]
async fn an_acknowledgement_is_accepted_without_a_request() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let hook = webhook(&rt, &sink, "").await;
    let mut n = notification("hook", "DiskFull");
    n.acked_by = Some("alice".into());
    hook.deliver(&n).await.expect("accepted");
    hook.deliver(&notification("hook", "DiskFull")).await.expect("delivered");
    assert_eq!(sink.wait_for(1).await.len(), 1);
    assert_eq!(sink.count(), 1, "Alertmanager's format has no ack: nothing was sent for it");
}
