//! The Microsoft Teams plugin against a stand-in that checks messages the way a Workflows webhook does: an Adaptive Card attachment, at most 28 KB.

use belfry::plugin::{BindError, Receiver};
use belfry_tests::{HttpSink, TestRuntime, bind, msteams_wasm, notification, spec};

async fn teams(rt: &TestRuntime, sink: &HttpSink) -> Receiver {
    sink.reply_with(202, &[], "");
    let plugin = rt.load(msteams_wasm()).await;
    bind(&plugin, spec("teams", &format!("webhook_url = '{}'", sink.url("/workflows/run?sig=abc")), &[&sink.host()])).await
}

#[tokio::test]
async fn an_adaptive_card_with_title_body_facts_and_links() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let teams = teams(&rt, &sink).await;
    let mut n = notification("teams", "DiskFull");
    n.title = Some("[FIRING:1] DiskFull".into());
    n.body = Some("db1 is full".into());
    n.common_annotations.push(("runbook_url".into(), "https://runbooks.example/disk".into()));
    teams.deliver(&n).await.unwrap();
    let req = &sink.wait_for(1).await[0];
    let m = req.json();
    assert_eq!(m["type"], "message");
    let card = &m["attachments"][0];
    assert_eq!(card["contentType"], "application/vnd.microsoft.card.adaptive");
    let content = &card["content"];
    assert_eq!((content["type"].as_str(), content["version"].as_str()), (Some("AdaptiveCard"), Some("1.4")));
    assert_eq!(content["body"][0]["text"], "[FIRING:1] DiskFull");
    assert_eq!(content["body"][0]["color"], "Attention");
    assert_eq!(content["body"][1]["text"], "db1 is full");
    assert_eq!(content["body"][2]["facts"][0], serde_json::json!({"title": "alertname", "value": "DiskFull"}));
    assert_eq!(content["actions"][0]["url"], "https://runbooks.example/disk");
}

#[tokio::test]
async fn a_huge_body_is_cut_to_fit_28_kb() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let teams = teams(&rt, &sink).await;
    let mut n = notification("teams", "Flood");
    n.body = Some("é".repeat(100 * 1024));
    teams.deliver(&n).await.unwrap();
    let req = &sink.wait_for(1).await[0];
    assert!(req.body.len() <= 28 * 1024, "{} bytes", req.body.len());
    assert!(req.json()["attachments"][0]["content"]["body"][1]["text"].as_str().unwrap().ends_with('…'));
}

#[tokio::test]
async fn bad_configs_name_the_field() {
    let rt = TestRuntime::new();
    let plugin = rt.load(msteams_wasm()).await;
    for config in ["", "webhook_url = 'prod-12.westeurope.logic.azure.com/workflows'"] {
        match plugin.bind(spec("teams", config, &["prod-12.westeurope.logic.azure.com"])).await {
            Err(BindError::Config(errors)) => assert_eq!(errors[0].field, "webhook_url", "{config}: {errors:?}"),
            Ok(_) => panic!("accepted `{config}`"),
            Err(BindError::Plugin(f)) => panic!("{f}"),
        }
    }
}
