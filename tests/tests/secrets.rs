//! Black-box: secrets from the environment, files and `enc:v1:` values reach the plugin of their receiver only, never a log line, error, audit record or API answer; keys rotate.

use std::io::Write;
use std::process::{Command, Stdio};

use belfry_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");
const API_KEY: &str = "ak-7d1f3c9e5b";
const BEARER: &str = "bt-93ab27c4f0";

fn belfry(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(BIN).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn config(sink: &HttpSink, keys: &str, bearer: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[secrets.keys]\n{keys}\n\n[plugins.webhook]\npath = \"{wasm}\"\n\n[[receivers]]\nname = \"hook\"\nplugin = \"webhook\"\nallowed_hosts = [\"{host}\"]\nallow_private_addresses = true\nretry = {{ max_attempts = 1 }}\n[receivers.config]\nurl = \"{url}\"\nbearer_token = \"{bearer}\"\nheaders = {{ X-Api-Key = \"${{BELFRY_TEST_API_KEY}}\" }}\n\n[route]\nreceiver = \"hook\"\ngroup_by = [\"...\"]\ngroup_wait = \"0s\"\n",
        wasm = webhook_wasm().display(),
        host = sink.host(),
        url = sink.url("/hook"),
    )
}

#[tokio::test]
async fn secrets_reach_the_plugin_and_nothing_else_and_keys_rotate() {
    // SAFETY: the daemons this test starts inherit the variable; no other test reads it.
    unsafe { std::env::set_var("BELFRY_TEST_API_KEY", API_KEY) };
    let sink = HttpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, k1, _) = belfry(&["secrets", "keygen"], "");
    assert!(ok);
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/k1"), k1.trim()).unwrap();
    let keys = "k1 = \"file:keys/k1\"";
    std::fs::write(dir.path().join("belfry.toml"), config(&sink, keys, "placeholder")).unwrap();
    let config_dir = dir.path().to_str().unwrap();
    let (ok, sealed, err) = belfry(&["secrets", "encrypt", "--config", config_dir, "--key", "k1"], &format!("{BEARER}\n"));
    assert!(ok, "{err}");
    let sealed = sealed.trim().to_string();
    assert!(sealed.starts_with("enc:v1:k1:") && !sealed.contains(BEARER));

    // The sink refuses, echoing the credentials it got: the failure must show them masked.
    sink.reply_with(400, &[], format!("invalid key {API_KEY} for token {BEARER}"));
    let daemon = Daemon::start(BIN, &config(&sink, &format!("k1 = \"file:{}/keys/k1\"", config_dir), &sealed)).unwrap();
    let (status, _) = http_request("POST", &daemon.url("/api/v2/alerts"), r#"[{"labels":{"alertname":"Leak"}}]"#).await;
    assert_eq!(status, 200);
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].header("x-api-key"), Some(API_KEY), "the env var reached the plugin");
    assert_eq!(got[0].header("authorization"), Some(format!("Bearer {BEARER}").as_str()), "the enc:v1: value was decrypted");
    let deadline = std::time::Instant::now() + PATIENCE;
    while !daemon.stderr().contains("delivery failed") {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.stderr());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The audit trail's own thread writes the failure's record.
    daemon.audit_until(|r| r.iter().any(|r| r["action"] == "notify.failed")).await;
    let mut seen = vec![("log", daemon.stderr())];
    seen.push(("audit", std::fs::read_to_string(daemon.dir.path().join("data/audit.jsonl")).unwrap()));
    for path in ["/api/v2/status", "/api/v2/receivers", "/api/belfry/v1/receivers", "/api/v2/alerts", "/metrics"] {
        seen.push((path, http_request("GET", &daemon.url(path), "").await.1));
    }
    for (place, text) in &seen {
        assert!(!text.contains(API_KEY) && !text.contains(BEARER), "a secret leaked into {place}:\n{text}");
    }
    assert!(seen[1].1.contains("invalid key"), "the audit trail has the (masked) error: {}", seen[1].1);

    // Rotate to a new key: the file changes, the config still checks and delivers.
    let (ok, k2, _) = belfry(&["secrets", "keygen"], "");
    assert!(ok);
    std::fs::write(dir.path().join("keys/k2"), k2.trim()).unwrap();
    let both = "k1 = \"file:keys/k1\"\nk2 = \"file:keys/k2\"";
    std::fs::write(dir.path().join("belfry.toml"), config(&sink, both, &sealed)).unwrap();
    let (ok, out, err) = belfry(&["secrets", "rotate", "--config", config_dir, "--to", "k2"], "");
    assert!(ok && out.contains("1 value(s) re-encrypted under `k2`"), "{out}{err}");
    let text = std::fs::read_to_string(dir.path().join("belfry.toml")).unwrap();
    assert!(text.contains("enc:v1:k2:") && !text.contains("enc:v1:k1:"), "{text}");
    let (ok, out, err) = belfry(&["check", "--config", config_dir], "");
    assert!(ok, "{out}{err}");

    // A reference that does not resolve: named by field, the variable named, no value shown.
    std::fs::write(dir.path().join("belfry.toml"), text.replace("BELFRY_TEST_API_KEY", "BELFRY_TEST_MISSING")).unwrap();
    let (ok, _, err) = belfry(&["check", "--config", config_dir], "");
    assert!(!ok);
    assert!(err.contains("receivers[0].config.headers.X-Api-Key: environment variable `BELFRY_TEST_MISSING` is not set"), "{err}");
}
