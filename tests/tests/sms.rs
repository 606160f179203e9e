//! The SMS plugin against a stand-in that checks requests the way Twilio's Messages API does: Basic auth, a form body, E.164 numbers, 1,600 characters.

use belfry::plugin::{BindError, Receiver};
use belfry_tests::{HttpSink, TestRuntime, bind, notification, sms_wasm, spec};

const SID: &str = "AC0123456789abcdef0123456789abcdef";

async fn sms(rt: &TestRuntime, sink: &HttpSink) -> Receiver {
    sink.reply_with(201, &[("content-type", "application/json")], r#"{"sid":"SM0001","status":"queued"}"#);
    let plugin = rt.load(sms_wasm()).await;
    let config = format!(
        "account_sid = '{SID}'\nauth_token = 'tok'\nfrom = '+15005550006'\nto = ['+33612345678', '+4915123456789']\napi_url = '{}'",
        sink.url("")
    );
    bind(&plugin, spec("sms", &config, &[&sink.host()])).await
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

#[tokio::test]
async fn one_message_per_recipient_as_twilio_expects() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let sms = sms(&rt, &sink).await;
    let mut n = notification("sms", "DiskFull");
    n.title = Some("[FIRING:1] DiskFull".into());
    n.body = Some(format!("db1 is at 99% & rising {}", "x".repeat(3000)));
    let report = sms.deliver(&n).await.unwrap();
    assert_eq!(report.remote_id.as_deref(), Some("SM0001,SM0001"));
    let got = sink.wait_for(2).await;
    for (req, to) in got.iter().zip(["+33612345678", "+4915123456789"]) {
        assert_eq!(req.path, format!("/2010-04-01/Accounts/{SID}/Messages.json"));
        assert_eq!(req.header("content-type"), Some("application/x-www-form-urlencoded"));
        assert_eq!(req.header("authorization"), Some(format!("Basic {}", belfry_plugin_sdk_base64(&format!("{SID}:tok"))).as_str()));
        let fields = form(&req.body);
        assert_eq!(fields[0], ("To".into(), to.into()));
        assert_eq!(fields[1], ("From".into(), "+15005550006".into()));
        let body = &fields[2].1;
        assert!(body.starts_with("[FIRING:1] DiskFull\ndb1 is at 99% & rising"), "{body}");
        assert_eq!(body.chars().count(), 1600, "cut to Twilio's limit");
    }
}

fn belfry_plugin_sdk_base64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn numbers_must_be_e164() {
    let rt = TestRuntime::new();
    let plugin = rt.load(sms_wasm()).await;
    let base = format!("account_sid = '{SID}'\nauth_token = 't'\nfrom = '+15005550006'\n");
    for (extra, field) in [
        ("to = ['0612345678']", "to"),
        ("to = ['+0612345678']", "to"),
        ("to = ['+1234567890123456']", "to"),
        ("to = []", "to"),
        ("to = ['+1', '+2', '+3', '+4', '+5', '+6', '+7', '+8', '+9']", "to"),
    ] {
        match plugin.bind(spec("sms", &format!("{base}{extra}"), &["api.twilio.com"])).await {
            Err(BindError::Config(errors)) => assert_eq!(errors[0].field, field, "{extra}: {errors:?}"),
            Ok(_) => panic!("accepted `{extra}`"),
            Err(BindError::Plugin(f)) => panic!("{f}"),
        }
    }
    let bad_from = format!("account_sid = '{SID}'\nauth_token = 't'\nfrom = 'Belfry'\nto = ['+33612345678']");
    assert!(matches!(plugin.bind(spec("sms", &bad_from, &["api.twilio.com"])).await, Err(BindError::Config(e)) if e[0].field == "from"));
}
