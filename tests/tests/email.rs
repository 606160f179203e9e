//! The email plugin and the host's SMTP capability against a real SMTP server on loopback: STARTTLS, implicit TLS, AUTH, reply classes, MIME parts, threading.

use belfry::plugin::{BindError, FailureKind, Mailer, Receiver};
use belfry::plugin::{SmtpConfig, SmtpTls};
use belfry_tests::smtp::{ReceivedMail, SmtpMode, SmtpServer, test_ca_file};
use belfry_tests::{Daemon, TestRuntime, bind, email_wasm, http_request, notification, spec, spec_for_big_input};

const PASSWORD: &str = "smtp-pa55word-XYZ";
const RECEIVER: &str =
    "from = 'Belfry <alerts@example.com>'\nto = ['oncall@example.com', 'Team <team@example.com>']\ncc = ['boss@example.com']";

fn smtp_config(server: &SmtpServer, tls: SmtpTls, password: &str, trusted: bool) -> SmtpConfig {
    SmtpConfig {
        smarthost: server.smarthost(),
        tls,
        username: Some("belfry".into()),
        password: Some(password.into()),
        ca_file: trusted.then(test_ca_file),
        hello: None,
        timeout: std::time::Duration::from_secs(5),
    }
}

async fn email(rt: &TestRuntime, config: &SmtpConfig) -> Receiver {
    let plugin = rt.load(email_wasm()).await;
    let ca = config.ca_file.as_ref().map(|p| std::fs::read(p).unwrap());
    let mut spec = spec("mail", RECEIVER, &[]);
    spec.secrets = vec![PASSWORD.to_string()];
    spec.smtp = Some(Mailer::new("mail", config, ca.as_deref(), None).expect("mailer"));
    bind(&plugin, spec).await
}

/// The decoded text of the MIME part with `content_type` (7bit, quoted-printable or base64).
fn part(mail: &ReceivedMail, content_type: &str) -> String {
    let boundary = mail.header("Content-Type").and_then(|ct| ct.split("boundary=").nth(1).map(|b| b.trim_matches('"').to_string()));
    let parts: Vec<&str> = match &boundary {
        Some(b) => mail.data.split(&format!("--{b}")).collect(),
        None => vec![mail.data.as_str()],
    };
    let part = parts
        .iter()
        .find(|p| p.to_ascii_lowercase().contains(&format!("content-type: {content_type}")))
        .unwrap_or_else(|| panic!("no {content_type} part in {}", mail.data));
    let (head, body) = part.split_once("\r\n\r\n").expect("part headers");
    let head = head.to_ascii_lowercase();
    if head.contains("content-transfer-encoding: base64") {
        use base64::Engine;
        let joined: String = body.split_whitespace().collect();
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(joined).unwrap()).unwrap()
    } else if head.contains("content-transfer-encoding: quoted-printable") {
        decode_quoted_printable(body)
    } else {
        body.to_string()
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn starttls_and_auth_deliver_a_threaded_message_with_text_and_html_parts() {
    let server = SmtpServer::start(SmtpMode::Starttls, Some(("belfry", PASSWORD))).await;
    let rt = TestRuntime::new();
    let mail = email(&rt, &smtp_config(&server, SmtpTls::Starttls, PASSWORD, true)).await;
    let mut n = notification("mail", "DiskFull");
    n.title = Some("[FIRING:1] DiskFull on db1 — critique".into());
    n.body = Some("db1 is at 99% <script>alert(1)</script>".into());
    n.alerts[0].annotations.push(("runbook_url".into(), "javascript:alert(1)".into()));
    n.common_annotations.push(("runbook_url".into(), "https://runbooks.example.com/disk".into()));
    n.common_annotations.sort();
    let report = mail.deliver(&n).await.expect("delivered");
    assert_eq!(report.status, Some(250));
    let got = server.wait_for(1).await;
    let m = &got[0];
    assert!(m.tls, "sent only after STARTTLS");
    assert_eq!(m.user.as_deref(), Some("belfry"));
    assert_eq!(m.from, "alerts@example.com");
    assert_eq!(m.to, ["oncall@example.com", "team@example.com", "boss@example.com"]);
    assert_eq!(m.header("From").as_deref(), Some("Belfry <alerts@example.com>"));
    assert!(m.header("Cc").unwrap().contains("boss@example.com"));
    let subject = m.header("Subject").unwrap();
    assert!(subject.starts_with("=?utf-8?") || subject.contains("critique"), "{subject}");
    assert!(m.header("Message-ID").unwrap().ends_with("@belfry>"));
    assert!(m.header("Content-Type").unwrap().starts_with("multipart/alternative"));
    let text = part(m, "text/plain");
    assert!(text.contains("db1 is at 99% <script>"), "the plain part is the body as rendered: {text}");
    let html = part(m, "text/html");
    assert!(html.contains("db1 is at 99% &lt;script&gt;"), "the HTML part escapes: {html}");
    assert!(!html.contains("<script>"));
    assert!(html.contains("<a href=\"https://runbooks.example.com/disk\">Runbook</a>"), "{html}");
    assert!(!html.contains("href=\"javascript:"), "only http(s) links: {html}");
    assert!(html.contains("#E01E5A"), "the severity colour: {html}");

    // The resolve of the same group threads under the same root.
    let mut resolved = n.clone();
    resolved.status = belfry::plugin::AlertStatus::Resolved;
    resolved.title = None;
    mail.deliver(&resolved).await.expect("delivered");
    let got = server.wait_for(2).await;
    assert_eq!(got[1].header("References"), got[0].header("References"));
    assert!(got[1].header("Subject").unwrap().starts_with("[RESOLVED] DiskFull"), "the default subject");
    assert_ne!(got[1].header("Message-ID"), got[0].header("Message-ID"));
}

#[tokio::test]
async fn implicit_tls_delivers() {
    let server = SmtpServer::start(SmtpMode::Implicit, Some(("belfry", PASSWORD))).await;
    let rt = TestRuntime::new();
    let mail = email(&rt, &smtp_config(&server, SmtpTls::Implicit, PASSWORD, true)).await;
    mail.deliver(&notification("mail", "Implicit")).await.expect("delivered");
    let got = server.wait_for(1).await;
    assert!(got[0].tls);
    assert!(got[0].header("Subject").unwrap().contains("Implicit"));
}

#[tokio::test]
async fn reply_codes_decide_retry_permanent_or_misconfigured_and_the_password_never_shows() {
    let server = SmtpServer::start(SmtpMode::Starttls, Some(("belfry", PASSWORD))).await;
    let rt = TestRuntime::new();

    let wrong = email(&rt, &smtp_config(&server, SmtpTls::Starttls, "wrong-password-123", true)).await;
    let failure = wrong.deliver(&notification("mail", "A")).await.unwrap_err();
    assert_eq!(failure.kind, FailureKind::Misconfigured, "{failure}");
    assert!(failure.message.contains("535") && failure.message.contains("username and password"), "{failure}");
    assert!(!failure.message.contains("wrong-password-123"));
    assert_eq!(server.logins().last().unwrap().0, "belfry", "the server was asked");

    let mail = email(&rt, &smtp_config(&server, SmtpTls::Starttls, PASSWORD, true)).await;
    server.refuse_next(451, &format!("4.3.0 try again later ({PASSWORD})"));
    let failure = mail.deliver(&notification("mail", "B")).await.unwrap_err();
    assert!(matches!(failure.kind, FailureKind::Retryable { .. }), "{failure}");
    assert!(failure.message.contains("451"), "{failure}");
    assert!(!failure.message.contains(PASSWORD), "a server echoing the password is masked: {failure}");

    server.refuse_next(554, "5.7.1 message refused");
    let failure = mail.deliver(&notification("mail", "C")).await.unwrap_err();
    assert_eq!(failure.kind, FailureKind::Permanent, "{failure}");
    assert!(failure.message.contains("554"), "{failure}");
    assert!(server.mails().is_empty());

    mail.deliver(&notification("mail", "D")).await.expect("accepted once the server accepts");
    assert_eq!(server.wait_for(1).await.len(), 1);
}

#[tokio::test]
async fn a_server_that_stops_answering_is_a_retryable_timeout() {
    let server = SmtpServer::start(SmtpMode::Starttls, Some(("belfry", PASSWORD))).await;
    let rt = TestRuntime::new();
    let mut config = smtp_config(&server, SmtpTls::Starttls, PASSWORD, true);
    config.timeout = std::time::Duration::from_millis(500);
    let mail = email(&rt, &config).await;
    server.stall();
    let failure = mail.deliver(&notification("mail", "A")).await.unwrap_err();
    assert!(matches!(failure.kind, FailureKind::Retryable { .. }), "{failure}");
    assert!(failure.message.contains("no answer within 500 ms"), "{failure}");
}

#[tokio::test]
async fn an_untrusted_certificate_or_a_missing_starttls_never_falls_back_to_plain_text() {
    let rt = TestRuntime::new();
    let server = SmtpServer::start(SmtpMode::Starttls, Some(("belfry", PASSWORD))).await;
    let untrusted = email(&rt, &smtp_config(&server, SmtpTls::Starttls, PASSWORD, false)).await;
    let failure = untrusted.deliver(&notification("mail", "A")).await.unwrap_err();
    assert!(matches!(failure.kind, FailureKind::Retryable { .. }), "{failure}");
    assert!(failure.message.contains("ca_file"), "says what to fix: {failure}");
    assert!(server.logins().is_empty(), "no credentials were sent");

    let plain = SmtpServer::start(SmtpMode::Plain, None).await;
    let mut config = smtp_config(&plain, SmtpTls::Starttls, PASSWORD, true);
    config.username = None;
    config.password = None;
    let mail = email(&rt, &config).await;
    let failure = mail.deliver(&notification("mail", "A")).await.unwrap_err();
    assert!(matches!(failure.kind, FailureKind::Retryable { .. }), "{failure}");
    assert!(plain.mails().is_empty(), "nothing sent in clear text");
}

#[tokio::test]
async fn without_the_grant_the_plugin_cannot_send_mail() {
    let rt = TestRuntime::new();
    let plugin = rt.load(email_wasm()).await;
    assert!(plugin.sends_mail());
    let mail = bind(&plugin, spec("mail", RECEIVER, &[])).await;
    let failure = mail.deliver(&notification("mail", "A")).await.unwrap_err();
    assert_eq!(failure.kind, FailureKind::Misconfigured, "{failure}");
    assert!(failure.message.contains("no SMTP grant"), "{failure}");
    let webhook = rt.load(belfry_tests::webhook_wasm()).await;
    assert!(!webhook.sends_mail(), "only the email plugin imports the SMTP interface");
}

#[tokio::test]
async fn validate_config_names_the_bad_address() {
    let rt = TestRuntime::new();
    let plugin = rt.load(email_wasm()).await;
    for (config, field) in [
        ("from = 'alerts'\nto = ['a@example.com']", "from"),
        ("from = 'a@example.com'\nto = []", "to"),
        ("from = 'a@example.com'\nto = ['a@example.com, b@example.com']", "to"),
        ("from = 'a@example.com'\nto = ['a@example.com']\ncc = ['nobody']", "cc"),
        ("to = ['a@example.com']", "from"),
    ] {
        match plugin.bind(spec("mail", config, &[])).await {
            Err(BindError::Config(errors)) => assert_eq!(errors[0].field, field, "{config}: {errors:?}"),
            Ok(_) => panic!("accepted {config}"),
            Err(BindError::Plugin(f)) => panic!("{f}"),
        }
    }
}

#[tokio::test]
async fn ten_thousand_alerts_and_huge_annotations_stay_within_bounds() {
    let server = SmtpServer::start(SmtpMode::Starttls, None).await;
    let rt = TestRuntime::new();
    let plugin = rt.load(email_wasm()).await;
    let mut config = smtp_config(&server, SmtpTls::Starttls, PASSWORD, true);
    config.username = None;
    config.password = None;
    let mut spec = spec_for_big_input("mail", RECEIVER, &[]);
    spec.smtp = Some(Mailer::new("mail", &config, Some(&std::fs::read(test_ca_file()).unwrap()), None).unwrap());
    let mail = bind(&plugin, spec).await;
    // The conformance kit's oversized input: 10,000 alerts, 100 KB annotation and body.
    let mut n = notification("mail", "Flood");
    let template = n.alerts[0].clone();
    n.alerts = (0..10_000).map(|i| belfry::plugin::Alert { fingerprint: format!("{i:016x}"), ..template.clone() }).collect();
    n.alerts[0].annotations.push(("description".into(), "d".repeat(100 * 1024)));
    n.common_annotations.push(("description".into(), "d".repeat(100 * 1024)));
    n.body = Some("b".repeat(100 * 1024));
    mail.deliver(&n).await.expect("delivered");
    let got = server.wait_for(1).await;
    assert!(got[0].data.len() < 2 << 20, "bounded: {} bytes", got[0].data.len());
    let html = part(&got[0], "text/html");
    assert!(html.contains("more alerts"), "the rest are counted");
}

#[test]
fn the_daemon_mails_firing_and_resolved_and_check_requires_the_grant() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(SmtpServer::start(SmtpMode::Starttls, Some(("belfry", PASSWORD))));
    let receiver = |smtp: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[plugins.email]\npath = \"{}\"\n\n[[receivers]]\nname = \"mail\"\nplugin = \"email\"\nconfig = {{ from = \"alerts@example.com\", to = [\"oncall@example.com\"] }}\n{smtp}\n[route]\nreceiver = \"mail\"\ngroup_wait = \"0s\"\ngroup_interval = \"1s\"\n",
            email_wasm().display()
        )
    };
    let grant = format!(
        "smtp = {{ smarthost = \"{}\", username = \"belfry\", password = \"{PASSWORD}\", ca_file = \"{}\" }}\n",
        server.smarthost(),
        test_ca_file().display()
    );
    let bin = env!("CARGO_BIN_EXE_belfry-under-test");
    let daemon = Daemon::start(bin, &receiver(&grant)).expect("daemon starts");
    rt.block_on(async {
        let alert = r#"[{"labels":{"alertname":"MailMe","severity":"warning"},"annotations":{"summary":"mail me"}}]"#;
        let (status, body) = http_request("POST", &daemon.url("/api/v2/alerts"), alert).await;
        assert_eq!(status, 200, "{body}");
        let got = server.wait_for(1).await;
        assert!(got[0].header("Subject").unwrap().contains("MailMe"), "{:?}", got[0].header("Subject"));
        assert!(got[0].tls);
        let resolved = r#"[{"labels":{"alertname":"MailMe","severity":"warning"},"endsAt":"2020-01-01T00:00:00Z"}]"#;
        let (status, _) = http_request("POST", &daemon.url("/api/v2/alerts"), resolved).await;
        assert_eq!(status, 200);
        let got = server.wait_for(2).await;
        assert!(got[1].header("Subject").unwrap().contains("RESOLVED"), "{:?}", got[1].header("Subject"));
        assert_eq!(got[1].header("References"), got[0].header("References"), "one thread per group");
    });
    assert!(!daemon.stderr().contains(PASSWORD), "the password is never logged");
    drop(daemon);

    // The preview shows the mail, envelope and all, and sends nothing.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("belfry.toml"), receiver(&grant)).unwrap();
    std::fs::write(dir.path().join("alert.json"), r#"{"labels":{"alertname":"Preview"},"annotations":{"summary":"just looking"}}"#)
        .unwrap();
    let out = std::process::Command::new(bin)
        .args(["template", "render", "--config"])
        .arg(dir.path())
        .args(["--receiver", "mail"])
        .arg(dir.path().join("alert.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains(&format!("SMTP {}\nMAIL FROM:<alerts@example.com>\nRCPT TO:<oncall@example.com>", server.smarthost())),
        "{stdout}"
    );
    assert!(stdout.contains("Subject: [FIRING:1] Preview"), "{stdout}");
    assert!(!stdout.contains(PASSWORD), "{stdout}");
    assert_eq!(server.mails().len(), 2, "the preview sent nothing");
    let out = std::process::Command::new(bin).args(["plugin", "inspect"]).arg(email_wasm()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("imports: ") && stdout.contains("smtp"), "{stdout}");

    for (smtp, expected) in [
        ("", "receivers[0].smtp: plugin `email` sends mail through the host"),
        ("smtp = { smarthost = \"mail.example.com\" }\n", "receivers[0].smtp.smarthost: `mail.example.com` has no port"),
        (
            "smtp = { smarthost = \"mail.example.com:25\", tls = \"none\", username = \"u\", password = \"p4ssw0rd-secret\" }\n",
            "receivers[0].smtp.tls: `none` would send the password in clear text",
        ),
    ] {
        std::fs::write(dir.path().join("belfry.toml"), receiver(smtp)).unwrap();
        let out = std::process::Command::new(bin).args(["check", "--config"]).arg(dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "expected `{expected}` in: {stderr}");
        assert!(!stderr.contains("p4ssw0rd-secret"), "{stderr}");
    }
}

/// The message with what changes on every send (date, message id, MIME boundary) replaced.
fn normalized(mail: &ReceivedMail) -> String {
    let boundary = mail.header("Content-Type").and_then(|ct| ct.split("boundary=").nth(1).map(|b| b.trim_matches('"').to_string()));
    let mut text = mail.data.replace("\r\n", "\n");
    if let Some(b) = boundary {
        text = text.replace(&b, "BOUNDARY");
    }
    text.lines()
        .map(|l| {
            if l.starts_with("Date: ") {
                "Date: DATE".to_string()
            } else if l.starts_with("Message-ID: ") {
                "Message-ID: <ID@belfry>".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[tokio::test]
async fn the_message_equals_its_golden_file() {
    let server = SmtpServer::start(SmtpMode::Starttls, Some(("belfry", PASSWORD))).await;
    let rt = TestRuntime::new();
    let mail = email(&rt, &smtp_config(&server, SmtpTls::Starttls, PASSWORD, true)).await;
    // The conformance kit's fixed notification.
    let mut n = notification("mail", "DiskFull");
    n.common_annotations.push(("runbook_url".into(), "https://runbooks.example/disk".into()));
    n.title = Some("[FIRING:1] DiskFull".into());
    n.body = Some("[FIRING] DiskFull is on fire".into());
    n.alerts[0].starts_at = "2026-11-23T10:00:00Z".into();
    mail.deliver(&n).await.expect("delivered");
    let rendered = normalized(&server.wait_for(1).await[0]);
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/email.eml");
    if std::env::var_os("BELFRY_BLESS").is_some() {
        std::fs::write(&file, &rendered).unwrap();
    }
    let golden = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e} (write it with BELFRY_BLESS=1)", file.display()));
    assert_eq!(rendered, golden, "the message differs from {}", file.display());
}
