//! The Telegram plugin against a stand-in that checks messages the way the Bot API does: HTML that parses, 4,096 characters, its 429 and "chat not found" answers.

use belfry::plugin::{BindError, Blame, FailureKind, Receiver};
use belfry_tests::{HttpSink, TestRuntime, bind, notification, spec, telegram_wasm};

const TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

async fn telegram(rt: &TestRuntime, sink: &HttpSink) -> Receiver {
    sink.reply_with(200, &[("content-type", "application/json")], r#"{"ok":true,"result":{"message_id":42}}"#);
    let plugin = rt.load(telegram_wasm()).await;
    bind(&plugin, spec("tg", &format!("token = '{TOKEN}'\nchat_id = '-1001234567890'\napi_url = '{}'", sink.url("")), &[&sink.host()]))
        .await
}

/// Whether `text` is HTML Telegram accepts: only `<b>` tags, every `&` an entity.
fn html_ok(text: &str) -> bool {
    let without_tags = text.replace("<b>", "").replace("</b>", "");
    let entities_ok =
        without_tags.match_indices('&').all(|(i, _)| ["&amp;", "&lt;", "&gt;"].iter().any(|e| without_tags[i..].starts_with(e)));
    entities_ok && !without_tags.contains('<') && !without_tags.contains('>')
}

#[tokio::test]
async fn a_message_is_escaped_html_and_reports_the_message_id() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let tg = telegram(&rt, &sink).await;
    let mut n = notification("tg", "DiskFull");
    n.title = Some("[FIRING:1] Disk <90%> & rising".into());
    n.body = Some("a<b>c & d".into());
    let report = tg.deliver(&n).await.unwrap();
    assert_eq!(report.remote_id.as_deref(), Some("42"));
    let req = &sink.wait_for(1).await[0];
    assert_eq!(req.path, format!("/bot{TOKEN}/sendMessage"));
    let m = req.json();
    assert_eq!(m["chat_id"], "-1001234567890");
    assert_eq!(m["parse_mode"], "HTML");
    assert_eq!(m["text"], "<b>[FIRING:1] Disk &lt;90%&gt; &amp; rising</b>\na&lt;b&gt;c &amp; d");
}

#[tokio::test]
async fn long_texts_are_cut_to_4096_without_splitting_an_entity() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let tg = telegram(&rt, &sink).await;
    let mut n = notification("tg", "Flood");
    n.body = Some("<&>".repeat(20_000));
    tg.deliver(&n).await.unwrap();
    let text = sink.wait_for(1).await[0].json()["text"].as_str().unwrap().to_string();
    assert!(text.chars().count() <= 4096, "{} characters", text.chars().count());
    assert!(text.ends_with('…') && html_ok(&text), "{}", &text[text.len() - 40..]);
}

#[tokio::test]
async fn bot_api_answers_are_classified() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let tg = telegram(&rt, &sink).await;
    let n = notification("tg", "DiskFull");
    sink.reply_with(
        429,
        &[],
        r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 5","parameters":{"retry_after":5}}"#,
    );
    let f = tg.deliver(&n).await.unwrap_err();
    assert_eq!(f.kind, FailureKind::Retryable { retry_after: Some(std::time::Duration::from_secs(5)) });
    sink.reply_with(400, &[], r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#);
    let f = tg.deliver(&n).await.unwrap_err();
    assert_eq!((f.kind, f.blame), (FailureKind::Misconfigured, Blame::Configuration));
    sink.reply_with(401, &[], format!(r#"{{"ok":false,"error_code":401,"description":"Unauthorized {TOKEN}"}}"#));
    let f = tg.deliver(&n).await.unwrap_err();
    assert_eq!(f.kind, FailureKind::Misconfigured);
    assert!(!f.message.contains("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"), "{f}");
}

#[tokio::test]
async fn bad_configs_name_the_field() {
    let rt = TestRuntime::new();
    let plugin = rt.load(telegram_wasm()).await;
    for (config, field) in [
        ("chat_id = '1'".to_string(), "token"),
        ("token = 'nope'\nchat_id = '1'".to_string(), "token"),
        (format!("token = '{TOKEN}'"), "chat_id"),
        (format!("token = '{TOKEN}'\nchat_id = 'general'"), "chat_id"),
    ] {
        match plugin.bind(spec("tg", &config, &["api.telegram.org"])).await {
            Err(BindError::Config(errors)) => assert_eq!(errors[0].field, field, "{config}: {errors:?}"),
            Ok(_) => panic!("accepted `{config}`"),
            Err(BindError::Plugin(f)) => panic!("{f}"),
        }
    }
}
