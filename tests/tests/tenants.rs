//! Black-box: tenants from directories, token auth, strict isolation on every endpoint, the trusted-proxy header, reload.

use belfry_tests::{Daemon, HttpSink, http_request_with, webhook_receiver_toml, webhook_wasm};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");

fn sha(token: &str) -> String {
    let hash: String = belfry::tenant::hash_token(token).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hash}")
}

fn main_config(extra_server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_tokens = ["{admin}"]
{extra_server}

[tenants]
dir = "tenants"

[plugins.webhook]
path = "{webhook}"
"#,
        admin = sha("admin"),
        webhook = webhook_wasm().display(),
    )
}

fn tenant_toml(token: &str, receiver: &str, sink: &HttpSink) -> String {
    format!("tokens = [\"{}\"]\n\n{}", sha(token), webhook_receiver_toml(receiver, sink))
}

async fn call(daemon: &Daemon, method: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, text) = http_request_with(method, &daemon.url(path), body, headers).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

#[tokio::test]
async fn tenants_are_isolated_on_every_endpoint() {
    let (sink_a, sink_b) = (HttpSink::start().await, HttpSink::start().await);
    let daemon = Daemon::start_with_files(
        BIN,
        &main_config(""),
        &[
            (
                "tenants/acme/tenant.toml",
                &format!(
                    "{}\n[[schedules]]\nname = \"acme-primary\"\n[[schedules.rotations]]\nreceivers = [\"acme-hook\"]\nstart = \"2026-01-01T00:00\"\nlength = \"1d\"\n",
                    tenant_toml("token-a", "acme-hook", &sink_a)
                ),
            ),
            ("tenants/bolt/tenant.toml", &tenant_toml("token-b", "bolt-hook", &sink_b)),
        ],
    )
    .expect("daemon starts");
    let (ha, hb) = (bearer("token-a"), bearer("token-b"));
    let a = [(ha.0, ha.1.as_str())];
    let b = [(hb.0, hb.1.as_str())];
    // On-call schedules: each tenant sees its own.
    assert_eq!(call(&daemon, "GET", "/api/belfry/v1/oncall", "", &a).await.1["onCall"][0]["schedule"], "acme-primary");
    assert_eq!(call(&daemon, "GET", "/api/belfry/v1/oncall", "", &b).await.1["onCall"], serde_json::json!([]));

    // POST: each tenant's alert reaches only its own receiver.
    let (status, _) = call(&daemon, "POST", "/api/v2/alerts", r#"[{"labels":{"alertname":"AcmeDown","secret_project":"x1"}}]"#, &a).await;
    assert_eq!(status, 200);
    let (status, _) = call(&daemon, "POST", "/api/v2/alerts", r#"[{"labels":{"alertname":"BoltDown"}}]"#, &b).await;
    assert_eq!(status, 200);
    assert_eq!(sink_a.wait_for(1).await[0].json()["commonLabels"]["alertname"], "AcmeDown");
    assert_eq!(sink_b.wait_for(1).await[0].json()["commonLabels"]["alertname"], "BoltDown");
    assert_eq!(sink_a.requests().len(), 1);
    assert_eq!(sink_b.requests().len(), 1);

    // GET alerts: each sees its own only, with or without filters that would match the other's.
    let (_, listed) = call(&daemon, "GET", "/api/v2/alerts", "", &b).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["labels"]["alertname"], "BoltDown");
    let (_, listed) = call(&daemon, "GET", "/api/v2/alerts?filter=alertname%3D%22AcmeDown%22", "", &b).await;
    assert_eq!(listed, serde_json::json!([]));
    let (_, listed) = call(&daemon, "GET", "/api/v2/alerts?receiver=acme-hook", "", &b).await;
    assert_eq!(listed, serde_json::json!([]));
    let (_, groups) = call(&daemon, "GET", "/api/v2/alerts/groups", "", &b).await;
    assert_eq!(groups.as_array().unwrap().len(), 1, "{groups}");
    assert_eq!(groups[0]["labels"]["alertname"], "BoltDown");

    // Belfry's own ingest formats land in the caller's tenant only.
    let event = r#"{"summary":"bolt event","source":"bolt-1"}"#;
    assert_eq!(call(&daemon, "POST", "/api/belfry/v1/events", event, &b).await.0, 200);
    let upstream = r#"{"alerts":[{"status":"firing","labels":{"alertname":"BoltUpstream"},"annotations":{},"startsAt":"2026-11-23T10:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":""}]}"#;
    assert_eq!(call(&daemon, "POST", "/api/belfry/v1/alertmanager", upstream, &b).await.0, 200);
    assert_eq!(sink_b.wait_for(3).await.len(), 3);
    let (_, acme_view) = call(&daemon, "GET", "/api/v2/alerts", "", &a).await;
    assert_eq!(acme_view.as_array().unwrap().len(), 1, "acme sees only its own: {acme_view}");

    // Receivers and status name only the caller's receivers.
    let (_, receivers) = call(&daemon, "GET", "/api/v2/receivers", "", &b).await;
    assert_eq!(receivers, serde_json::json!([{"name": "bolt-hook"}]));
    let (_, status) = call(&daemon, "GET", "/api/v2/status", "", &b).await;
    let text = status.to_string();
    assert!(text.contains("bolt") && !text.contains("acme") && !text.contains("x1"), "{text}");

    // Silences: B can neither see nor touch A's.
    let silence = serde_json::json!({
        "matchers": [{"name": "alertname", "value": "AcmeDown", "isRegex": false, "isEqual": true}],
        "startsAt": chrono::Utc::now().to_rfc3339(),
        "endsAt": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
        "createdBy": "acme-ops", "comment": "acme maintenance",
    });
    let (status, created) = call(&daemon, "POST", "/api/v2/silences", &silence.to_string(), &a).await;
    assert_eq!(status, 200, "{created}");
    let id = created["silenceID"].as_str().unwrap().to_string();
    assert_eq!(call(&daemon, "GET", "/api/v2/silences", "", &b).await.1, serde_json::json!([]));
    assert_eq!(call(&daemon, "GET", &format!("/api/v2/silence/{id}"), "", &b).await.0, 404);
    assert_eq!(call(&daemon, "DELETE", &format!("/api/v2/silence/{id}"), "", &b).await.0, 404);
    let mut takeover = silence.clone();
    takeover["id"] = serde_json::json!(id);
    assert_eq!(call(&daemon, "POST", "/api/v2/silences", &takeover.to_string(), &b).await.0, 404);
    let (_, still) = call(&daemon, "GET", &format!("/api/v2/silence/{id}"), "", &a).await;
    assert_eq!(still["status"]["state"], "active");

    // Acks: B can neither ack, list nor withdraw A's.
    let (_, groups_a) = call(&daemon, "GET", "/api/v2/alerts/groups", "", &a).await;
    let acme_key = groups_a[0]["groupKey"].as_str().unwrap().to_string();
    let ack = serde_json::json!({"groupKey": acme_key, "ackedBy": "mallory"}).to_string();
    assert_eq!(call(&daemon, "POST", "/api/belfry/v1/acks", &ack, &b).await.0, 404);
    let ack = serde_json::json!({"groupKey": acme_key, "ackedBy": "alice"}).to_string();
    assert_eq!(call(&daemon, "POST", "/api/belfry/v1/acks", &ack, &a).await.0, 200);
    assert_eq!(call(&daemon, "GET", "/api/belfry/v1/acks", "", &b).await.1, serde_json::json!([]));
    let unack = format!("/api/belfry/v1/acks?groupKey={}", form_urlencoded::byte_serialize(acme_key.as_bytes()).collect::<String>());
    assert_eq!(call(&daemon, "DELETE", &unack, "", &b).await.0, 404);
    assert_eq!(call(&daemon, "GET", "/api/belfry/v1/acks", "", &a).await.1.as_array().unwrap().len(), 1, "still acked");

    // No token, a wrong token: 401 on every tenant endpoint, saying nothing about tenants.
    let silence_path = format!("/api/v2/silence/{id}");
    for (method, path) in [
        ("GET", "/api/v2/alerts"),
        ("POST", "/api/v2/alerts"),
        ("GET", "/api/v2/status"),
        ("GET", "/api/v2/receivers"),
        ("GET", "/api/belfry/v1/receivers"),
        ("GET", "/api/v2/silences"),
        ("POST", "/api/v2/silences"),
        ("GET", silence_path.as_str()),
        ("DELETE", silence_path.as_str()),
        ("GET", "/api/v2/alerts/groups"),
        ("POST", "/api/belfry/v1/alertmanager"),
        ("POST", "/api/belfry/v1/events"),
        ("GET", "/api/belfry/v1/acks"),
        ("POST", "/api/belfry/v1/acks"),
        ("DELETE", "/api/belfry/v1/acks"),
        ("GET", "/api/belfry/v1/oncall"),
    ] {
        for headers in [vec![], vec![("authorization", "Bearer nope")], vec![("x-scope-orgid", "acme")]] {
            let (status, body) = call(&daemon, method, path, r#"[{"labels":{"alertname":"X"}}]"#, &headers).await;
            assert_eq!(status, 401, "{method} {path} {headers:?}: {body}");
            assert!(!body.to_string().contains("acme") && !body.to_string().contains("bolt"), "{body}");
        }
    }
    // Health stays open; reload and metrics (they name every tenant) need the admin token.
    assert_eq!(call(&daemon, "GET", "/-/healthy", "", &[]).await.0, 200);
    assert_eq!(call(&daemon, "POST", "/-/reload", "", &a).await.0, 403);
    for headers in [vec![], a.to_vec(), vec![("x-scope-orgid", "acme")]] {
        let (status, body) = call(&daemon, "GET", "/metrics", "", &headers).await;
        assert_eq!(status, 403, "{headers:?}: {body}");
        assert!(!body.to_string().contains("bolt"), "{body}");
    }
    assert_eq!(sink_a.requests().len(), 1, "nothing leaked across");
    assert_eq!(sink_b.requests().len(), 3);
}

#[tokio::test]
async fn scope_org_id_is_honoured_only_behind_a_trusted_proxy() {
    let sink = HttpSink::start().await;
    let files = [("tenants/acme/tenant.toml", tenant_toml("token-a", "acme-hook", &sink))];
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let daemon = Daemon::start_with_files(BIN, &main_config("trust_scope_org_id = true"), &files).expect("daemon starts");
    let (status, receivers) = call(&daemon, "GET", "/api/v2/receivers", "", &[("x-scope-orgid", "acme")]).await;
    assert_eq!((status, receivers), (200, serde_json::json!([{"name": "acme-hook"}])));
    assert_eq!(call(&daemon, "GET", "/api/v2/receivers", "", &[("x-scope-orgid", "nobody")]).await.0, 401);
}

#[tokio::test]
async fn reload_adds_changes_and_removes_tenants_and_refuses_bad_configs() {
    let (sink_a, sink_c) = (HttpSink::start().await, HttpSink::start().await);
    let acme = tenant_toml("token-a", "acme-hook", &sink_a);
    let daemon = Daemon::start_with_files(BIN, &main_config(""), &[("tenants/acme/tenant.toml", &acme)]).expect("daemon starts");
    let admin = bearer("admin");
    let admin = [(admin.0, admin.1.as_str())];
    let c = bearer("token-c");
    let c = [(c.0, c.1.as_str())];
    let a = bearer("token-a");
    let a = [(a.0, a.1.as_str())];

    assert_eq!(call(&daemon, "GET", "/api/v2/receivers", "", &c).await.0, 401);
    // An alert that must survive acme's reconfiguration.
    assert_eq!(call(&daemon, "POST", "/api/v2/alerts", r#"[{"labels":{"alertname":"Kept"}}]"#, &a).await.0, 200);

    // Add a tenant: it works without a restart.
    daemon.write_file("tenants/cargo/tenant.toml", Some(&tenant_toml("token-c", "cargo-hook", &sink_c)));
    let (status, body) = call(&daemon, "POST", "/-/reload", "", &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenants"], 2);
    assert_eq!(call(&daemon, "POST", "/api/v2/alerts", r#"[{"labels":{"alertname":"CargoUp"}}]"#, &c).await.0, 200);
    assert_eq!(sink_c.wait_for(1).await[0].json()["receiver"], "cargo-hook");

    // A broken tenant file: refused with file and key, the previous tenants keep working.
    daemon.write_file(
        "tenants/cargo/tenant.toml",
        Some(&tenant_toml("token-c", "cargo-hook", &sink_c).replace("plugin = \"webhook\"", "plugin = \"nope\"")),
    );
    let (status, body) = call(&daemon, "POST", "/-/reload", "", &admin).await;
    assert_eq!(status, 400);
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("tenants/cargo/tenant.toml:") && message.contains(": receivers[0].plugin: unknown plugin"), "{message}");
    assert_eq!(call(&daemon, "GET", "/api/v2/receivers", "", &c).await.0, 200, "old config still in effect");
    // The tenant sees the refusal in its own API, with its file and key; another tenant sees
    // nothing of it.
    let (status, seen) = call(&daemon, "GET", "/api/belfry/v1/config", "", &c).await;
    assert_eq!(status, 200, "{seen}");
    let rejection = &seen["lastRejection"];
    assert!(rejection["error"].as_str().unwrap().contains("tenants/cargo/tenant.toml:"), "{seen}");
    assert!(rejection["error"].as_str().unwrap().contains("receivers[0].plugin: unknown plugin"), "{seen}");
    assert_eq!((&rejection["by"], &rejection["current"], &seen["tenant"]), (&"api".into(), &true.into(), &"cargo".into()), "{seen}");
    assert_eq!(seen["routing"]["loadedBy"], "api", "the configuration still routing: {seen}");
    let (_, acme_seen) = call(&daemon, "GET", "/api/belfry/v1/config", "", &a).await;
    assert!(acme_seen["lastRejection"].is_null(), "acme's files were fine: {acme_seen}");
    let (status, metrics) = call(&daemon, "GET", "/metrics", "", &admin).await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_string();
    for line in [
        "alertmanager_config_last_reload_successful{tenant=\"cargo\"} 0",
        "alertmanager_alerts_received_total{tenant=\"cargo\",status=\"firing\"} 1",
        "alertmanager_notifications_total{tenant=\"cargo\",receiver=\"cargo-hook\",integration=\"webhook\"} 1",
        "alertmanager_alerts{tenant=\"acme\",state=\"active\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in:\n{metrics}");
    }

    // Change acme (rename its receiver): its alerts stay.
    daemon.write_file("tenants/cargo/tenant.toml", Some(&tenant_toml("token-c", "cargo-hook", &sink_c)));
    daemon.write_file("tenants/acme/tenant.toml", Some(&acme.replace("acme-hook", "acme-pager")));
    assert_eq!(call(&daemon, "POST", "/-/reload", "", &admin).await.0, 200);
    let (_, receivers) = call(&daemon, "GET", "/api/v2/receivers", "", &a).await;
    assert_eq!(receivers, serde_json::json!([{"name": "acme-pager"}]));
    let (_, listed) = call(&daemon, "GET", "/api/v2/alerts", "", &a).await;
    assert_eq!(listed[0]["labels"]["alertname"], "Kept", "{listed}");
    assert_eq!(listed[0]["receivers"], serde_json::json!([{"name": "acme-pager"}]));

    let (_, metrics) = call(&daemon, "GET", "/metrics", "", &admin).await;
    assert!(metrics.as_str().unwrap().contains("alertmanager_config_last_reload_successful{tenant=\"cargo\"} 1"), "{metrics}");
    let (_, seen) = call(&daemon, "GET", "/api/belfry/v1/config", "", &c).await;
    assert_eq!(seen["lastRejection"]["current"], false, "a configuration went live after the refusal: {seen}");

    // Remove cargo: its token stops working, and its series go.
    daemon.write_file("tenants/cargo/tenant.toml", None);
    assert_eq!(call(&daemon, "POST", "/-/reload", "", &admin).await.0, 200);
    assert_eq!(call(&daemon, "GET", "/api/v2/receivers", "", &c).await.0, 401);
    let (_, metrics) = call(&daemon, "GET", "/metrics", "", &admin).await;
    assert!(!metrics.as_str().unwrap().contains("last_reload_successful{tenant=\"cargo\"}"), "{metrics}");
}

#[test]
fn bad_tenant_directories_are_named() {
    let sink_host = "127.0.0.1:9";
    let tenant = format!(
        "tokens = [\"sha256:{}\"]\n[[receivers]]\nname = \"r\"\nplugin = \"webhook\"\nallowed_hosts = [\"{sink_host}\"]\nconfig = {{ url = \"http://{sink_host}/\" }}\n[route]\nreceiver = \"r\"\n",
        "ab".repeat(32)
    );
    for (path, text, expected) in [
        ("tenants/Bad Name/tenant.toml", tenant.clone(), "tenants/Bad Name/tenant.toml: `Bad Name` is not a valid tenant name"),
        ("tenants/acme/tenant.toml", tenant.replace("sha256:", "md5:"), "tenants/acme/tenant.toml:1: tokens[0]"),
        ("tenants/acme/tenant.toml", tenant.replace("receiver = \"r\"", "receiver = \"x\""), "tenants/acme/tenant.toml:8: route.receiver"),
        (
            "tenants/acme/tenant.toml",
            tenant.replace("[route]", "[route]\nbogus = 1"),
            "tenants/acme/tenant.toml:8: route.bogus: unknown field `bogus`",
        ),
        ("tenants/acme/other.toml", tenant.clone(), "tenants/acme/tenant.toml: cannot read it"),
    ] {
        let failed = match Daemon::start_with_files(BIN, &main_config(""), &[(path, &text)]) {
            Ok(_) => panic!("accepted {path}"),
            Err(f) => f,
        };
        assert_eq!(failed.code, Some(2), "{}", failed.stderr);
        assert!(failed.stderr.contains(expected), "expected `{expected}` in:\n{}", failed.stderr);
    }
}

#[tokio::test]
async fn a_burst_in_one_tenant_does_not_queue_another_tenants_notification_behind_all_of_it() {
    // One delivery at a time, and the shared channel hangs: acme's 300 alerts, each its own
    // group, are all due at once; bolt's one alert comes while acme's first notification hangs.
    let sink = HttpSink::start().await;
    sink.hold_replies(true);
    let config = format!("{}\n[runtime]\nmax_in_flight = 1\n", main_config(""));
    let daemon = Daemon::start_with_files(
        BIN,
        &config,
        &[
            ("tenants/acme/tenant.toml", &tenant_toml("token-a", "acme-hook", &sink)),
            ("tenants/bolt/tenant.toml", &tenant_toml("token-b", "bolt-hook", &sink)),
        ],
    )
    .expect("daemon starts");
    let (ha, hb) = (bearer("token-a"), bearer("token-b"));
    let burst: Vec<String> = (0..300).map(|i| format!(r#"{{"labels":{{"alertname":"Burst","n":"{i}"}}}}"#)).collect();
    let (status, _) = call(&daemon, "POST", "/api/v2/alerts", &format!("[{}]", burst.join(",")), &[(ha.0, &ha.1)]).await;
    assert_eq!(status, 200);
    sink.wait_for(1).await;
    let (status, _) = call(&daemon, "POST", "/api/v2/alerts", r#"[{"labels":{"alertname":"BoltDown"}}]"#, &[(hb.0, &hb.1)]).await;
    assert_eq!(status, 200);
    sink.hold_replies(false);

    let got = sink.wait_for(301).await;
    let bolt = got.iter().position(|r| r.path == "/bolt-hook").expect("bolt's notification arrives");
    // The flusher decides a batch of each tenant's due groups per pass (16 with one runner),
    // the next pass once few are left queued: bolt's is decided in the pass after it came,
    // not behind the whole burst (it was the 301st when every due group was decided at once).
    assert!(bolt < 64, "bolt's notification was number {} of 301", bolt + 1);
    assert_eq!(got.iter().filter(|r| r.path == "/acme-hook").count(), 300, "every notification of the burst arrives");
    let acme: std::collections::HashSet<String> =
        got.iter().filter(|r| r.path == "/acme-hook").map(|r| r.json()["commonLabels"]["n"].as_str().unwrap().to_string()).collect();
    assert_eq!(acme.len(), 300, "each once");
}
