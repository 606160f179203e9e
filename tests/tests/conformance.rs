//! The conformance kit every channel plugin passes: retry classification for every HTTP status class, no secret in any error, payloads equal to golden files, Belfry's notification limits respected.
//!
//! Adding a channel: add a `Channel` to `channels()` and a golden file (run once with
//! `BELFRY_BLESS=1` to write it, then review it like code).

use std::path::{Path, PathBuf};
use std::time::Duration;

use belfry::plugin::{Blame, FailureKind, Notification, Receiver};
use belfry_tests::*;

/// A channel plugin under test: how to configure it against a sink, with a known secret in it.
struct Channel {
    name: &'static str,
    wasm: &'static Path,
    /// Its config pointing at the sink; must contain `SECRET`.
    config: fn(&HttpSink) -> String,
    /// What the service answers on success.
    ok: (u16, &'static str),
}

const SECRET: &str = "Zx9SECRETv4lue0123456789abcdefAB";

fn channels() -> Vec<Channel> {
    vec![
        Channel {
            name: "discord",
            wasm: discord_wasm(),
            config: |s| format!("webhook_url = '{}'", s.url(&format!("/api/webhooks/1234/{SECRET}"))),
            ok: (200, r#"{"id":"1180000000000000001"}"#),
        },
        Channel {
            name: "telegram",
            wasm: telegram_wasm(),
            config: |s| format!("token = '123456789:{SECRET}'\nchat_id = '-1001234567890'\napi_url = '{}'", s.url("")),
            ok: (200, r#"{"ok":true,"result":{"message_id":42}}"#),
        },
        Channel {
            name: "msteams",
            wasm: msteams_wasm(),
            config: |s| format!("webhook_url = '{}'", s.url(&format!("/workflows/triggers/manual/run?sig={SECRET}"))),
            ok: (202, ""),
        },
        Channel {
            name: "opsgenie",
            wasm: opsgenie_wasm(),
            config: |s| format!("api_key = '{SECRET}'\napi_url = '{}'\nresponders = ['team:ops']", s.url("")),
            ok: (202, r#"{"result":"Request will be processed","took":0.1,"requestId":"43a29c5c"}"#),
        },
        Channel {
            name: "sms",
            wasm: sms_wasm(),
            config: |s| {
                format!(
                    "account_sid = 'AC0123456789abcdef0123456789abcdef'\nauth_token = '{SECRET}'\nfrom = '+15005550006'\nto = ['+33612345678']\napi_url = '{}'",
                    s.url("")
                )
            },
            ok: (201, r#"{"sid":"SM0123","status":"queued"}"#),
        },
        Channel {
            name: "webhook",
            wasm: webhook_wasm(),
            config: |s| format!("url = '{}'\nbearer_token = '{SECRET}'", s.url("/hook")),
            ok: (200, "ok"),
        },
        Channel {
            name: "slack",
            wasm: slack_wasm(),
            config: |s| format!("webhook_url = '{}'", s.url(&format!("/services/T0/B0/{SECRET}"))),
            ok: (200, "ok"),
        },
        Channel {
            name: "pagerduty",
            wasm: pagerduty_wasm(),
            config: |s| format!("routing_key = '{SECRET}'\nurl = '{}'", s.url("/v2/enqueue")),
            ok: (202, r#"{"status":"success","dedup_key":"k"}"#),
        },
    ]
}

async fn receiver(rt: &TestRuntime, ch: &Channel, sink: &HttpSink) -> Receiver {
    let plugin = rt.load(ch.wasm).await;
    bind(&plugin, spec(ch.name, &(ch.config)(sink), &[&sink.host()])).await
}

/// A notification with fixed content, so payloads can be compared byte for byte.
fn fixed_notification(receiver: &str) -> Notification {
    let mut n = notification(receiver, "DiskFull");
    n.common_annotations.push(("runbook_url".into(), "https://runbooks.example/disk".into()));
    n.title = Some("[FIRING:1] DiskFull".into());
    n.body = Some("[FIRING] DiskFull is on fire".into());
    n
}

#[tokio::test]
async fn plugins_say_whether_they_show_title_and_body() {
    let rt = TestRuntime::new();
    for ch in channels() {
        let plugin = rt.load(ch.wasm).await;
        // Only the webhook sends structured alerts without text: the host skips rendering for it.
        assert_eq!(plugin.info.uses_text, ch.name != "webhook", "{}", ch.name);
    }
}

#[tokio::test]
async fn every_status_class_is_classified_for_retry() {
    let rt = TestRuntime::new();
    for ch in channels() {
        let sink = HttpSink::start().await;
        let r = receiver(&rt, &ch, &sink).await;
        let n = fixed_notification(ch.name);
        sink.reply_with(ch.ok.0, &[("content-type", "application/json")], ch.ok.1);
        assert!(r.deliver(&n).await.is_ok(), "{}: {} must be delivered", ch.name, ch.ok.0);
        /// (status, headers) the service answers with, and the failure it must become.
        type Expectation<'a> = (u16, &'a [(&'a str, &'a str)], FailureKind, Blame);
        let expectations: [Expectation; 7] = [
            (429, &[("retry-after", "12")], FailureKind::Retryable { retry_after: Some(Duration::from_secs(12)) }, Blame::Remote),
            (500, &[], FailureKind::Retryable { retry_after: None }, Blame::Remote),
            (503, &[("retry-after", "3")], FailureKind::Retryable { retry_after: Some(Duration::from_secs(3)) }, Blame::Remote),
            (401, &[], FailureKind::Misconfigured, Blame::Configuration),
            (403, &[], FailureKind::Misconfigured, Blame::Configuration),
            (400, &[], FailureKind::Permanent, Blame::Remote),
            (404, &[], FailureKind::Permanent, Blame::Remote),
        ];
        for (status, headers, kind, blame) in expectations {
            sink.reply_with(status, headers, "refused");
            let failure = r.deliver(&n).await.expect_err("a failure status");
            assert_eq!((failure.kind.clone(), failure.blame), (kind, blame), "{}: HTTP {status}: {failure}", ch.name);
        }
    }
}

#[tokio::test]
async fn no_secret_shows_in_any_error() {
    let rt = TestRuntime::new();
    for ch in channels() {
        let sink = HttpSink::start().await;
        let r = receiver(&rt, &ch, &sink).await;
        // The service echoes the secret back, the way some do in their error bodies.
        for status in [400, 401, 429, 500] {
            sink.reply_with(status, &[], format!("bad credential {SECRET} in request"));
            let failure = r.deliver(&fixed_notification(ch.name)).await.expect_err("a failure status");
            assert!(!failure.to_string().contains(SECRET), "{}: HTTP {status}: {failure}", ch.name);
        }
    }
}

#[tokio::test]
async fn payloads_equal_their_golden_files() {
    let rt = TestRuntime::new();
    let bless = std::env::var_os("BELFRY_BLESS").is_some();
    for ch in channels() {
        let sink = HttpSink::start().await;
        sink.reply_with(ch.ok.0, &[], ch.ok.1);
        let r = receiver(&rt, &ch, &sink).await;
        r.deliver(&fixed_notification(ch.name)).await.unwrap();
        let req = &sink.wait_for(1).await[0];
        // JSON as sent; a form (Twilio) as an object of its fields, in order.
        let mut body = if req.header("content-type") == Some("application/x-www-form-urlencoded") {
            let fields: serde_json::Map<String, serde_json::Value> =
                form_urlencoded::parse(&req.body).map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned()))).collect();
            serde_json::Value::Object(fields)
        } else {
            req.json()
        };
        // The only field that depends on the sink: its address.
        let text = serde_json::to_string_pretty(&body).unwrap().replace(&sink.host(), "SINK");
        body = serde_json::from_str(&text).unwrap();
        let file: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(format!("{}.json", ch.name));
        let rendered = serde_json::to_string_pretty(&body).unwrap() + "\n";
        if bless {
            std::fs::write(&file, &rendered).unwrap();
        }
        let golden = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e} (write it with BELFRY_BLESS=1)", file.display()));
        assert_eq!(rendered, golden, "{}: the payload differs from {}", ch.name, file.display());
    }
}

#[tokio::test]
async fn ten_thousand_alerts_and_100_kb_annotations_are_delivered_within_the_limits() {
    let rt = TestRuntime::new();
    for ch in channels() {
        let sink = HttpSink::start().await;
        sink.reply_with(ch.ok.0, &[], ch.ok.1);
        let plugin = rt.load(ch.wasm).await;
        let r = bind(&plugin, spec_for_big_input(ch.name, &(ch.config)(&sink), &[&sink.host()])).await;
        let mut n = fixed_notification(ch.name);
        let one = n.alerts[0].clone();
        n.alerts = (0..10_000).map(|i| belfry::plugin::Alert { fingerprint: format!("{i:016x}"), ..one.clone() }).collect();
        n.common_annotations.push(("description".into(), "d".repeat(100 * 1024)));
        n.body = Some("b".repeat(100 * 1024));
        r.deliver(&n).await.unwrap_or_else(|f| panic!("{}: {f}", ch.name));
        let req = &sink.wait_for(1).await[0];
        assert!(req.body.len() < 1 << 20, "{}: a {} byte request", ch.name, req.body.len());
    }
}
