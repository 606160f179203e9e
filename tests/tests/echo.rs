//! The echo plugin of docs/PLUGINS.md, tested as the guide tells a plugin author to.

use belfry::plugin::FailureKind;
use belfry_tests::{HttpSink, TestRuntime, bind, notification, spec};

#[tokio::test]
async fn posts_the_summary() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await; // a local endpoint on 127.0.0.1:0
    let plugin = rt.load(std::path::Path::new(env!("BELFRY_WASM_ECHO"))).await;
    let echo = bind(&plugin, spec("echo", &format!("url = '{}'", sink.url("/")), &[&sink.host()])).await;
    echo.deliver(&notification("echo", "DiskFull")).await.unwrap();
    assert_eq!(sink.wait_for(1).await[0].body, "DiskFull is on fire");
}

#[tokio::test]
async fn a_removed_endpoint_is_the_operators_to_fix() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let plugin = rt.load(std::path::Path::new(env!("BELFRY_WASM_ECHO"))).await;
    let echo = bind(&plugin, spec("echo", &format!("url = '{}'", sink.url("/")), &[&sink.host()])).await;
    sink.reply_with(410, &[], "gone");
    let failure = echo.deliver(&notification("echo", "DiskFull")).await.unwrap_err();
    assert_eq!(failure.kind, FailureKind::Misconfigured, "{failure}");
}
