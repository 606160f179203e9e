//! Black-box: per-tenant limits answer with a 4xx naming the limit; one tenant's limits never touch another's.

use belfry_tests::{
    Daemon, HttpSink, http_exchange, http_request, http_request_with, webhook_daemon_config, webhook_receiver_toml, webhook_wasm,
};

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");

fn alerts(first: usize, n: usize) -> String {
    let items: Vec<String> = (first..first + n).map(|i| format!(r#"{{"labels":{{"alertname":"A{i}"}}}}"#)).collect();
    format!("[{}]", items.join(","))
}

#[tokio::test]
async fn request_size_rate_and_alert_count_limits() {
    let sink = HttpSink::start().await;
    let config =
        webhook_daemon_config("hook", &sink, "[limits]\nmax_alerts_per_request = 20\ningest_rate = 1\ningest_burst = 20\nmax_alerts = 30");
    let daemon = Daemon::start(BIN, &config).expect("daemon starts");
    let url = daemon.url("/api/v2/alerts");

    let (status, body) = http_request("POST", &url, &alerts(0, 21)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("max_alerts_per_request"), "{body}");

    assert_eq!(http_request("POST", &url, &alerts(0, 20)).await.0, 200, "the burst allows 20");
    let (status, body) = http_request("POST", &url, &alerts(20, 1)).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("ingest_rate"), "{body}");
    // Retry-After says when to come back (Prometheus honours it).
    let (status, headers, _) = http_exchange("POST", &url, &alerts(20, 1), &[]).await;
    assert_eq!(status, 429);
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(sink.wait_for(20).await.len(), 20, "the rejected requests delivered nothing");
}

#[tokio::test]
async fn a_tenants_overrides_bind_it_alone() {
    let (sink_a, sink_b) = (HttpSink::start().await, HttpSink::start().await);
    let sha = |t: &str| format!("sha256:{}", belfry::tenant::hash_token(t).iter().map(|b| format!("{b:02x}")).collect::<String>());
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[tenants]\ndir = \"tenants\"\n\n[plugins.webhook]\npath = \"{}\"\n",
        webhook_wasm().display()
    );
    let acme =
        format!("tokens = [\"{}\"]\n\n[limits]\nmax_alerts = 1\nmax_silences = 0\n\n{}", sha("a"), webhook_receiver_toml("acme", &sink_a));
    let bolt = format!("tokens = [\"{}\"]\n\n{}", sha("b"), webhook_receiver_toml("bolt", &sink_b));
    let daemon = Daemon::start_with_files(BIN, &config, &[("tenants/acme/tenant.toml", &acme), ("tenants/bolt/tenant.toml", &bolt)])
        .expect("starts");
    let url = daemon.url("/api/v2/alerts");
    let (a, b) = ([("authorization", "Bearer a")], [("authorization", "Bearer b")]);
    assert_eq!(http_request_with("POST", &url, &alerts(0, 1), &a).await.0, 200);
    let (status, body) = http_request_with("POST", &url, &alerts(1, 1), &a).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("max_alerts"), "{body}");
    assert_eq!(http_request_with("POST", &url, &alerts(0, 5), &b).await.0, 200, "bolt keeps the defaults");
    let silence = serde_json::json!({
        "matchers": [{"name": "alertname", "value": "A0", "isRegex": false, "isEqual": true}],
        "startsAt": chrono::Utc::now().to_rfc3339(), "endsAt": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
        "createdBy": "x", "comment": "y",
    })
    .to_string();
    let (status, body) = http_request_with("POST", &daemon.url("/api/v2/silences"), &silence, &a).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("max_silences"), "{body}");
    assert_eq!(http_request_with("POST", &daemon.url("/api/v2/silences"), &silence, &b).await.0, 200);
}

#[test]
fn a_burst_below_the_request_size_is_a_config_error() {
    let config = format!(
        "[limits]\nmax_alerts_per_request = 100\ningest_burst = 10\n\n[plugins.webhook]\npath = \"{}\"\n\n[[receivers]]\nname = \"r\"\nplugin = \"webhook\"\nconfig = {{ url = \"http://127.0.0.1:9/\" }}\n\n[route]\nreceiver = \"r\"\n",
        webhook_wasm().display()
    );
    let failed = Daemon::start(BIN, &config).err().expect("refused");
    assert_eq!(failed.code, Some(2));
    assert!(failed.stderr.contains("limits.ingest_burst"), "{}", failed.stderr);
}
