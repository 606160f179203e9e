//! Black-box: acknowledging a group from a notification's link or the API; the ack survives a restart, a new alert re-triggers the group, and every step is audited.

use belfry_tests::{Daemon, HttpSink, http_exchange, http_request, slack_wasm};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");

fn config(sink: &HttpSink) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[plugins.slack]\npath = \"{}\"\n\n[[receivers]]\nname = \"chat\"\nplugin = \"slack\"\nallowed_hosts = [\"{}\"]\nallow_private_addresses = true\nconfig = {{ webhook_url = \"{}\" }}\n\n[route]\nreceiver = \"chat\"\ngroup_by = [\"alertname\"]\ngroup_wait = \"0s\"\ngroup_interval = \"200ms\"\nrepeat_interval = \"4h\"\n",
        slack_wasm().display(),
        sink.host(),
        sink.url("/services/T000/B000/XXXX")
    )
}

async fn post(daemon: &Daemon, instance: &str) {
    let body = format!(r#"[{{"labels":{{"alertname":"DiskFull","instance":"{instance}"}}}}]"#);
    let (status, text) = http_request("POST", &daemon.url("/api/v2/alerts"), &body).await;
    assert_eq!(status, 200, "{text}");
}

async fn acks(daemon: &Daemon) -> Vec<Value> {
    let (status, text) = http_request("GET", &daemon.url("/api/belfry/v1/acks"), "").await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str::<Value>(&text).unwrap().as_array().unwrap().clone()
}

/// The URL of the Slack message's "Acknowledge" button.
fn ack_button(message: &Value) -> Option<String> {
    let blocks = message["attachments"][0]["blocks"].as_array()?;
    let actions = blocks.iter().find(|b| b["type"] == "actions")?;
    let button = actions["elements"].as_array()?.iter().find(|e| e["text"]["text"] == "Acknowledge")?;
    button["url"].as_str().map(str::to_string)
}

#[tokio::test]
async fn a_notification_link_acks_its_group_until_a_new_alert_fires() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &config(&sink)).expect("daemon starts");
    post(&daemon, "db1").await;
    let first = sink.wait_for(1).await[0].json();
    let link = ack_button(&first).expect("a firing message has an Acknowledge button");
    assert!(link.starts_with(&daemon.url("/api/belfry/v1/ack/")), "{link}");

    // Opening the link (as a link preview or a mail scanner would) acknowledges nothing.
    let (status, headers, page) = http_exchange("GET", &link, "", &[]).await;
    assert_eq!(status, 200, "{page}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(headers["cache-control"], "no-store");
    assert!(page.contains("Acknowledge this alert group?") && page.contains("<form method=\"post\">"), "{page}");
    assert!(page.contains("alertname=&quot;DiskFull&quot;"), "names the group, escaped: {page}");
    assert!(page.contains("name=\"by\" value=\"\" required"), "asks who acknowledges: {page}");
    assert!(acks(&daemon).await.is_empty());

    // The form asks for a name: without one, nothing is acknowledged.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, _, page) = http_exchange("POST", &link, "by=+&comment=", &form).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("Say who you are") && page.contains("name=\"by\""), "{page}");
    assert!(acks(&daemon).await.is_empty());

    // With a name, its button acknowledges, and the name is remembered for the next link.
    let (status, headers, page) = http_exchange("POST", &link, "by=Alice+Martin&comment=resizing+%2Fvar", &form).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Acknowledged") && page.contains("acknowledged by Alice Martin"), "{page}");
    let cookie = headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("belfry_ack_by=Alice+Martin;") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let listed = acks(&daemon).await;
    assert_eq!(listed.len(), 1);
    assert_eq!((&listed[0]["ackedBy"], &listed[0]["comment"]), (&Value::from("Alice Martin"), &Value::from("resizing /var")));
    // The channel hears of it.
    let told = sink.wait_for(2).await[1].json();
    assert!(told["text"].as_str().unwrap().starts_with("[ACK by Alice Martin] DiskFull"), "{told}");
    assert!(ack_button(&told).is_none(), "nothing left to acknowledge");
    let group_key = listed[0]["groupKey"].as_str().unwrap().to_string();
    let (_, groups) = http_request("GET", &daemon.url("/api/v2/alerts/groups"), "").await;
    let groups: Value = serde_json::from_str(&groups).unwrap();
    assert_eq!(groups[0]["groupKey"], group_key.as_str());
    assert_eq!(groups[0]["ack"]["ackedBy"], "Alice Martin");
    assert!(groups[0]["ack"]["ackedAt"].as_str().unwrap().ends_with('Z') && groups[0]["ack"]["comment"].is_string(), "{groups}");
    daemon.audit_until(|r| r.iter().any(|r| r["action"] == "group.ack" && r["via"] == "link")).await;
    let (_, metrics) = http_request("GET", &daemon.url("/metrics"), "").await;
    assert!(metrics.contains("belfry_acknowledgements_total{tenant=\"default\",via=\"link\"} 1"), "{metrics}");

    // An edited link is refused.
    let mut forged = link.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let (status, _, page) = http_exchange("POST", &forged, "by=mallory", &form).await;
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("not valid"), "{page}");

    // The ack and the link's key survive kill -9.
    let daemon = daemon.kill_9_and_restart(BIN).expect("restarts");
    assert_eq!(acks(&daemon).await.len(), 1, "the ack is durable");
    // The restarted daemon listens on another port; the link's signed token is what counts.
    let token = link.rsplit('/').next().unwrap();
    let (status, _, page) = http_exchange("GET", &daemon.url(&format!("/api/belfry/v1/ack/{token}")), "", &[]).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Already acknowledged") && page.contains("Alice Martin"), "{page}");

    // A new alert in the group re-triggers it: notified (with a new button) and no longer acked.
    let seen = sink.count();
    // The outbox may redeliver the ack message after kill -9 (at least once); never a repeat.
    let firing = sink.requests().iter().filter(|r| !r.json()["text"].as_str().unwrap().starts_with("[ACK")).count();
    assert_eq!(firing, 1, "no repeat of the acknowledged group: {}", daemon.stderr());
    post(&daemon, "db2").await;
    // The first message after the restart may be that redelivered ack message.
    let mut next = seen + 1;
    let message = loop {
        let message = sink.wait_for(next).await[next - 1].json();
        if !message["text"].as_str().unwrap().starts_with("[ACK") {
            break message;
        }
        next += 1;
    };
    assert!(message["text"].as_str().unwrap().contains("FIRING:2"), "{message}");
    daemon.audit_until(|_| true).await;
    assert!(acks(&daemon).await.is_empty(), "re-triggered");
    // The new link's page fills in the name this browser gave before.
    let next_link = ack_button(&message).expect("a new Acknowledge button");
    let remembered = cookie.split(';').next().unwrap();
    let (_, _, page) = http_exchange("GET", &next_link, "", &[("cookie", remembered)]).await;
    assert!(page.contains("name=\"by\" value=\"Alice Martin\" required"), "{page}");
}

#[tokio::test]
async fn the_api_acks_and_withdraws_with_clear_errors() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &config(&sink)).expect("daemon starts");
    post(&daemon, "db1").await;
    sink.wait_for(1).await;
    let (_, groups) = http_request("GET", &daemon.url("/api/v2/alerts/groups"), "").await;
    let key = serde_json::from_str::<Value>(&groups).unwrap()[0]["groupKey"].as_str().unwrap().to_string();

    let url = daemon.url("/api/belfry/v1/acks");
    for (body, field) in [
        (serde_json::json!({"groupKey": key}).to_string(), "ackedBy"),
        (serde_json::json!({"groupKey": key, "ackedBy": " "}).to_string(), "ackedBy"),
        (serde_json::json!({"groupKey": "nope", "ackedBy": "alice"}).to_string(), "groupKey"),
        ("{".to_string(), "expected an ack"),
    ] {
        let (status, text) = http_request("POST", &url, &body).await;
        assert!(status == 400 || status == 404, "{body}: {status} {text}");
        assert!(text.contains(field), "{body}: {text}");
    }
    let (status, text) =
        http_request("POST", &url, &serde_json::json!({"groupKey": key, "ackedBy": "alice", "comment": "on it"}).to_string()).await;
    assert_eq!(status, 200, "{text}");
    let ack: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((ack["ackedBy"].as_str(), ack["comment"].as_str(), ack["alerts"].as_u64()), (Some("alice"), Some("on it"), Some(1)));

    let withdraw = format!("{url}?groupKey={}&by=alice", form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>());
    assert_eq!(http_request("DELETE", &withdraw, "").await.0, 200);
    let (status, text) = http_request("DELETE", &withdraw, "").await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("not acknowledged"), "{text}");
    assert_eq!(http_request("DELETE", &url, "").await.0, 400, "groupKey is required");
    let records = daemon.audit_until(|r| r.iter().any(|r| r["action"] == "group.unack")).await;
    let ack = records.iter().find(|r| r["action"] == "group.ack").unwrap();
    assert_eq!((ack["actor"].as_str(), ack["via"].as_str()), (Some("alice"), Some("api")));
}

#[tokio::test]
async fn a_custom_title_still_says_who_acknowledged_and_a_link_in_the_template_is_not_shown_twice() {
    let sink = HttpSink::start().await;
    let templates =
        "templates = { title = \"{{ commonLabels.alertname }} needs attention\", body = \"Acknowledge: {{ ackURL }}\" }\nconfig = ";
    let daemon = Daemon::start(BIN, &config(&sink).replacen("config = ", templates, 1)).expect("daemon starts");
    post(&daemon, "db1").await;
    let firing = sink.wait_for(1).await[0].json();
    assert_eq!(firing["text"], "DiskFull needs attention", "{firing}");
    assert!(firing.to_string().contains("Acknowledge: http"), "the template shows the link: {firing}");
    assert!(ack_button(&firing).is_none(), "so the plugin does not add its own: {firing}");

    let (_, groups) = http_request("GET", &daemon.url("/api/v2/alerts/groups"), "").await;
    let key = serde_json::from_str::<Value>(&groups).unwrap()[0]["groupKey"].as_str().unwrap().to_string();
    let body = serde_json::json!({"groupKey": key, "ackedBy": "alice"}).to_string();
    assert_eq!(http_request("POST", &daemon.url("/api/belfry/v1/acks"), &body).await.0, 200);
    let told = sink.wait_for(2).await[1].json();
    assert_eq!(told["text"], "[ACK by alice] DiskFull needs attention", "the acknowledgement never reads as the firing message: {told}");
}
