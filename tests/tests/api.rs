//! Black-box: the Alertmanager API v2 read endpoints, in the shapes amtool and Prometheus expect.

use belfry_tests::{Daemon, HttpSink, http_request, webhook_daemon_config};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");

fn config(sink: &HttpSink) -> String {
    webhook_daemon_config("team-hook", sink, "")
}

async fn get_json(daemon: &Daemon, path: &str) -> (u16, Value) {
    let (status, body) = http_request("GET", &daemon.url(path), "").await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}")))
}

fn names(alerts: &Value) -> Vec<&str> {
    alerts.as_array().unwrap().iter().map(|a| a["labels"]["alertname"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn get_alerts_lists_unresolved_alerts_with_filters() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &config(&sink)).expect("daemon starts");
    let body = r#"[
      {"labels":{"alertname":"A","team":"db","severity":"page"},"annotations":{"summary":"a"},"startsAt":"2026-11-23T10:00:00Z","generatorURL":"http://g/a"},
      {"labels":{"alertname":"B","team":"web","severity":"ticket"}},
      {"labels":{"alertname":"Old","team":"db"},"startsAt":"2026-11-23T09:00:00Z","endsAt":"2026-11-23T09:30:00Z"}
    ]"#;
    assert_eq!(http_request("POST", &daemon.url("/api/v2/alerts"), body).await.0, 200);

    let (status, all) = get_json(&daemon, "/api/v2/alerts").await;
    assert_eq!(status, 200);
    let mut listed = names(&all);
    listed.sort();
    assert_eq!(listed, ["A", "B"], "resolved alerts are not listed");
    let a = all.as_array().unwrap().iter().find(|a| a["labels"]["alertname"] == "A").unwrap();
    assert_eq!(a["annotations"]["summary"], "a");
    assert_eq!(a["startsAt"], "2026-11-23T10:00:00Z");
    assert_eq!(a["generatorURL"], "http://g/a");
    assert_eq!(a["receivers"], serde_json::json!([{"name": "team-hook"}]));
    assert_eq!(a["status"]["state"], "active");
    assert_eq!(a["status"], serde_json::json!({"state": "active", "silencedBy": [], "inhibitedBy": [], "mutedBy": []}));
    assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
    // Alertmanager's gettableAlert, no field more or less.
    let mut keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["annotations", "endsAt", "fingerprint", "generatorURL", "labels", "receivers", "startsAt", "status", "updatedAt"]);
    assert!(a["updatedAt"].as_str().unwrap().ends_with('Z'));
    assert!(a["endsAt"].as_str().unwrap() > "2026-11-23T10:00:00Z", "endsAt from resolve_timeout");

    for (query, expected) in [
        ("filter=team%3D%22db%22", vec!["A"]),
        ("filter=severity%3D~%22page%7Cticket%22&filter=team!%3D%22db%22", vec!["B"]),
        ("filter=alertname%3D~%22Z.*%22", vec![]),
        ("receiver=team-.*", vec!["A", "B"]),
        ("receiver=other", vec![]),
        ("active=false", vec![]),
        ("active=true&silenced=true&inhibited=true&unprocessed=true", vec!["A", "B"]),
    ] {
        let (status, got) = get_json(&daemon, &format!("/api/v2/alerts?{query}")).await;
        assert_eq!(status, 200, "{query}: {got}");
        let mut got = names(&got);
        got.sort();
        assert_eq!(got, expected, "{query}");
    }

    for (query, needle) in [
        ("filter=team", "filter[0]"),
        ("filter=a%3D~%22(%22", "regular expression"),
        ("active=maybe", "active"),
        ("receiver=(", "receiver"),
        ("bogus=1", "bogus"),
    ] {
        let (status, err) = get_json(&daemon, &format!("/api/v2/alerts?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(err["message"].as_str().unwrap().contains(needle), "{query}: {err}");
    }
}

#[tokio::test]
async fn status_and_receivers_have_alertmanagers_shape() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &config(&sink)).expect("daemon starts");
    let (status, s) = get_json(&daemon, "/api/v2/status").await;
    assert_eq!(status, 200);
    assert_eq!(s["cluster"]["status"], "disabled");
    assert!(s["versionInfo"]["version"].is_string());
    assert!(s["uptime"].as_str().unwrap().ends_with('Z'));
    let original = s["config"]["original"].as_str().unwrap();
    assert!(original.contains("team-hook"));
    assert!(!original.contains(&sink.url("/team-hook")), "no receiver settings are exposed: {original}");

    let (status, r) = get_json(&daemon, "/api/v2/receivers").await;
    assert_eq!(status, 200);
    assert_eq!(r, serde_json::json!([{"name": "team-hook"}]));
}
