//! Black-box: alert groups, an upstream Alertmanager's webhook payload, and generic events.

use belfry_tests::{Daemon, HttpSink, http_request, webhook_daemon_config};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");

async fn daemon(sink: &HttpSink) -> Daemon {
    let config = webhook_daemon_config("hook", sink, "[runtime]\nmax_in_flight = 1");
    Daemon::start(BIN, &config).expect("daemon starts")
}

async fn call(daemon: &Daemon, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = http_request(method, &daemon.url(path), body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn alert_groups_have_alertmanagers_shape_and_filters() {
    let sink = HttpSink::start().await;
    let daemon = daemon(&sink).await;
    let alerts = r#"[{"labels":{"alertname":"A","team":"db"}},{"labels":{"alertname":"B","team":"web"}}]"#;
    assert_eq!(call(&daemon, "POST", "/api/v2/alerts", alerts).await.0, 200);
    let (status, groups) = call(&daemon, "GET", "/api/v2/alerts/groups", "").await;
    assert_eq!(status, 200);
    assert_eq!(groups.as_array().unwrap().len(), 2, "{groups}");
    let a = groups.as_array().unwrap().iter().find(|g| g["labels"]["alertname"] == "A").unwrap();
    assert_eq!(a["receiver"], json!({"name": "hook"}));
    // Alertmanager's alertGroup, with Belfry's groupKey and ack (null until acknowledged).
    let mut keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["ack", "alerts", "groupKey", "labels", "receiver"]);
    assert!(a["ack"].is_null() && a["groupKey"].as_str().unwrap().contains("alertname"), "{a}");
    assert_eq!(a["alerts"][0]["labels"], json!({"alertname": "A", "team": "db"}));
    assert_eq!(a["alerts"][0]["status"]["state"], "active");
    let (_, filtered) = call(&daemon, "GET", "/api/v2/alerts/groups?filter=team%3D%22web%22", "").await;
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(filtered[0]["labels"]["alertname"], "B");
    assert_eq!(call(&daemon, "GET", "/api/v2/alerts/groups?filter=oops", "").await.0, 400);
}

#[tokio::test]
async fn an_upstream_alertmanagers_webhook_is_ingested() {
    let sink = HttpSink::start().await;
    let daemon = daemon(&sink).await;
    let payload = |status_a: &str, ends_a: &str| {
        json!({
            "version": "4", "groupKey": "hook/...:{alertname=\"Up\"}", "truncatedAlerts": 0, "status": "firing",
            "receiver": "belfry", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
            "alerts": [
                {"status": status_a, "labels": {"alertname": "Up", "job": "api"}, "annotations": {"summary": "api down"},
                 "startsAt": "2026-11-23T10:00:00Z", "endsAt": ends_a, "generatorURL": "http://prom/g", "fingerprint": "ignored"},
                {"status": "resolved", "labels": {"alertname": "Old"}, "annotations": {},
                 "startsAt": "2026-11-23T09:00:00Z", "endsAt": "2026-11-23T09:10:00Z", "generatorURL": "", "fingerprint": "x"}
            ]
        })
        .to_string()
    };
    assert_eq!(call(&daemon, "POST", "/api/belfry/v1/alertmanager", &payload("firing", "0001-01-01T00:00:00Z")).await.0, 200);
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].json()["commonLabels"], json!({"alertname": "Up", "job": "api"}));
    assert_eq!(got[0].json()["status"], "firing");
    // A firing alert from upstream stays firing until upstream resolves it (not resolve_timeout).
    let (_, listed) = call(&daemon, "GET", "/api/v2/alerts", "").await;
    let ends: chrono::DateTime<chrono::Utc> = listed[0]["endsAt"].as_str().unwrap().parse().unwrap();
    assert!(ends > chrono::Utc::now() + chrono::Duration::hours(23), "{ends}");

    assert_eq!(call(&daemon, "POST", "/api/belfry/v1/alertmanager", &payload("resolved", "2026-11-23T10:30:00Z")).await.0, 200);
    let got = sink.wait_for(2).await;
    assert_eq!(got[1].json()["status"], "resolved");
    assert_eq!(got[1].json()["alerts"][0]["endsAt"], "2026-11-23T10:30:00Z");
    assert!(sink.requests().iter().all(|r| r.json()["commonLabels"]["alertname"] != "Old"), "a never-fired resolve is not news");

    let (status, err) = call(&daemon, "POST", "/api/belfry/v1/alertmanager", &payload("pending", "0001-01-01T00:00:00Z")).await;
    assert_eq!(status, 400);
    assert!(err["message"].as_str().unwrap().starts_with("alerts[0].status"), "{err}");
    assert_eq!(call(&daemon, "POST", "/api/belfry/v1/alertmanager", "[]").await.0, 400);
}

#[tokio::test]
async fn generic_events_trigger_and_resolve_by_dedup_key() {
    let sink = HttpSink::start().await;
    let daemon = daemon(&sink).await;
    let trigger = json!({"summary": "disk 95% full on db-1", "source": "db-1", "severity": "critical", "labels": {"team": "db"}, "dedup_key": "disk-db-1"});
    let (status, answer) = call(&daemon, "POST", "/api/belfry/v1/events", &trigger.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["dedup_key"], "disk-db-1");
    let got = sink.wait_for(1).await[0].json();
    assert_eq!(
        got["commonLabels"],
        json!({"alertname": "event", "dedup_key": "disk-db-1", "severity": "critical", "source": "db-1", "team": "db"})
    );
    assert_eq!(got["commonAnnotations"]["summary"], "disk 95% full on db-1");
    assert_eq!(got["alerts"][0]["fingerprint"], answer["fingerprint"]);

    // The resolve names the dedup key only; it resolves the held event whatever its labels.
    let resolve = json!({"summary": "disk ok", "source": "db-1", "dedup_key": "disk-db-1", "resolve": true});
    assert_eq!(call(&daemon, "POST", "/api/belfry/v1/events", &resolve.to_string()).await.0, 200);
    let got = sink.wait_for(2).await[1].json();
    assert_eq!(got["status"], "resolved");
    assert_eq!(got["commonLabels"]["team"], "db");

    // Without a dedup key, the same source and summary give the same key.
    let (_, first) = call(&daemon, "POST", "/api/belfry/v1/events", r#"{"summary":"s","source":"x"}"#).await;
    let (_, second) = call(&daemon, "POST", "/api/belfry/v1/events", r#"{"summary":"s","source":"x"}"#).await;
    assert_eq!(first["dedup_key"], second["dedup_key"]);

    for (body, field) in [
        (r#"{"summary":"s","source":"x","severity":"urgent"}"#, "severity"),
        (r#"{"summary":"","source":"x"}"#, "summary"),
        (r#"{"summary":"s"}"#, "."),
        (r#"{"summary":"s","source":"x","colour":"red"}"#, "colour"),
        (r#"{"summary":"s","source":"x","labels":{"bad-name":"v"}}"#, "labels.bad-name"),
    ] {
        let (status, err) = call(&daemon, "POST", "/api/belfry/v1/events", body).await;
        assert_eq!(status, 400, "{body}");
        assert!(err["message"].as_str().unwrap().starts_with(field), "{body}: {err}");
    }
}
