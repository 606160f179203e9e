//! The conformance kit every channel plugin passes: retry classification for every HTTP status class, no secret in any error, payloads equal to golden files, Belfry's notification limits respected.
//!
//! Adding a channel: add a `Channel` to `channels()` and a golden file (run once with
//! `BELFRY_BLESS=<name>` to write it, then review it like code).
//!
//! One channel only: `BELFRY_CHANNEL=<name>[,<name>...] cargo nextest run -p belfry-tests --test conformance`.

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
    /// The plugin's own classification of failure statuses where the service's documented
    /// errors differ from the standard table (`http::Class::standard`); the same table the
    /// plugin passes to `Response::check_with`.
    statuses: &'static [(u16, Class)],
}

/// What a failure status must become (the SDK's `http::Class`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Retryable,
    Permanent,
    Misconfigured,
}

impl Class {
    fn standard(status: u16) -> Class {
        match status {
            429 | 500..=599 => Class::Retryable,
            401 | 403 => Class::Misconfigured,
            _ => Class::Permanent,
        }
    }
}

const SECRET: &str = "Zx9SECRETv4lue0123456789abcdefAB";

/// Every channel, or those `BELFRY_CHANNEL` names (comma-separated).
fn channels() -> Vec<Channel> {
    let all = all_channels();
    let Ok(wanted) = std::env::var("BELFRY_CHANNEL") else { return all };
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).filter(|w| !w.is_empty()).collect();
    let known: Vec<&str> = all.iter().map(|c| c.name).collect();
    if let Some(unknown) = wanted.iter().find(|w| !known.contains(w)) {
        panic!("BELFRY_CHANNEL: no channel `{unknown}` in the kit (known: {})", known.join(", "));
    }
    all.into_iter().filter(|c| wanted.contains(&c.name)).collect()
}

/// The channels whose golden files `BELFRY_BLESS` asks to rewrite: a comma-separated list of
/// names, or `all`.
fn blessed(channels: &[Channel]) -> Vec<&'static str> {
    let Ok(names) = std::env::var("BELFRY_BLESS") else { return Vec::new() };
    if names.trim() == "all" {
        return channels.iter().map(|c| c.name).collect();
    }
    let names: Vec<&str> = names.split(',').map(str::trim).collect();
    let known: Vec<&str> = all_channels().iter().map(|c| c.name).collect();
    if let Some(unknown) = names.iter().find(|n| !known.contains(n)) {
        panic!(
            "BELFRY_BLESS: name the channels whose golden files to rewrite (`BELFRY_BLESS=slack`, or `all`); `{unknown}` is none of {}",
            known.join(", ")
        );
    }
    channels.iter().map(|c| c.name).filter(|n| names.contains(n)).collect()
}

fn all_channels() -> Vec<Channel> {
    vec![
        Channel {
            name: "discord",
            wasm: discord_wasm(),
            config: |s| format!("webhook_url = '{}'", s.url(&format!("/api/webhooks/1234/{SECRET}"))),
            ok: (200, r#"{"id":"1180000000000000001"}"#),
            statuses: &[(404, Class::Misconfigured)],
        },
        Channel {
            name: "telegram",
            wasm: telegram_wasm(),
            config: |s| format!("token = '123456789:{SECRET}'\nchat_id = '-1001234567890'\napi_url = '{}'", s.url("")),
            ok: (200, r#"{"ok":true,"result":{"message_id":42}}"#),
            statuses: &[],
        },
        Channel {
            name: "msteams",
            wasm: msteams_wasm(),
            config: |s| format!("webhook_url = '{}'", s.url(&format!("/workflows/triggers/manual/run?sig={SECRET}"))),
            ok: (202, ""),
            statuses: &[],
        },
        Channel {
            name: "opsgenie",
            wasm: opsgenie_wasm(),
            config: |s| format!("api_key = '{SECRET}'\napi_url = '{}'\nresponders = ['team:ops']", s.url("")),
            ok: (202, r#"{"result":"Request will be processed","took":0.1,"requestId":"43a29c5c"}"#),
            statuses: &[],
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
            statuses: &[],
        },
        Channel {
            name: "webhook",
            wasm: webhook_wasm(),
            config: |s| format!("url = '{}'\nbearer_token = '{SECRET}'", s.url("/hook")),
            ok: (200, "ok"),
            statuses: &[],
        },
        Channel {
            name: "slack",
            wasm: slack_wasm(),
            config: |s| format!("webhook_url = '{}'", s.url(&format!("/services/T0/B0/{SECRET}"))),
            ok: (200, "ok"),
            statuses: &[(404, Class::Misconfigured), (410, Class::Misconfigured)],
        },
        Channel {
            name: "pagerduty",
            wasm: pagerduty_wasm(),
            config: |s| format!("routing_key = '{SECRET}'\nurl = '{}'", s.url("/v2/enqueue")),
            ok: (202, r#"{"status":"success","dedup_key":"k"}"#),
            statuses: &[],
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
        // Every status class, each status the plugin classifies itself, and Retry-After.
        let mut statuses: Vec<(u16, Option<u64>)> =
            vec![(429, Some(12)), (500, None), (503, Some(3)), (401, None), (403, None), (400, None), (404, None)];
        for (status, _) in ch.statuses {
            if !statuses.iter().any(|(s, _)| s == status) {
                statuses.push((*status, None));
            }
        }
        for (status, retry_after) in statuses {
            let class = ch.statuses.iter().find(|(s, _)| *s == status).map_or(Class::standard(status), |(_, class)| *class);
            let expected = match class {
                Class::Retryable => (FailureKind::Retryable { retry_after: retry_after.map(Duration::from_secs) }, Blame::Remote),
                Class::Permanent => (FailureKind::Permanent, Blame::Remote),
                Class::Misconfigured => (FailureKind::Misconfigured, Blame::Configuration),
            };
            let header = retry_after.map(|s| s.to_string());
            let headers: Vec<(&str, &str)> = header.iter().map(|h| ("retry-after", h.as_str())).collect();
            sink.reply_with(status, &headers, "refused");
            let failure = r.deliver(&n).await.expect_err("a failure status");
            assert_eq!((failure.kind.clone(), failure.blame), expected, "{}: HTTP {status}: {failure}", ch.name);
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
    let channels = channels();
    let blessed = blessed(&channels);
    for ch in channels {
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
        if blessed.contains(&ch.name) {
            std::fs::write(&file, &rendered).unwrap();
        }
        let golden =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e} (write it with BELFRY_BLESS={})", file.display(), ch.name));
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
