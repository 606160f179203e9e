//! Black-box: what hostile plugins, tenants and clients tried, and how the daemon holds: secrets in every encoding, slow and oversized clients, a tenant's slow script, plugins that lie, shout or hoard.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use belfry_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_belfry-under-test");

fn hostile_wasm() -> &'static std::path::Path {
    std::path::Path::new(env!("BELFRY_WASM_HOSTILE"))
}

fn write(dir: &std::path::Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// The daemon's resident memory, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap();
    kib * 1024
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const PASSWORD: &str = "pw-2c8e41b7";

#[tokio::test]
async fn a_basic_auth_password_shows_in_no_encoding() {
    // SAFETY: the processes this test starts inherit the variable; no other test reads it.
    unsafe { std::env::set_var("BELFRY_TEST_BASIC_PW", PASSWORD) };
    let sink = HttpSink::start().await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("u:{PASSWORD}"));
    // The service refuses and echoes the request's credentials, as some do in a 401 body.
    sink.reply_with(401, &[], format!("bad credentials: authorization: Basic {basic} (user u, password {PASSWORD})"));
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[plugins.webhook]\npath = \"{}\"\n\n[[receivers]]\nname = \"hook\"\nplugin = \"webhook\"\nallowed_hosts = [\"{}\"]\nallow_private_addresses = true\nretry = {{ max_attempts = 2, initial_backoff = \"10ms\" }}\nconfig = {{ url = \"{}\", basic_auth_user = \"u\", basic_auth_password = \"${{BELFRY_TEST_BASIC_PW}}\" }}\n\n[route]\nreceiver = \"hook\"\ngroup_wait = \"0s\"\n",
        webhook_wasm().display(),
        sink.host(),
        sink.url("/hook"),
    );
    let daemon = Daemon::start(BIN, &config).unwrap();
    let (status, _) = http_request("POST", &daemon.url("/api/v2/alerts"), r#"[{"labels":{"alertname":"Leak"}}]"#).await;
    assert_eq!(status, 200);
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].header("authorization"), Some(format!("Basic {basic}").as_str()), "the plugin got the password");
    daemon.audit_until(|r| r.iter().any(|r| r["action"] == "notify.failed")).await;
    let audit = std::fs::read_to_string(daemon.dir.path().join("data/audit.jsonl")).unwrap();
    let log = daemon.stderr();
    assert!(audit.contains("bad credentials"), "the failure is recorded: {audit}");
    for (place, text) in [("log", &log), ("audit", &audit)] {
        assert!(!text.contains(&basic) && !text.contains(PASSWORD), "the password leaked into the {place}:\n{text}");
        assert!(!text.contains(&basic[..12]), "a part of the encoded credentials leaked into the {place}:\n{text}");
    }

    // The preview shows the credential header's scheme only.
    write(daemon.dir.path(), &[("alert.json", r#"[{"labels":{"alertname":"Leak"}}]"#)]);
    let out = Command::new(BIN)
        .args(["template", "render", "--config"])
        .arg(daemon.dir.path())
        .args(["--receiver", "hook"])
        .arg(daemon.dir.path().join("alert.json"))
        .output()
        .unwrap();
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(shown.contains("authorization: Basic ***"), "{shown}");
    assert!(!shown.contains(&basic[..12]) && !shown.contains(PASSWORD), "{shown}");
}

/// A raw connection to the daemon.
fn connect(daemon: &Daemon) -> TcpStream {
    let stream = TcpStream::connect(daemon.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Everything the server sends until it closes the connection (panics if it does not close
/// within [`PATIENCE`]).
fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return String::from_utf8_lossy(&got).into_owned(),
            Err(e) => panic!("the server did not close the connection: {e}; got {:?}", String::from_utf8_lossy(&got)),
        }
    }
}

#[tokio::test]
async fn slow_idle_and_oversized_clients_are_cut_off_with_clear_answers() {
    let sink = HttpSink::start().await;
    // Short enough for a test, long enough that a busy machine never cuts a prompt client.
    let server = "header_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"\nidle_timeout = \"1500ms\"\nmax_body_bytes = 1000000";
    let config = webhook_daemon_config("hook", &sink, "").replace("[server]\n", &format!("[server]\n{server}\n"));
    let daemon = Daemon::start(BIN, &config).unwrap();
    let daemon = &daemon;

    let handles: Vec<_> = [
        // Headers that never finish.
        "POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
        // Nothing at all.
        "",
    ]
    .into_iter()
    .map(|sent| {
        let mut stream = connect(daemon);
        stream.write_all(sent.as_bytes()).unwrap();
        std::thread::spawn(move || read_until_closed(&mut stream))
    })
    .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), "", "closed without an answer");
    }

    // A keep-alive connection is answered, then closed once idle.
    let mut stream = connect(daemon);
    stream.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let answered = tokio::task::spawn_blocking(move || read_until_closed(&mut stream)).await.unwrap();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    // 1 GB announced: 413 at once, before any of the body.
    let mut stream = connect(daemon);
    stream
        .write_all(b"POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n")
        .unwrap();
    let answer = tokio::task::spawn_blocking(move || read_until_closed(&mut stream)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":413"#) && answer.contains("exceeds 1000000 bytes"), "{answer}");

    // A body that stops short: 408 once body_read_timeout has passed.
    let mut stream = connect(daemon);
    stream
        .write_all(b"POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{\"lab")
        .unwrap();
    let answer = tokio::task::spawn_blocking(move || read_until_closed(&mut stream)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("body_read_timeout"), "{answer}");

    // A request target too long to be real: 414 with Alertmanager's JSON error.
    let long = format!("/api/v2/alerts?filter={}", "a".repeat(9000));
    let (status, body) = http_request("GET", &daemon.url(&long), "").await;
    assert_eq!(status, 414);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], 414, "{body}");

    // Over 64 KiB the HTTP layer refuses the target itself: with the same JSON error.
    let mut stream = connect(daemon);
    let huge = format!("GET /api/v2/alerts?filter={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    stream.write_all(huge.as_bytes()).unwrap();
    let answer = tokio::task::spawn_blocking(move || read_until_closed(&mut stream)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 414") && answer.contains("application/json"), "{answer}");
    assert!(answer.contains(r#""code":414"#), "{answer}");

    // The daemon still serves everyone else.
    assert_eq!(http_request("GET", &daemon.url("/-/healthy"), "").await.0, 200);
}

#[tokio::test]
async fn open_connections_are_bounded_and_the_bound_is_logged() {
    let sink = HttpSink::start().await;
    let config =
        webhook_daemon_config("hook", &sink, "").replace("[server]\n", "[server]\nmax_connections = 2\nheader_read_timeout = \"2s\"\n");
    let daemon = Daemon::start(BIN, &config).unwrap();
    // Two connections that say nothing hold both slots until their header timeout.
    let hogs: Vec<TcpStream> = (0..2).map(|_| connect(&daemon)).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let probe = tokio::spawn({
        let url = daemon.url("/-/healthy");
        async move { http_request("GET", &url, "").await.0 }
    });
    until("the bound's log line", || daemon.stderr().contains("open connections reached [server] max_connections")).await;
    assert!(!probe.is_finished(), "a third connection waits while two are open");
    // The hogs' header timeout frees the slots; the waiting probe is answered.
    assert_eq!(tokio::time::timeout(PATIENCE, probe).await.unwrap().unwrap(), 200);
    drop(hogs);
}

#[tokio::test]
async fn a_silence_that_would_mute_everything_is_refused() {
    let sink = HttpSink::start().await;
    let daemon = Daemon::start(BIN, &webhook_daemon_config("hook", &sink, "")).unwrap();
    let silence = |matchers: &str| {
        format!(
            r#"{{"matchers":{matchers},"startsAt":"2020-01-01T00:00:00Z","endsAt":"2099-01-01T00:00:00Z","createdBy":"me","comment":"x"}}"#
        )
    };
    let (status, body) =
        http_request("POST", &daemon.url("/api/v2/silences"), &silence(r#"[{"name":"v","value":"x","isRegex":false,"isEqual":false}]"#))
            .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("matchers") && body.contains("empty string"), "{body}");
    let both = r#"[{"name":"job","value":"api","isRegex":false,"isEqual":true},{"name":"v","value":"x","isRegex":false,"isEqual":false}]"#;
    assert_eq!(http_request("POST", &daemon.url("/api/v2/silences"), &silence(both)).await.0, 200);
}

fn hostile_config(receivers: &[(&str, &str)], sink: &HttpSink, extra: &str) -> String {
    let mut config =
        format!("[server]\nlisten = \"127.0.0.1:0\"\n\n{extra}\n[plugins.hostile]\npath = \"{}\"\n\n", hostile_wasm().display());
    for (name, settings) in receivers {
        config.push_str(&format!(
            "[[receivers]]\nname = \"{name}\"\nplugin = \"hostile\"\nallowed_hosts = [\"{}\"]\nallow_private_addresses = true\nretry = {{ max_attempts = 2, initial_backoff = \"10ms\" }}\nconfig = {{ {settings} }}\n\n",
            sink.host()
        ));
    }
    config.push_str("[route]\nreceiver = \"");
    config.push_str(receivers[0].0);
    config.push_str("\"\nscript = \"route.rhai\"\ngroup_by = [\"...\"]\ngroup_wait = \"0s\"\n");
    config
}

#[tokio::test]
async fn what_a_plugin_returns_is_bounded_escaped_and_attributed_to_its_key() {
    let sink = HttpSink::start().await;
    let receivers = [("huge", "mode = \"huge-error\""), ("forge", "mode = \"forge\""), ("rid", "mode = \"huge-remote-id\"")];
    // Building and copying 60 MiB strings takes time on a busy machine: this is about their size.
    let extra = "[runtime.limits]\ncpu_ms = 10000\n";
    let daemon = Daemon::start_with_files(
        BIN,
        &hostile_config(&receivers, &sink, extra),
        &[("route.rhai", "fn route(alert) { alert.labels.to }\n")],
    )
    .unwrap();
    let alerts =
        r#"[{"labels":{"alertname":"A","to":"huge"}},{"labels":{"alertname":"B","to":"forge"}},{"labels":{"alertname":"C","to":"rid"}}]"#;
    assert_eq!(http_request("POST", &daemon.url("/api/v2/alerts"), alerts).await.0, 200);
    let records = daemon
        .audit_until(|r| {
            let done = |action: &str, receiver: &str| r.iter().any(|r| r["action"] == action && r.to_string().contains(receiver));
            done("notify.failed", "\"huge\"") && done("notify.failed", "\"forge\"") && done("notify.delivered", "\"rid\"")
        })
        .await;
    let audit_bytes = std::fs::metadata(daemon.dir.path().join("data/audit.jsonl")).unwrap().len();
    let log = daemon.stderr();
    // A 60 MiB error over two attempts and a 60 MiB remote id: a few KiB each where they are kept.
    assert!(audit_bytes < 256 << 10, "audit trail of {audit_bytes} bytes");
    assert!(log.len() < 256 << 10, "log of {} bytes", log.len());
    let sent = records.iter().find(|r| r["action"] == "notify.delivered").unwrap().to_string();
    assert!(sent.contains("RRRR") && sent.len() < 8 << 10, "{} bytes", sent.len());
    // Nothing the plugin said starts a line of its own or reaches the terminal raw.
    for line in log.lines() {
        assert!(!line.starts_with("level=ERROR"), "a forged log line: {line}");
    }
    assert!(!log.contains('\u{1b}') && !log.contains('\u{7}') && !log.contains('\r'), "control characters in the log");
    assert!(log.contains(r"first\nlevel=ERROR"), "the plugin's line is kept, escaped: {log}");
    // It says it is `webhook`; it is counted as the operator's `hostile`.
    let metrics = http_request("GET", &daemon.url("/metrics"), "").await.1;
    assert!(metrics.contains("integration=\"hostile\"") && !metrics.contains("integration=\"webhook\""), "{metrics}");
}

#[tokio::test]
async fn load_time_calls_are_bounded_concurrent_and_without_capabilities() {
    let sink = HttpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = sink.url("/validate");
    let http = format!("mode = \"validate-http\", url = \"{url}\"");
    let receivers = [("sleepy-1", "mode = \"validate-sleep\""), ("sleepy-2", "mode = \"validate-sleep\""), ("caller", http.as_str())];
    // The load-time budget is cpu_ms, at most 1 s: the well-behaved receiver never comes near it.
    let limits = "[runtime.limits]\ncpu_ms = 60000\n";
    write(dir.path(), &[("belfry.toml", &hostile_config(&receivers, &sink, limits)), ("route.rhai", "fn route(alert) { \"caller\" }\n")]);
    let out = Command::new(BIN).args(["check", "--config"]).arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for i in [0, 1] {
        let line = stderr.lines().find(|l| l.contains(&format!("receivers[{i}]"))).unwrap_or_else(|| panic!("{stderr}"));
        assert!(line.contains("CPU budget of 1000 ms"), "{line}");
    }
    assert!(!stderr.contains("receivers[2]"), "validate-config's request was refused, so the plugin found nothing: {stderr}");
    assert_eq!(sink.count(), 0, "validate-config reached the network");

    // Its own name, and its schema's control characters, are shown escaped.
    let out = Command::new(BIN).args(["plugin", "inspect"]).arg(hostile_wasm()).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!shown.contains('\u{1b}') && !shown.contains('\r') && !shown.contains('\u{7}'), "{shown:?}");
    assert!(shown.contains(r"\u{1b}[2J"), "{shown}");

    // Next to a real `webhook`, a component that calls itself `webhook` is refused.
    let both = hostile_config(&receivers[2..], &sink, &format!("[plugins.webhook]\npath = \"{}\"\n", webhook_wasm().display()));
    write(dir.path(), &[("belfry.toml", &both)]);
    let out = Command::new(BIN).args(["check", "--config"]).arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("plugins.hostile.path") && stderr.contains("describes itself as `webhook`"), "{stderr}");
}

#[tokio::test]
async fn an_instance_that_grew_gives_its_memory_back() {
    let sink = HttpSink::start().await;
    sink.hold_replies(true);
    let settings = format!("mode = \"hoard\", mib = 48, url = \"{}\"", sink.url("/hold"));
    // A budget that filling 48 MiB on a busy machine never runs out of: this is about memory.
    let extra = "[runtime]\nmax_in_flight_per_receiver = 6\n\n[runtime.limits]\ncpu_ms = 10000\n";
    let daemon = Daemon::start_with_files(
        BIN,
        &hostile_config(&[("hoarder", &settings)], &sink, extra),
        &[("route.rhai", "fn route(alert) { \"hoarder\" }\n")],
    )
    .unwrap();
    let before = rss_bytes(daemon.pid());
    let alerts: Vec<String> = (0..6).map(|i| format!(r#"{{"labels":{{"alertname":"A{i}"}}}}"#)).collect();
    assert_eq!(http_request("POST", &daemon.url("/api/v2/alerts"), &format!("[{}]", alerts.join(","))).await.0, 200);
    // Six deliveries at once, each instance holding 48 MiB, all waiting on the sink.
    sink.wait_for(6).await;
    let during = rss_bytes(daemon.pid());
    sink.hold_replies(false);
    daemon.audit_until(|r| r.iter().filter(|r| r["action"] == "notify.delivered").count() >= 6).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_bytes(daemon.pid());
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!("daemon RSS: {:.0} MiB before, {:.0} MiB with 6 grown instances, {:.0} MiB after", mib(before), mib(during), mib(after));
    assert!(during > before + (200 << 20), "the instances grew: {:.0} -> {:.0} MiB", mib(before), mib(during));
    assert!(after < before + (64 << 20), "idle instances kept their memory: {:.0} MiB after, {:.0} MiB before", mib(after), mib(before));
}

/// A routing script that is slow for alerts marked `slow`: it loops until the operation limit stops it.
const SLOW_SCRIPT: &str = "fn route(alert) {\n  if alert.labels.slow == \"yes\" {\n    let n = 0;\n    loop { n += 1; if \"aaaaaaaaaaaaaaaaaaaaaaaab\".matches(\"a*a*a*a*b\") { n += 1; } }\n  }\n  \"noisy-hook\"\n}\n";

#[tokio::test]
async fn a_tenant_with_a_slow_script_is_held_back_and_slows_no_one_else() {
    let (noisy_sink, quiet_sink) = (HttpSink::start().await, HttpSink::start().await);
    let tenant = |name: &str, sink: &HttpSink, script: &str| {
        format!("tokens = [\"{}\"]\n\n{}{script}", sha(&format!("token-{name}")), webhook_receiver(&format!("{name}-hook"), sink, ""))
    };
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[tenants]\ndir = \"tenants\"\n\n[plugins.webhook]\npath = \"{}\"\n",
        webhook_wasm().display()
    );
    let noisy = tenant(
        "noisy",
        &noisy_sink,
        "\n[route]\nreceiver = \"noisy-hook\"\nscript = \"route.rhai\"\ngroup_wait = \"0s\"\n\n[limits]\nscript_ms_per_second = 100\nscript_burst_ms = 200\n",
    );
    let quiet = tenant("quiet", &quiet_sink, "\n[route]\nreceiver = \"quiet-hook\"\ngroup_wait = \"0s\"\n");
    let daemon = Daemon::start_with_files(
        BIN,
        &config,
        &[("tenants/noisy/tenant.toml", &noisy), ("tenants/noisy/route.rhai", SLOW_SCRIPT), ("tenants/quiet/tenant.toml", &quiet)],
    )
    .unwrap();
    // The noisy tenant floods with alerts its script is slow on, from four clients at once.
    let flood: Vec<_> = (0..4)
        .map(|client| {
            let url = daemon.url("/api/v2/alerts");
            tokio::spawn(async move {
                let mut refused = None;
                for batch in 0..20 {
                    let alerts: Vec<String> =
                        (0..10).map(|i| format!(r#"{{"labels":{{"alertname":"S{client}-{batch}-{i}","slow":"yes"}}}}"#)).collect();
                    let (status, headers, body) =
                        http_exchange("POST", &url, &format!("[{}]", alerts.join(",")), &[("authorization", "Bearer token-noisy")]).await;
                    if status == 429 {
                        refused = Some((headers.get("retry-after").map(|v| v.to_str().unwrap().to_string()), body));
                        break;
                    }
                    assert_eq!(status, 200, "{body}");
                }
                refused
            })
        })
        .collect();
    // Meanwhile the quiet tenant's alert goes through, and health checks answer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, _) = http_request_with("GET", &daemon.url("/-/healthy"), "", &[]).await;
    let health = started.elapsed();
    assert_eq!(status, 200);
    let started = Instant::now();
    let (status, body) = http_request_with(
        "POST",
        &daemon.url("/api/v2/alerts"),
        r#"[{"labels":{"alertname":"Quiet"}}]"#,
        &[("authorization", "Bearer token-quiet")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    quiet_sink.wait_for(1).await;
    let delivered = started.elapsed();
    println!("while the noisy tenant floods: /-/healthy in {health:?}, the quiet tenant's alert delivered in {delivered:?}");
    // The noisy tenant is told to slow down, with a time to wait.
    let mut refusals = Vec::new();
    for client in flood {
        refusals.extend(client.await.unwrap());
    }
    let (retry_after, body) = refusals.first().unwrap_or_else(|| panic!("the noisy tenant was never refused"));
    assert!(retry_after.as_deref().is_some_and(|s| s.parse::<u64>().unwrap() >= 1), "{retry_after:?}");
    assert!(body.contains("script_ms_per_second"), "{body}");
}

fn sha(token: &str) -> String {
    let hash: String = belfry::tenant::hash_token(token).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hash}")
}
