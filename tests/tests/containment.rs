//! A broken or hostile plugin is stopped, reported with blame, and the host delivers the next notification.

use belfry::plugin::{Blame, FailureKind, Receiver};
use belfry_tests::{HttpSink, TestRuntime, bind, misbehave_wasm, notification, spec, webhook_wasm};

/// After a misbehaving delivery, a webhook delivery through the same runtime must still arrive intact.
async fn host_still_delivers(rt: &TestRuntime, sink: &HttpSink, nth: usize) {
    let webhook = rt.load(webhook_wasm()).await;
    let receiver = bind(&webhook, spec("hook", &format!("url = '{}'", sink.url("/after")), &[&sink.host()])).await;
    receiver.deliver(&notification("hook", "AfterMisbehaviour")).await.expect("the next delivery succeeds");
    let got = sink.wait_for(nth).await;
    assert_eq!(got[nth - 1].json()["commonLabels"]["alertname"], "AfterMisbehaviour");
}

async fn misbehaving(rt: &TestRuntime, mode: &str, extra: &str, hosts: &[&str]) -> Receiver {
    let plugin = rt.load(misbehave_wasm()).await;
    bind(&plugin, spec(mode, &format!("mode = '{mode}'\n{extra}"), hosts)).await
}

#[tokio::test]
async fn infinite_loop_is_stopped_by_the_cpu_deadline() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let spin = misbehaving(&rt, "spin", "", &[]).await;
    for _ in 0..2 {
        // Twice: the trapped instance is discarded and a fresh one fails the same clean way.
        let failure = spin.deliver(&notification("spin", "Loop")).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::CpuDeadline, "{failure}");
        assert_eq!(failure.blame, Blame::Plugin);
        assert!(failure.message.contains("100 ms"), "{failure}");
        assert!(failure.is_retryable());
    }
    host_still_delivers(&rt, &sink, 1).await;
}

#[tokio::test]
async fn memory_bomb_fails_cleanly_at_the_cap() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let plugin = rt.load(misbehave_wasm()).await;
    let mut s = spec("memory-bomb", "mode = 'memory-bomb'", &[]);
    s.limits.cpu_ms = 5_000; // only the memory cap may stop it
    let bomb = bind(&plugin, s).await;
    let failure = bomb.deliver(&notification("memory-bomb", "Bomb")).await.unwrap_err();
    assert_eq!(failure.kind, FailureKind::MemoryLimit, "{failure}");
    assert_eq!(failure.blame, Blame::Plugin);
    assert!(failure.message.contains("32 MiB"), "{failure}");
    host_still_delivers(&rt, &sink, 1).await;
}

#[tokio::test]
async fn trap_is_reported_and_the_instance_replaced() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let panicky = misbehaving(&rt, "panic", "", &[]).await;
    for _ in 0..2 {
        let failure = panicky.deliver(&notification("panic", "Panic")).await.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Trap, "{failure}");
        assert_eq!(failure.blame, Blame::Plugin);
        assert!(!failure.is_retryable());
        assert!(!failure.message.contains("cannot enter component instance"), "the dead instance was reused: {failure}");
    }
    host_still_delivers(&rt, &sink, 1).await;
}

#[tokio::test]
async fn request_to_a_host_not_allow_listed_is_refused() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let other = HttpSink::start().await;
    // Allowed: `other`; asked for: `sink`.
    let fetch = misbehaving(&rt, "fetch", &format!("url = '{}'", sink.url("/secret")), &[&other.host()]).await;
    let failure = fetch.deliver(&notification("fetch", "Fetch")).await.unwrap_err();
    assert_eq!(failure.kind, FailureKind::Misconfigured, "{failure}");
    assert_eq!(failure.blame, Blame::Configuration);
    assert!(failure.message.contains(&sink.host()), "names the host: {failure}");
    assert!(failure.message.contains("allowed_hosts"), "says what to do: {failure}");
    assert!(sink.requests().is_empty(), "nothing reached the refused host");
    host_still_delivers(&rt, &sink, 1).await;
}

#[tokio::test]
async fn no_allowed_hosts_means_no_http_at_all() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let fetch = misbehaving(&rt, "fetch", &format!("url = '{}'", sink.url("/")), &[]).await;
    let failure = fetch.deliver(&notification("fetch", "Fetch")).await.unwrap_err();
    assert_eq!(failure.blame, Blame::Configuration, "{failure}");
    assert!(sink.requests().is_empty());
}

#[tokio::test]
async fn loopback_is_refused_unless_private_addresses_are_allowed() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    let plugin = rt.load(misbehave_wasm()).await;
    let mut s = spec("fetch", &format!("mode = 'fetch'\nurl = '{}'", sink.url("/")), &[&sink.host()]);
    s.allow_private_addresses = false;
    let fetch = bind(&plugin, s).await;
    let failure = fetch.deliver(&notification("fetch", "Fetch")).await.unwrap_err();
    assert_eq!(failure.blame, Blame::Configuration, "{failure}");
    assert!(failure.message.contains("allow_private_addresses"), "{failure}");
    assert!(sink.requests().is_empty());

    // A hostname that resolves to loopback is refused the same way (no DNS rebinding around the rule).
    let mut s = spec("fetch", &format!("mode = 'fetch'\nurl = 'http://localhost:{}/'", sink.addr.port()), &["localhost"]);
    s.allow_private_addresses = false;
    let fetch = bind(&plugin, s).await;
    let failure = fetch.deliver(&notification("fetch", "Fetch")).await.unwrap_err();
    assert!(failure.message.contains("internal addresses"), "{failure}");
    assert!(sink.requests().is_empty());
}

#[tokio::test]
async fn no_filesystem_environment_or_sockets() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    // Even with the sink allow-listed for HTTP, a raw socket to it is refused.
    let escape = misbehaving(&rt, "escape", &format!("url = '{}'", sink.host()), &[&sink.host()]).await;
    let report = escape.deliver(&notification("escape", "Escape")).await.expect("the attempts fail inside the plugin");
    let id = report.remote_id.unwrap();
    assert!(id.starts_with("file=Err("), "{id}");
    assert!(id.contains(" dir=Err("), "{id}");
    assert!(id.contains(" env=0 "), "{id}");
    assert!(id.contains(" tcp=Err("), "{id}");
    assert!(sink.requests().is_empty());
}

#[tokio::test]
async fn oversized_response_is_cut_at_the_limit() {
    let rt = TestRuntime::new();
    let sink = HttpSink::start().await;
    sink.reply_with(200, &[], vec![b'x'; 3 << 20]);
    let plugin = rt.load(misbehave_wasm()).await;
    let mut s = spec("fetch", &format!("mode = 'fetch'\nurl = '{}'", sink.url("/big")), &[&sink.host()]);
    s.limits.response_max_bytes = 64 * 1024;
    let fetch = bind(&plugin, s).await;
    let report = fetch.deliver(&notification("fetch", "Big")).await.expect("a cut response is still a response");
    assert_eq!(report.remote_id.as_deref(), Some("status=200 len=65536 truncated=true"));
    sink.reply_with(200, &[], "ok");
    host_still_delivers(&rt, &sink, 2).await;
}

#[tokio::test]
async fn instances_never_carry_state_across_receivers() {
    let rt = TestRuntime::new();
    let plugin = rt.load(misbehave_wasm()).await;
    let a = bind(&plugin, spec("a", "mode = 'count'", &[])).await;
    let b = bind(&plugin, spec("b", "mode = 'count'", &[])).await;
    let id = |r: Result<belfry::plugin::DeliveryReport, _>| r.expect("count succeeds").remote_id.unwrap();
    // The fixture counts deliveries in a static: reuse within a receiver shows, across never.
    // (bind() ran validate-config on the same instance, which does not count.)
    assert_eq!(id(a.deliver(&notification("a", "x")).await), "a:1");
    assert_eq!(id(a.deliver(&notification("a", "x")).await), "a:2");
    assert_eq!(id(b.deliver(&notification("b", "x")).await), "b:1");
    assert_eq!(id(a.deliver(&notification("a", "x")).await), "a:3");
}

#[tokio::test]
async fn per_delivery_isolation_shares_nothing_between_deliveries() {
    let rt = TestRuntime::new();
    let plugin = rt.load(misbehave_wasm()).await;
    let mut s = spec("a", "mode = 'count'", &[]);
    s.isolation = belfry::plugin::Isolation::PerDelivery;
    let a = bind(&plugin, s).await;
    for _ in 0..3 {
        assert_eq!(a.deliver(&notification("a", "x")).await.unwrap().remote_id.as_deref(), Some("a:1"));
    }
}

#[tokio::test]
async fn plugin_logs_are_tagged_and_secrets_masked() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let rt = TestRuntime::new();
    let plugin = rt.load(misbehave_wasm()).await;
    let receiver = bind(&plugin, spec("logger", "mode = 'log-secret'\ntoken = 'hunter2-very-secret'", &[])).await;
    let failure = receiver.deliver(&notification("logger", "Log")).await.unwrap_err();
    assert!(!failure.to_string().contains("hunter2"));
    let logged = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let line = logged.lines().find(|l| l.contains("the token is")).unwrap_or_else(|| panic!("no plugin line in: {logged}"));
    assert!(line.contains("the token is ***"), "{line}");
    // Each plugin line says whose it is, with no span around the call.
    for tag in ["tenant=t1", "receiver=logger", "plugin=misbehave"] {
        assert!(line.contains(tag), "missing {tag} in: {line}");
    }
    assert!(!logged.contains("hunter2"), "{logged}");
}

#[tokio::test]
async fn compiled_components_are_cached_and_pins_are_enforced() {
    let rt = TestRuntime::new();
    let first = rt.runtime.load("webhook", webhook_wasm(), None).await.unwrap();
    assert_eq!(first.source, belfry::plugin::LoadSource::Compiled);
    let second = rt.runtime.load("webhook", webhook_wasm(), Some(&first.sha256)).await.unwrap();
    assert_eq!(second.source, belfry::plugin::LoadSource::Cached);
    assert_eq!(second.info.name, "webhook");

    // A corrupt cache entry is ignored and recompiled, not loaded.
    for entry in std::fs::read_dir(rt.cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let third = rt.runtime.load("webhook", webhook_wasm(), None).await.unwrap();
    assert_eq!(third.source, belfry::plugin::LoadSource::Compiled);

    let wrong = "0".repeat(64);
    let err = rt.runtime.load("webhook", webhook_wasm(), Some(&wrong)).await.err().expect("pin mismatch refuses the plugin").to_string();
    assert!(err.contains("pins") && err.contains(&first.sha256), "{err}");
}

#[tokio::test]
async fn a_file_that_is_not_a_plugin_is_refused_with_its_path() {
    let rt = TestRuntime::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.wasm");
    std::fs::write(&path, b"\0asm not really").unwrap();
    let err = rt.runtime.load("webhook", &path, None).await.err().unwrap().to_string();
    assert!(err.contains("junk.wasm") && err.contains("not a usable Belfry plugin"), "{err}");
}
