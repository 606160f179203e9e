//! The Opsgenie plugin against a stand-in that checks requests the way the Alert API v2 does: GenieKey auth, create, acknowledge and close by alias, field limits, priorities.

use belfry::plugin::{AlertStatus, BindError, Receiver};
use belfry_tests::{HttpSink, TestRuntime, bind, notification, opsgenie_wasm, spec};

async fn opsgenie(rt: &TestRuntime, sink: &HttpSink) -> Receiver {
    sink.reply_with(202, &[("content-type", "application/json")], r#"{"result":"Request will be processed","requestId":"req-1"}"#);
    let plugin = rt.load(opsgenie_wasm()).await;
    let config = format!(
        "api_key = 'genie-key-123'\napi_url = '{}'\nresponders = ['team:ops', 'user:ann@example.com']\ntags = ['belfry']",
        sink.url("")
    );
    bind(&plugin, spec("og", &config, &[&sink.host()])).await
}

#[tokio::test]
async fn a_group_creates_one_alert_and_its_resolve_closes_it_by_alias() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let og = opsgenie(&rt, &sink).await;
    let mut n = notification("og", "DiskFull");
    n.title = Some(format!("[FIRING:1] DiskFull {}", "x".repeat(300)));
    let report = og.deliver(&n).await.unwrap();
    assert_eq!(report.remote_id.as_deref(), Some("req-1"));
    let mut acked = n.clone();
    acked.acked_by = Some("alice".into());
    og.deliver(&acked).await.unwrap();
    n.status = AlertStatus::Resolved;
    og.deliver(&n).await.unwrap();
    let got = sink.wait_for(3).await;
    let (create, ack, close) = (&got[0], &got[1], &got[2]);
    assert_eq!(create.path, "/v2/alerts");
    assert_eq!(create.header("authorization"), Some("GenieKey genie-key-123"));
    let body = create.json();
    assert!(body["message"].as_str().unwrap().chars().count() <= 130);
    assert_eq!(body["alias"], n.group_key.as_str());
    assert_eq!(body["priority"], "P1", "severity=page");
    assert_eq!(body["responders"], serde_json::json!([{"type": "team", "name": "ops"}, {"type": "user", "username": "ann@example.com"}]));
    assert_eq!(body["tags"], serde_json::json!(["belfry", "severity:page"]));
    // Closed by the same alias, percent-encoded in the path.
    let encoded: String =
        n.group_key.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
    assert_eq!(ack.path, format!("/v2/alerts/{encoded}/acknowledge?identifierType=alias"));
    assert_eq!(ack.json()["user"], "alice");
    assert_eq!(close.path, format!("/v2/alerts/{encoded}/close?identifierType=alias"));
    assert_eq!(close.header("authorization"), Some("GenieKey genie-key-123"));
}

#[tokio::test]
async fn bad_configs_name_the_field() {
    let rt = TestRuntime::new();
    let plugin = rt.load(opsgenie_wasm()).await;
    for (config, field) in
        [("", "api_key"), ("api_key = 'k'\nresponders = ['ops']", "responders"), ("api_key = 'k'\napi_url = 'ftp://x'", "api_url")]
    {
        match plugin.bind(spec("og", config, &["api.opsgenie.com"])).await {
            Err(BindError::Config(errors)) => assert_eq!(errors[0].field, field, "{config}: {errors:?}"),
            Ok(_) => panic!("accepted `{config}`"),
            Err(BindError::Plugin(f)) => panic!("{f}"),
        }
    }
}
