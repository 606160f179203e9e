//! Black-box: silences through Alertmanager's API: lifecycle, muting, release on expiry, validation, persistence.

use belfry_tests::{Daemon, HttpSink, http_request, webhook_daemon_config};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");

/// One delivery at a time, so deliveries arrive in queue order: when an alert queued after a
/// silenced one has arrived, the silenced one would have arrived before it.
fn config(sink: &HttpSink) -> String {
    webhook_daemon_config("team-hook", sink, "[runtime]\nmax_in_flight = 1\n\n[alerts]\nsweep_interval = \"100ms\"")
}

async fn call(daemon: &Daemon, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = http_request(method, &daemon.url(path), body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn silence_body(id: Option<&str>, matchers: Value, ends_in_minutes: i64) -> String {
    let now = chrono::Utc::now();
    let mut body = json!({
        "matchers": matchers,
        "startsAt": now.to_rfc3339(),
        "endsAt": (now + chrono::Duration::minutes(ends_in_minutes)).to_rfc3339(),
        "createdBy": "alice",
        "comment": "database maintenance",
    });
    if let Some(id) = id {
        body["id"] = json!(id);
    }
    body.to_string()
}

#[tokio::test]
async fn a_silence_mutes_matching_alerts_until_it_is_expired() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &config(&sink)).expect("daemon starts");
    let matchers = json!([{"name": "service", "value": "db", "isRegex": false, "isEqual": true}]);
    let (status, created) = call(&daemon, "POST", "/api/v2/silences", &silence_body(None, matchers.clone(), 60)).await;
    assert_eq!(status, 200, "{created}");
    let id = created["silenceID"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");

    let (_, listed) = call(&daemon, "GET", "/api/v2/silences", "").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["status"]["state"], "active");
    assert_eq!(listed[0]["matchers"], matchers);
    assert_eq!(listed[0]["createdBy"], "alice");
    let (status, one) = call(&daemon, "GET", &format!("/api/v2/silence/{id}"), "").await;
    assert_eq!((status, &one["comment"]), (200, &json!("database maintenance")));

    // One silenced alert, one not: only the second is delivered.
    let alerts = r#"[{"labels":{"alertname":"DiskFull","service":"db"}},{"labels":{"alertname":"CpuHigh","service":"web"}}]"#;
    assert_eq!(call(&daemon, "POST", "/api/v2/alerts", alerts).await.0, 200);
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].json()["commonLabels"]["alertname"], "CpuHigh");

    let (_, listed) = call(&daemon, "GET", "/api/v2/alerts?filter=service%3D%22db%22", "").await;
    assert_eq!(listed[0]["status"]["state"], "suppressed");
    assert_eq!(listed[0]["status"]["silencedBy"], json!([id]));
    let (_, active_only) = call(&daemon, "GET", "/api/v2/alerts?silenced=false", "").await;
    assert_eq!(active_only.as_array().unwrap().len(), 1);
    assert_eq!(active_only[0]["labels"]["alertname"], "CpuHigh");

    // Expire it: the held-back firing notification goes out at the next sweep.
    let (status, _) = call(&daemon, "DELETE", &format!("/api/v2/silence/{id}"), "").await;
    assert_eq!(status, 200);
    let got = sink.wait_for(2).await;
    assert_eq!(got[1].json()["commonLabels"]["alertname"], "DiskFull");
    let (_, one) = call(&daemon, "GET", &format!("/api/v2/silence/{id}"), "").await;
    assert_eq!(one["status"]["state"], "expired");
    assert_eq!(call(&daemon, "DELETE", &format!("/api/v2/silence/{id}"), "").await.0, 400, "already expired");
}

#[tokio::test]
async fn updates_validation_and_filters() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &config(&sink)).expect("daemon starts");
    let db = json!([{"name": "service", "value": "db", "isRegex": false, "isEqual": true}]);
    let (_, created) = call(&daemon, "POST", "/api/v2/silences", &silence_body(None, db.clone(), 60)).await;
    let id = created["silenceID"].as_str().unwrap().to_string();
    let (_, one) = call(&daemon, "GET", &format!("/api/v2/silence/{id}"), "").await;

    // Extend it with the same id and start: updated in place.
    let mut extended: Value = serde_json::from_str(&silence_body(Some(&id), db.clone(), 120)).unwrap();
    extended["startsAt"] = one["startsAt"].clone();
    let (status, updated) = call(&daemon, "POST", "/api/v2/silences", &extended.to_string()).await;
    assert_eq!((status, updated["silenceID"].as_str().unwrap()), (200, id.as_str()));

    let web = json!([{"name": "service", "value": "web", "isRegex": false, "isEqual": true}]);
    call(&daemon, "POST", "/api/v2/silences", &silence_body(None, web, 60)).await;
    let (_, filtered) = call(&daemon, "GET", "/api/v2/silences?filter=service%3D%22db%22", "").await;
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(filtered[0]["id"], id);

    for (body, status, needle) in [
        (silence_body(None, json!([]), 60), 400, "at least one matcher"),
        (silence_body(None, json!([{"name": "a", "value": ".*", "isRegex": true, "isEqual": true}]), 60), 400, "empty string"),
        (silence_body(None, db.clone(), -5), 400, "endsAt"),
        (silence_body(Some("00000000-0000-0000-0000-000000000000"), db.clone(), 60), 404, "not found"),
        (r#"{"matchers": "nope"}"#.to_string(), 400, "matchers"),
        ("not json".to_string(), 400, "expected a silence"),
    ] {
        let (got, err) = call(&daemon, "POST", "/api/v2/silences", &body).await;
        assert_eq!(got, status, "{body}: {err}");
        assert!(err["message"].as_str().unwrap().contains(needle), "{body}: {err}");
    }
    assert_eq!(call(&daemon, "GET", "/api/v2/silence/nope", "").await.0, 404);
    assert_eq!(call(&daemon, "GET", "/api/v2/silences?filter=bad", "").await.0, 400);
}

#[tokio::test]
async fn silences_survive_kill_9() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &config(&sink)).expect("daemon starts");
    let matchers = json!([{"name": "alertname", "value": "Noisy", "isRegex": false, "isEqual": true}]);
    let (_, created) = call(&daemon, "POST", "/api/v2/silences", &silence_body(None, matchers, 60)).await;
    let id = created["silenceID"].as_str().unwrap().to_string();
    let daemon = daemon.kill_9_and_restart(BIN).expect("restarts");
    let (status, one) = call(&daemon, "GET", &format!("/api/v2/silence/{id}"), "").await;
    assert_eq!((status, &one["status"]["state"]), (200, &json!("active")));
    // Still muting after the restart: the marker alert posted after the silenced one arrives alone.
    let alerts = r#"[{"labels":{"alertname":"Noisy"}},{"labels":{"alertname":"Marker"}}]"#;
    assert_eq!(call(&daemon, "POST", "/api/v2/alerts", alerts).await.0, 200);
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].json()["commonLabels"]["alertname"], "Marker");
    assert!(sink.requests().iter().all(|r| r.json()["commonLabels"]["alertname"] != "Noisy"));
}
