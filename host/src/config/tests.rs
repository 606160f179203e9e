//! The configuration's unit tests: defaults, strict parsing, every problem located.

use super::*;
use std::path::Path;

use crate::plugin::{Isolation, Limits, Profiler};

const MINIMAL: &str = r#"
    [plugins.webhook]
    path = "webhook.wasm"

    [[receivers]]
    name = "ops"
    plugin = "webhook"
    config = { url = "http://127.0.0.1:1/" }

    [route]
    receiver = "ops"
"#;

#[test]
fn a_toml_error_names_the_key_at_fault_and_its_line() {
    let cases = [
        ("repeat_interval = 4", "line 12", "route.repeat_interval: invalid type: integer `4`, expected a duration"),
        ("group_wait = \"1 fortnight\"", "line 12", "route.group_wait: "),
        ("receiver = \"again\"", "line 12", "receiver"),
    ];
    for (extra, line, needle) in cases {
        let text = format!("{MINIMAL}        {extra}\n");
        let (location, message) = Config::parse(&text).map(|_| ()).unwrap_err();
        assert_eq!(location, line, "{extra}: {message}");
        assert!(message.contains(needle), "{extra}: {message}");
    }
    let (_, message) = Config::parse(&format!("{MINIMAL}        group_wait = \"1 fortnight\"\n")).map(|_| ()).unwrap_err();
    assert!(message.contains(r#"like "30s""#), "{message}");
    let (_, message) = Config::parse(&format!("{MINIMAL}        receiver = \"again\"\n")).map(|_| ()).unwrap_err();
    assert!(message.contains("duplicate key"), "{message}");
}

fn load(text: &str) -> Result<Config, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("belfry.toml");
    std::fs::write(&file, text).unwrap();
    Config::load(&file)
}

#[test]
fn minimal_config_gets_defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.server.listen, std::net::SocketAddr::from(([127, 0, 0, 1], 9093)));
    assert_eq!(c.runtime.isolation, Isolation::PerReceiver);
    assert_eq!(c.runtime.limits, Limits::default());
    assert!(c.resolve(Path::new("webhook.wasm")).ends_with("webhook.wasm"));
}

#[test]
fn the_profiler_is_off_unless_asked_for_and_a_bad_one_is_named() {
    assert_eq!(load(MINIMAL).unwrap().runtime.profiler, Profiler::None);
    let with = |value: &str| MINIMAL.replace("[route]", &format!("[runtime]\nprofiler = \"{value}\"\n\n[route]"));
    assert_eq!(load(&with("perfmap")).unwrap().runtime.profiler, Profiler::Perfmap);
    let err = load(&with("vtune")).unwrap_err().to_string();
    assert!(err.contains("belfry.toml:11") && err.contains("unknown variant `vtune`") && err.contains("perfmap"), "{err}");
}

#[test]
fn unknown_key_names_line_and_key() {
    let err = load(&MINIMAL.replace("[route]", "[route]\nrecevier = \"x\"")).unwrap_err().to_string();
    assert!(err.contains("belfry.toml:11: route.recevier: unknown field"), "{err}"); // the line and the bad key
    assert!(err.contains("recevier"), "{err}");
}

#[test]
fn unknown_plugin_and_missing_receiver_are_both_reported() {
    let text = MINIMAL.replace("plugin = \"webhook\"", "plugin = \"slak\"").replace("receiver = \"ops\"", "receiver = \"nobody\"");
    let err = load(&text).unwrap_err();
    let keys: Vec<&str> = err.0.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["receivers[0].plugin", "route.receiver"]);
    assert!(err.0[0].message.contains("[plugins.slak]"));
}

#[test]
fn bad_allowed_host_is_rejected() {
    let text = MINIMAL.replace("plugin = \"webhook\"", "plugin = \"webhook\"\nallowed_hosts = [\"http://x/\"]");
    let err = load(&text).unwrap_err();
    assert_eq!(err.0[0].key, "receivers[0].allowed_hosts[0]");
}

#[test]
fn fallback_must_exist_and_not_loop() {
    let two = |a: &str, b: &str| {
        format!(
            "[plugins.webhook]\npath = \"w.wasm\"\n[[receivers]]\nname = \"a\"\nplugin = \"webhook\"\n{a}\n\
             [[receivers]]\nname = \"b\"\nplugin = \"webhook\"\n{b}\n[route]\nreceiver = \"a\"\n"
        )
    };
    assert!(load(&two("fallback = \"b\"", "")).is_ok());
    let err = load(&two("fallback = \"c\"", "")).unwrap_err();
    assert_eq!(err.0[0].key, "receivers[0].fallback");
    assert!(err.0[0].message.contains("`c`"), "{err}");
    let err = load(&two("fallback = \"b\"", "fallback = \"a\"")).unwrap_err();
    assert!(err.0[0].message.contains("a -> b -> a"), "{err}");
    let err = load(&two("retry = { max_attempts = 0 }", "")).unwrap_err();
    assert_eq!(err.0[0].key, "receivers[0].retry.max_attempts");
    let err = load(&two("rate_limit = { messages = 0 }", "")).unwrap_err();
    assert_eq!(err.0[0].key, "receivers[0].rate_limit");
}

#[test]
fn keys_are_located_on_their_lines() {
    let text = "[server]\nlisten = \"x\"\n\n[[receivers]]\nname = \"a\"\n\n[[receivers]]\nname = \"b\"\nconfig = { url = \"u\" }\n";
    assert_eq!(line_of_key(text, "server.listen"), Some(2));
    assert_eq!(line_of_key(text, "receivers[1].config.url"), Some(9));
    assert_eq!(line_of_key(text, "receivers[1].name"), Some(8));
    assert_eq!(line_of_key(text, "receivers[1].nothing"), Some(7), "the deepest part that exists");
    assert_eq!(line_of_key(text, "route.receiver"), None);
    let err = load(&MINIMAL.replace("receiver = \"ops\"", "receiver = \"nobody\"")).unwrap_err().to_string();
    assert!(err.contains("belfry.toml:11: route.receiver: no receiver is named `nobody`"), "{err}");
}

#[test]
fn missing_file_says_so() {
    let err = Config::load(Path::new("/nonexistent/belfry.toml")).unwrap_err().to_string();
    assert!(err.contains("cannot read the config file"), "{err}");
}
