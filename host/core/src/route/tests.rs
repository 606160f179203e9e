//! The router's unit tests: scripts routing, failing, hitting limits, and checked before they go live.

use super::*;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::alert::{Alert, LabelSet};

fn spec(receivers: &[&str]) -> RouterSpec {
    RouterSpec {
        tenant: "acme".into(),
        fallback: "fallback".into(),
        defaults: RouteOptions::default(),
        receivers: receivers.iter().map(|s| s.to_string()).chain(["fallback".to_string()]).collect(),
        time_intervals: ["offhours".to_string()].into_iter().collect(),
        escalation_policies: ["page-ops".to_string()].into_iter().collect(),
        script: None,
    }
}

fn router(script: &str) -> Result<Router, ScriptError> {
    Router::from_source(spec(&["pager", "slack", "db-team"]), Path::new("route.rhai"), script)
}

fn alert(labels: &[(&str, &str)]) -> Alert {
    Alert {
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        annotations: LabelSet::new(),
        starts_at: now(),
        ends_at: None,
        generator_url: String::new(),
    }
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap().with_timezone(&Utc)
}

#[test]
fn no_script_routes_everything_to_the_fallback() {
    let r = Router::build(spec(&[])).unwrap();
    assert_eq!(r.route(&alert(&[("alertname", "A")]), now()).receivers(), ["fallback"]);
}

#[test]
fn a_script_picks_receivers_grouping_and_timing() {
    let r = router(
        r#"
        fn route(alert) {
            if alert.labels.severity == "critical" {
                return [#{ receiver: "pager", group_by: ["alertname", "cluster"], group_wait: "10s", repeat_interval: 3600 }, "slack"];
            }
            if matches(alert.labels.team, "db|storage") { return "db-team"; }
            if alert.labels.alertname == "Watchdog" { return []; }
        }"#,
    )
    .unwrap();
    let d = r.route(&alert(&[("alertname", "Down"), ("severity", "critical")]), now());
    assert_eq!(d.receivers(), ["pager", "slack"]);
    let pager = &d.routes[0].options;
    assert_eq!(pager.group_by, GroupBy::Labels(vec!["alertname".into(), "cluster".into()]));
    assert_eq!((pager.group_wait, pager.repeat_interval), (Duration::from_secs(10), Duration::from_secs(3600)));
    assert_eq!(pager.group_interval, RouteOptions::default().group_interval, "unset keys keep the defaults");
    assert_eq!(r.route(&alert(&[("team", "storage")]), now()).receivers(), ["db-team"]);
    assert_eq!(r.route(&alert(&[("team", "storage-2")]), now()).receivers(), ["fallback"], "regexes are anchored");
    assert!(r.route(&alert(&[("alertname", "Watchdog")]), now()).routes.is_empty(), "[] drops the alert");
    assert_eq!(r.route(&alert(&[("alertname", "Other")]), now()).receivers(), ["fallback"], "() is the default route");
    assert_eq!(r.failures(), 0);
}

#[test]
fn the_routing_guide_examples_compile_and_route_without_errors() {
    let guide = include_str!("../../../../docs/ROUTING.md");
    let mut examples = 0;
    for block in guide.split("```rust").skip(1).filter_map(|b| b.split("```").next()) {
        if !block.contains("fn route(") {
            continue;
        }
        let names = ["pager", "chat", "db-team", "oncall", "dba", "team-db", "team-web", "team-api"];
        let r = Router::from_source(spec(&names), Path::new("ROUTING.md"), block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        for labels in [
            &[("team", "db")][..],
            &[("team", "unknown")],
            &[("severity", "critical")],
            &[("severity", "warning")],
            &[("service", "postgres")],
            &[("alertname", "Watchdog")],
            &[],
        ] {
            let d = r.route(&alert(labels), now());
            assert!(d.failure.is_none(), "{block}\n{labels:?}: {:?}", d.failure);
        }
        examples += 1;
    }
    assert!(examples >= 6, "found {examples} examples");
}

#[test]
fn every_alert_field_is_readable() {
    let r = router(
        r#"fn route(alert) {
            if alert.annotations.summary == "disk" && alert.status == "firing" && alert.tenant == "acme"
               && alert.starts_at == "2026-11-23T10:00:00Z" && alert.starts_at_unix == 1795428000
               && alert.fingerprint.len() == 16 { "pager" } else { "slack" }
        }"#,
    )
    .unwrap();
    let mut a = alert(&[("alertname", "A")]);
    a.annotations.insert("summary".into(), "disk".into());
    assert_eq!(r.route(&a, now()).receivers(), ["pager"]);
}

#[test]
fn option_sets_are_shared_between_decisions() {
    let r = router(r#"fn route(alert) { #{ receiver: "pager", group_by: ["..."] } }"#).unwrap();
    let (a, b) = (r.route(&alert(&[("a", "1")]), now()), r.route(&alert(&[("a", "2")]), now()));
    assert!(Arc::ptr_eq(&a.routes[0].options, &b.routes[0].options));
    assert_eq!(a.routes[0].options.group_by, GroupBy::All);
}

#[test]
fn time_helpers_use_the_evaluation_time_in_a_zone() {
    let r = router(
        r#"fn route(alert) {
            if is_weekday("Europe/Paris") && in_hours("Europe/Paris", "09:00", "18:00") { "slack" } else { "pager" }
        }"#,
    )
    .unwrap();
    let a = alert(&[("alertname", "A")]);
    assert_eq!(r.route(&a, now()).receivers(), ["slack"], "Monday 11:00 in Paris");
    let night = DateTime::parse_from_rfc3339("2026-11-23T20:00:00Z").unwrap().with_timezone(&Utc);
    assert_eq!(r.route(&a, night).receivers(), ["pager"]);
    let sunday = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z").unwrap().with_timezone(&Utc);
    assert_eq!(r.route(&a, sunday).receivers(), ["pager"]);
}

#[test]
fn a_route_names_its_escalation_policy() {
    let r = router("fn route(alert) { #{ receiver: \"pager\", escalation: \"page-ops\" } }").unwrap();
    let d = r.route(&alert(&[("alertname", "A")]), now());
    assert_eq!(d.routes[0].options.escalation.as_deref(), Some("page-ops"));
}

#[test]
fn runtime_errors_and_limits_fall_back_and_are_counted() {
    for (script, needle) in [
        ("fn route(alert) { throw \"boom\"; }", "line 1"),
        ("fn route(alert) { loop { } }", "line 1: exceeded 50000 operations"),
        // A name the script computes is only known at run time.
        ("fn route(alert) { \"no\" + \"body\" }", "`nobody`"),
        ("fn route(alert) { #{ receiver: \"pager\", group_wait: \"soon\" } }", "group_wait"),
        ("fn route(alert) { #{ receiver: \"pager\", colour: 1 } }", "`colour`"),
        ("fn route(alert) { #{ receiver: \"pager\", mute_time_intervals: [\"lunch\"] } }", "`lunch`"),
        ("fn route(alert) { #{ receiver: \"pager\", escalation: \"page-everyone\" } }", "[[escalation_policies]]"),
        ("fn route(alert) { matches(\"x\", \"(\") }", "not a valid regex"),
        ("fn route(alert) { let s = \"x\"; loop { s += s; } }", "a string grew past 65536 bytes"),
        ("fn route(alert) { let a = []; loop { a.push(1); } }", "an array grew past 4096 items"),
        ("fn f(n) { f(n + 1) } fn route(alert) { f(0) }", "functions called more than 16 deep"),
        ("fn route(alert) { 42 }", "i64"),
    ] {
        let r = router(script).unwrap();
        let d = r.route(&alert(&[("alertname", "A")]), now());
        assert_eq!(d.receivers(), ["fallback"], "{script}");
        let why = d.failure.unwrap();
        assert!(why.contains(needle), "{script}: {why}");
        assert_eq!(r.failures(), 1);
    }
}

#[test]
fn every_receiver_name_the_script_spells_out_must_exist() {
    // Found when the script is built, in branches no alert has taken yet.
    for (script, line, name) in [
        ("fn route(alert) {\n  if alert.labels.team == \"db\" {\n    \"db-tem\"\n  }\n}", 3, "db-tem"),
        ("fn route(alert) {\n  if alert.labels.a == \"x\" { return [\"pager\", \"slak\"]; }\n  ()\n}", 2, "slak"),
        ("fn route(alert) {\n  switch alert.labels.team {\n    \"db\" => \"pager\",\n    _ => \"nobody\"\n  }\n}", 4, "nobody"),
        ("fn pick(x) {\n  #{ receiver: \"pagr\" }\n}\nfn route(alert) { pick(1) }", 2, "pagr"),
        ("fn route(alert) {\n  let r = #{ receiver: \"slack\" };\n  [r, #{\n    receiver: \"db-taem\" }]\n}", 4, "db-taem"),
    ] {
        let e = router(script).expect_err(script);
        assert_eq!((e.line, e.message.contains(&format!("`{name}`"))), (Some(line), true), "{script}: {e}");
        assert!(e.message.contains("known: db-team, fallback, pager, slack"), "{e}");
    }
    // Names the script computes, returned by helpers, or only expected by self-tests are
    // not receivers it spells out.
    for script in [
        "fn route(alert) { alert.labels.team + \"-team\" }",
        "fn team(alert) { if alert.labels.a == \"x\" { \"db\" } else { \"web\" } }\nfn route(alert) { team(alert) + \"-team\" }",
        "fn route(alert) { \"pager\" }\nfn tests() { [#{ labels: #{ alertname: \"A\" }, expect: \"pager\" }] }",
    ] {
        router(script).unwrap_or_else(|e| panic!("{script}: {e}"));
    }
    // An alert field that does not exist is found at its line, whatever the branch.
    for (script, line) in [
        (
            "fn route(alert) {\n  if alert.labels.a == \"x\" { return \"pager\"; }\n  if alert.lables.team == \"db\" {\n    \"pager\"\n  }\n}",
            3,
        ),
        ("fn route(a) {\n  let t = a\n    .annotation;\n}", 3),
        ("fn route(alert) {\n\n  alert[\"stauts\"]\n}", 3),
        ("fn team(alert) { alert.label.team }\nfn route(alert) { team(alert) }", 1),
    ] {
        let e = router(script).expect_err(script);
        assert_eq!(e.line, Some(line), "{script}: {e}");
        assert!(e.message.contains("which no alert has (an alert has labels, annotations, status,"), "{e}");
    }
    router("fn route(alert) { alert.labels.team; alert.annotations.summary; alert.status; alert.starts_at; alert.fingerprint; alert.tenant; alert[\"starts_at_unix\"]; () }\nfn tests() { [#{ labels: #{ a: \"b\" }, expect: [\"fallback\"] }] }").unwrap();

    // Every unknown name is listed.
    let e = router("fn route(alert) {\n  if alert.labels.a == \"1\" { \"x1\" } else { \"x2\" }\n}").unwrap_err();
    assert!(e.message.contains("`x1`") && e.message.contains("also unknown: `x2` (line 2)"), "{e}");
}

#[test]
fn a_limit_is_reported_at_the_line_that_hit_it() {
    // Rhai reports its limits without a position; the router finds the line by running
    // the failing call again under a debugger.
    for (script, line) in [
        ("fn route(alert) {\n  let n = 0;\n  loop {\n    n += 1;\n  }\n}", 4),
        ("fn route(alert) {\n  let s = \"x\";\n\n  for i in 0..40 { s += s; }\n}", 4),
        ("fn deeper(n) {\n  deeper(n + 1)\n}\nfn route(alert) {\n  deeper(0)\n}", 2),
        ("fn grow(a) {\n  for i in 0..5000 {\n    a.push(i);\n  }\n}\nfn route(alert) {\n  let a = [];\n  grow(a);\n}", 3),
    ] {
        let r = router(script).unwrap();
        let why = r.route(&alert(&[("alertname", "A")]), now()).failure.expect(script);
        assert!(why.starts_with(&format!("line {line}: ")), "{script}: {why}");
    }
    // The same in tests(), which runs before the script goes live.
    let e = router("fn route(alert) { () }\nfn tests() {\n  let t = [];\n  loop { t += 1; }\n}").unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("line 4: an array grew past 4096 items"), "{e}");
}

#[test]
fn a_script_holding_too_much_memory_is_stopped() {
    // Rhai does not check a map's size when keys are added one by one; the memory limit
    // stops it, at its line, long before the operations run out.
    let script = "fn route(alert) {\n  let s = \"x\";\n  for i in 0..15 { s += s; }\n  let m = #{};\n  for i in 0..8000 { m[`k${i}`] = s + i; }\n  \"pager\"\n}";
    let r = router(script).unwrap();
    let d = r.route(&alert(&[("alertname", "A")]), now());
    assert_eq!(d.receivers(), ["fallback"]);
    let why = d.failure.unwrap();
    assert_eq!(why, "line 5: held more than 16 MiB of memory");
    // The same script with a few keys routes.
    let r = router(&script.replace("0..8000", "0..100")).unwrap();
    assert_eq!(r.route(&alert(&[("alertname", "A")]), now()).receivers(), ["pager"]);
}

#[test]
fn a_script_using_too_much_cpu_in_built_ins_is_stopped() {
    // Upper-casing 32 KiB is one operation: the CPU time limit stops the loop long before
    // its 30,000 operations run out.
    let script =
        "fn route(alert) {\n  let s = \"ab\";\n  for i in 0..14 { s += s; }\n  for i in 0..10000 { let t = s.to_upper(); }\n  \"pager\"\n}";
    let r = router(script).unwrap();
    let why = r.route(&alert(&[("alertname", "A")]), now()).failure.unwrap();
    assert_eq!(why, format!("line 4: used more than {} ms of CPU time", limits::CPU_TIME.as_millis()));
    // With 10 iterations it routes.
    let r = router(&script.replace("0..10000", "0..10")).unwrap();
    assert_eq!(r.route(&alert(&[("alertname", "A")]), now()).receivers(), ["pager"]);
}

#[test]
fn scripts_cannot_reach_files_modules_or_eval() {
    for script in
        ["fn route(alert) { eval(\"1\") }", "import \"other\" as o; fn route(alert) { () }", "fn route(alert) { undefined_variable }"]
    {
        assert!(router(script).is_err(), "{script} must not compile");
    }
}

#[test]
fn compile_errors_name_the_line_and_a_missing_route_fn_is_refused() {
    let e = router("fn route(alert) {\n  let x = ;\n}").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.to_string().starts_with("route.rhai:2: does not compile"), "{e}");
    let e = router("fn routes(alert) { () }").unwrap_err();
    assert!(e.message.contains("fn route(alert)"), "{e}");
}

#[test]
fn self_tests_run_before_the_script_goes_live() {
    let body = r#"fn route(alert) { if alert.labels.severity == "critical" { "pager" } else { "slack" } }"#;
    let passing = format!(
        r#"{body}
        fn tests() {{ [
            #{{ labels: #{{ severity: "critical" }}, expect: ["pager"] }},
            #{{ labels: #{{ severity: "info" }}, expect: "slack", at: "2026-11-23T03:00:00Z" }},
        ] }}"#
    );
    router(&passing).expect("tests pass");
    let failing = passing.replace(r#"expect: "slack""#, r#"expect: "pager""#);
    let e = router(&failing).unwrap_err();
    assert!(e.message.contains("tests()[1]") && e.message.contains(r#"expected receivers ["pager"]"#), "{e}");
    let e = router(&format!("{body}\nfn tests() {{ [#{{ labels: #{{}} }}] }}")).unwrap_err();
    assert!(e.message.contains("missing `expect`"), "{e}");
}
