//! A tenant's router: the script evaluated per alert (its answer read as routes, a failure routed to the fallback), option sets shared between decisions, and the self-tests a script passes before it goes live.

use super::decision::GroupBy;
use super::decision::RouteDecision;
use super::decision::RouteOptions;
use super::decision::RouteTo;
use super::sandbox::EVAL_NOW_MS;
use super::sandbox::call_script;
use super::script::Script;
use super::script::ScriptError;
use super::script::Uses;
use crate::alert;
use crate::alert::Alert;
use crate::alert::LabelSet;
use crate::alert::Status;
use chrono::DateTime;
use chrono::Utc;
use rhai::Array;
use rhai::Dynamic;
use rhai::ImmutableString;
use rhai::Map;
use rhai::Scope;
use std::collections::HashSet;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Everything a router is built from.
#[derive(Clone, Debug)]
pub struct RouterSpec {
    /// The tenant (scripts can read it; logs name it).
    pub tenant: String,
    /// Where alerts go without a script, and when the script fails on an alert.
    pub fallback: String,
    /// Options of the default route and defaults for keys a script's route leaves out.
    pub defaults: RouteOptions,
    /// The tenant's receivers: a route naming another one is an error.
    pub receivers: HashSet<String>,
    /// The tenant's time interval names.
    pub time_intervals: HashSet<String>,
    /// The tenant's escalation policy names.
    pub escalation_policies: HashSet<String>,
    /// The script file, if the tenant has one.
    pub script: Option<PathBuf>,
}

/// One tenant's routing, ready to evaluate.
pub struct Router {
    spec: RouterSpec,
    /// As scripts read it: shared, so that each alert's map takes a reference, not a copy.
    tenant: ImmutableString,
    fallback: RouteTo,
    defaults: Arc<RouteOptions>,
    receivers: HashSet<String>,
    time_intervals: HashSet<String>,
    script: Option<Script>,
    /// Distinct option sets, shared by every decision that uses them.
    options: Mutex<foldhash::HashSet<Arc<RouteOptions>>>,
    failures: AtomicU64,
    /// How many of the script's `tests()` examples passed before it went live.
    self_tests: usize,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("tenant", &self.tenant).field("script", &self.script_file()).finish_non_exhaustive()
    }
}

impl Router {
    /// Compile the script (if any) and run its self-tests.
    pub fn build(spec: RouterSpec) -> Result<Router, ScriptError> {
        let script = match &spec.script {
            None => None,
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|e| ScriptError {
                    file: file.clone(),
                    line: None,
                    message: format!("cannot read the routing script: {e}"),
                })?;
                Some(Script::compile(file, &text)?)
            }
        };
        Self::with_script(spec, script)
    }

    /// Like [`Router::build`], with the script's text given (for `belfry route test` and tests).
    pub fn from_source(spec: RouterSpec, file: &Path, text: &str) -> Result<Router, ScriptError> {
        let script = Script::compile(file, text)?;
        Self::with_script(spec, Some(script))
    }

    fn with_script(spec: RouterSpec, script: Option<Script>) -> Result<Router, ScriptError> {
        let defaults = Arc::new(spec.defaults.clone());
        let mut router = Router {
            fallback: RouteTo { receiver: spec.fallback.clone(), options: defaults.clone() },
            tenant: spec.tenant.as_str().into(),
            defaults,
            receivers: spec.receivers.clone(),
            time_intervals: spec.time_intervals.clone(),
            spec,
            script,
            options: Mutex::default(),
            failures: AtomicU64::new(0),
            self_tests: 0,
        };
        router.check_literal_receivers()?;
        router.self_tests = router.run_self_tests()?;
        Ok(router)
    }

    /// What this router was built from (to rebuild it when its script changes).
    pub fn spec(&self) -> &RouterSpec {
        &self.spec
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The script's file, if the tenant routes with one.
    pub fn script_file(&self) -> Option<&Path> {
        self.script.as_ref().map(|s| s.file.as_path())
    }

    /// How many `tests()` examples the script passed before it went live.
    pub fn self_tests(&self) -> usize {
        self.self_tests
    }

    /// Alerts the script failed on (and that took the fallback route) since this router started.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Where `alert` goes at `now`. Never fails: a script error routes to the fallback, and is
    /// counted and logged with the tenant, the script line and the alert's fingerprint.
    pub fn route(&self, alert: &Alert, now: DateTime<Utc>) -> RouteDecision {
        let Some(script) = &self.script else {
            return RouteDecision { routes: vec![self.fallback.clone()], failure: None };
        };
        match self.evaluate(script, alert, now) {
            Ok(routes) => RouteDecision { routes, failure: None },
            Err(why) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    tenant = %self.tenant,
                    script = %script.file.display(),
                    fingerprint = %alert.fingerprint(),
                    error = %why,
                    fallback = %self.fallback.receiver,
                    "routing script failed on an alert; it goes to the fallback receiver"
                );
                RouteDecision { routes: vec![self.fallback.clone()], failure: Some(why) }
            }
        }
    }

    fn evaluate(&self, script: &Script, alert: &Alert, now: DateTime<Utc>) -> Result<Vec<RouteTo>, String> {
        EVAL_NOW_MS.with(|c| c.set(now.timestamp_millis()));
        let result = call_script(&script.engine, &script.file, |engine| {
            let options = rhai::CallFnOptions::new().eval_ast(false).rewind_scope(true);
            let input = self.alert_map(alert, now, script.uses);
            engine.call_fn_with_options::<Dynamic>(options, &mut Scope::new(), &script.ast, "route", (input,))
        })
        .map_err(|(_, why)| why)?;
        self.interpret(result).map_err(|why| format!("route() returned {why}"))
    }

    fn alert_map(&self, alert: &Alert, now: DateTime<Utc>, uses: Uses) -> Dynamic {
        // Values straight from `&str`: a short one is stored inline in Rhai's string, so only
        // the string's shared cell is allocated, not a `String` copy first.
        let set = |s: &LabelSet| -> Map { s.iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect() };
        let mut m = Map::new();
        // `Dynamic::from_map`, not `.into()`: Rhai's `From<BTreeMap>` builds the map again.
        m.insert("labels".into(), Dynamic::from_map(set(&alert.labels)));
        if uses.annotations {
            m.insert("annotations".into(), Dynamic::from_map(set(&alert.annotations)));
        }
        let status = match alert.status_at(now) {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        };
        m.insert("status".into(), status.into());
        if uses.starts_at {
            m.insert("starts_at".into(), alert::format_time(alert.starts_at).into());
            m.insert("starts_at_unix".into(), Dynamic::from(alert.starts_at.timestamp()));
        }
        if uses.fingerprint {
            m.insert("fingerprint".into(), alert.fingerprint().to_string().into());
        }
        m.insert("tenant".into(), self.tenant.clone().into());
        Dynamic::from_map(m)
    }

    /// The script's answer as routes.
    fn interpret(&self, value: Dynamic) -> Result<Vec<RouteTo>, String> {
        if value.is_unit() {
            return Ok(vec![self.fallback.clone()]);
        }
        if value.is_array() {
            let items = value.cast::<Array>();
            return items.into_iter().enumerate().map(|(i, v)| self.one_route(v).map_err(|why| format!("{why} at index {i}"))).collect();
        }
        Ok(vec![self.one_route(value)?])
    }

    fn one_route(&self, value: Dynamic) -> Result<RouteTo, String> {
        if value.is_string() {
            let receiver = value.into_string().expect("a string");
            self.check_receiver(&receiver)?;
            return Ok(RouteTo { receiver, options: self.defaults.clone() });
        }
        if !value.is_map() {
            return Err(format!("a {} where a receiver name or a route map was expected", value.type_name()));
        }
        let map = value.cast::<Map>();
        let mut options = (*self.defaults).clone();
        let mut receiver = None;
        for (key, v) in map {
            let field = |what: &str| format!("`{key}` must be {what}");
            match key.as_str() {
                "receiver" => receiver = Some(v.into_string().map_err(|_| field("a receiver name"))?),
                "group_by" => {
                    let names = strings(v).ok_or_else(|| field("an array of label names"))?;
                    options.group_by = GroupBy::from_names(names).map_err(|why| format!("`group_by`: {why}"))?;
                }
                "group_wait" => options.group_wait = duration(v).map_err(|why| format!("`group_wait`: {why}"))?,
                "group_interval" => options.group_interval = duration(v).map_err(|why| format!("`group_interval`: {why}"))?,
                "repeat_interval" => options.repeat_interval = duration(v).map_err(|why| format!("`repeat_interval`: {why}"))?,
                "escalation" => {
                    let name = v.into_string().map_err(|_| field("a policy name"))?;
                    if !self.spec.escalation_policies.contains(&name) {
                        return Err(format!("`escalation` names `{name}`, which is not one of the tenant's [[escalation_policies]]"));
                    }
                    options.escalation = Some(name);
                }
                "mute_time_intervals" | "active_time_intervals" => {
                    let names = strings(v).ok_or_else(|| field("an array of time interval names"))?;
                    if let Some(unknown) = names.iter().find(|n| !self.time_intervals.contains(*n)) {
                        return Err(format!("`{key}` names `{unknown}`, which is not one of the tenant's [[time_intervals]]"));
                    }
                    if key == "mute_time_intervals" {
                        options.mute_time_intervals = names;
                    } else {
                        options.active_time_intervals = names;
                    }
                }
                other => {
                    return Err(format!(
                        "a route map with the unknown key `{other}` (known: receiver, group_by, group_wait, group_interval, repeat_interval, escalation, mute_time_intervals, active_time_intervals)"
                    ));
                }
            }
        }
        let receiver = receiver.ok_or("a route map without `receiver`")?;
        self.check_receiver(&receiver)?;
        if options.group_interval.is_zero() {
            return Err("`group_interval` of 0: use at least 1s".into());
        }
        Ok(RouteTo { receiver, options: self.share(options) })
    }

    fn check_receiver(&self, name: &str) -> Result<(), String> {
        if self.receivers.contains(name) {
            Ok(())
        } else {
            let mut known: Vec<&str> = self.receivers.iter().map(String::as_str).collect();
            known.sort();
            Err(format!("the receiver `{name}`, which the tenant does not have (known: {})", known.join(", ")))
        }
    }

    fn share(&self, options: RouteOptions) -> Arc<RouteOptions> {
        if options == *self.defaults {
            return self.defaults.clone();
        }
        let mut shared = self.options.lock().expect("options lock");
        if let Some(existing) = shared.get(&options) {
            return existing.clone();
        }
        let options = Arc::new(options);
        shared.insert(options.clone());
        options
    }

    /// Every receiver name the script spells out where `route()` returns it must be one of the
    /// tenant's (crate::route_check): a typo in a branch no self-test covers is found now,
    /// not when the first alert takes that branch and falls back.
    fn check_literal_receivers(&self) -> Result<(), ScriptError> {
        let Some(script) = &self.script else { return Ok(()) };
        let unknown: Vec<&(String, Option<usize>)> =
            script.literal_receivers.iter().filter(|(name, _)| !self.receivers.contains(name)).collect();
        let Some((name, line)) = unknown.first() else { return Ok(()) };
        let mut message = format!("route() can return {}", self.check_receiver(name).expect_err("an unknown receiver"));
        if unknown.len() > 1 {
            let others: Vec<String> = unknown[1..].iter().map(|(n, l)| format!("`{n}` (line {})", l.unwrap_or(0))).collect();
            message.push_str(&format!("; also unknown: {}", others.join(", ")));
        }
        Err(ScriptError { file: script.file.clone(), line: *line, message })
    }

    /// Run the script's `tests()`: each example alert must get exactly its expected receivers.
    /// Returns how many examples passed.
    fn run_self_tests(&self) -> Result<usize, ScriptError> {
        let Some(script) = &self.script else { return Ok(0) };
        if !script.ast.iter_functions().any(|f| f.name == "tests" && f.params.is_empty()) {
            return Ok(0);
        }
        let fail = |line: Option<usize>, message: String| ScriptError { file: script.file.clone(), line, message };
        let cases = call_script(&script.engine, &script.file, |engine| {
            engine.call_fn_with_options::<Dynamic>(rhai::CallFnOptions::new().eval_ast(false), &mut Scope::new(), &script.ast, "tests", ())
        })
        .map_err(|(line, why)| fail(line, format!("tests() failed: {why}")))?;
        let cases = cases.try_cast::<Array>().ok_or_else(|| fail(None, "tests() must return an array of test maps".into()))?;
        let count = cases.len();
        for (i, case) in cases.into_iter().enumerate() {
            let case = case.try_cast::<Map>().ok_or_else(|| fail(None, format!("tests()[{i}] must be a map")))?;
            let test = SelfTest::parse(case).map_err(|why| fail(None, format!("tests()[{i}]: {why}")))?;
            let now = test.at.unwrap_or_else(Utc::now);
            let alert = Alert {
                labels: test.labels,
                annotations: test.annotations,
                starts_at: now,
                ends_at: test.ends_at,
                generator_url: String::new(),
            };
            let got = match self.evaluate(script, &alert, now) {
                Ok(routes) => routes.iter().map(|r| r.receiver.clone()).collect::<Vec<_>>(),
                Err(why) => return Err(fail(None, format!("tests()[{i}] ({}): {why}", alert::format_label_set(&alert.labels)))),
            };
            if got != test.expect {
                return Err(fail(
                    None,
                    format!(
                        "tests()[{i}] ({}): expected receivers {:?}, the script routes to {:?}",
                        alert::format_label_set(&alert.labels),
                        test.expect,
                        got
                    ),
                ));
            }
        }
        Ok(count)
    }
}

/// One example from `tests()`.
pub(super) struct SelfTest {
    labels: LabelSet,
    annotations: LabelSet,
    ends_at: Option<DateTime<Utc>>,
    at: Option<DateTime<Utc>>,
    expect: Vec<String>,
}

impl SelfTest {
    fn parse(case: Map) -> Result<SelfTest, String> {
        let mut t = SelfTest { labels: LabelSet::new(), annotations: LabelSet::new(), ends_at: None, at: None, expect: Vec::new() };
        let mut expected = false;
        for (key, v) in case {
            let set = |v: Dynamic, what: &str| -> Result<LabelSet, String> {
                let map = v.try_cast::<Map>().ok_or(format!("`{what}` must be a map of strings"))?;
                map.into_iter()
                    .map(|(k, v)| v.into_string().map(|v| (k.to_string(), v)).map_err(|_| format!("`{what}.{k}` must be a string")))
                    .collect()
            };
            let time = |v: Dynamic, what: &str| -> Result<DateTime<Utc>, String> {
                let s = v.into_string().map_err(|_| format!("`{what}` must be an RFC 3339 time"))?;
                DateTime::parse_from_rfc3339(&s).map(|t| t.with_timezone(&Utc)).map_err(|e| format!("`{what}`: {e}"))
            };
            match key.as_str() {
                "labels" => t.labels = set(v, "labels")?,
                "annotations" => t.annotations = set(v, "annotations")?,
                "at" => t.at = Some(time(v, "at")?),
                "ends_at" => t.ends_at = Some(time(v, "ends_at")?),
                "expect" => {
                    expected = true;
                    t.expect = if v.is_string() {
                        vec![v.into_string().expect("a string")]
                    } else {
                        strings(v).ok_or("`expect` must be a receiver name or an array of them")?
                    };
                }
                other => return Err(format!("unknown key `{other}` (known: labels, annotations, at, ends_at, expect)")),
            }
        }
        if !expected {
            return Err("missing `expect` (the receivers this alert must get; [] if none)".into());
        }
        Ok(t)
    }
}

pub(super) fn strings(v: Dynamic) -> Option<Vec<String>> {
    v.try_cast::<Array>()?.into_iter().map(|s| s.into_string().ok()).collect()
}

/// `"30s"`, `"5m"`, `"1h30m"` or a number of seconds.
pub(super) fn duration(v: Dynamic) -> Result<Duration, String> {
    if let Ok(secs) = v.as_int() {
        return u64::try_from(secs).map(Duration::from_secs).map_err(|_| format!("{secs} is negative"));
    }
    let s = v.into_string().map_err(|_| "must be a duration such as \"30s\" or a number of seconds".to_string())?;
    humantime_serde::re::humantime::parse_duration(&s).map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. \"30s\" or \"5m\""))
}
