//! Decides which receivers get an alert, and how it is grouped: a tenant's Rhai script compiled once, evaluated per alert in a sandboxed engine, with the `[route]` receiver as fallback.
//!
//! A script defines `fn route(alert)` and returns `()` (the default route), a receiver name,
//! a map (`#{ receiver: "pager", group_by: ["alertname"], group_wait: "10s", ... }`), or an
//! array of those (Alertmanager's `continue`: every element is a route). It may define
//! `fn tests()` returning example alerts with the receivers they expect; they run before the
//! script goes live. See docs/ROUTING.md.

use serde::Deserialize;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use rhai::{AST, Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position, Scope};

use crate::alert::{self, Alert, LabelSet, Status};

/// Which labels form an aggregation group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GroupBy {
    /// Every label (Alertmanager's `group_by: ['...']`): one group per alert.
    All,
    /// These labels; an empty list puts every alert of the route in one group.
    Labels(Vec<String>),
}

impl GroupBy {
    /// The group labels of an alert with `labels`.
    pub fn group_labels(&self, labels: &LabelSet) -> LabelSet {
        match self {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => names.iter().filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone()))).collect(),
        }
    }

    /// As written in config and scripts.
    pub fn names(&self) -> Vec<String> {
        match self {
            GroupBy::All => vec!["...".into()],
            GroupBy::Labels(names) => names.clone(),
        }
    }

    /// From a list of label names, `...` meaning all.
    pub fn from_names(names: Vec<String>) -> Result<GroupBy, String> {
        if names.iter().any(|n| n == "...") {
            return if names.len() == 1 { Ok(GroupBy::All) } else { Err("`...` (all labels) cannot be combined with other labels".into()) };
        }
        if let Some(bad) = names.iter().find(|n| !alert::is_valid_label_name(n)) {
            return Err(format!("`{bad}` is not a valid label name"));
        }
        let mut names = names;
        names.sort();
        names.dedup();
        Ok(GroupBy::Labels(names))
    }
}

/// How a route groups and times its notifications.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteOptions {
    /// Which labels form a group.
    pub group_by: GroupBy,
    /// How long a new group waits for more alerts before its first notification.
    pub group_wait: Duration,
    /// How long a group waits after a notification before notifying changes.
    pub group_interval: Duration,
    /// How long before an unchanged group is notified again.
    pub repeat_interval: Duration,
    /// The escalation policy that follows up unacknowledged notifications.
    pub escalation: Option<String>,
    /// Notifications are held while any of these time intervals is active.
    pub mute_time_intervals: Vec<String>,
    /// Notifications go out only while one of these time intervals is active (none: always).
    pub active_time_intervals: Vec<String>,
}

impl Default for RouteOptions {
    /// Alertmanager's defaults.
    fn default() -> Self {
        RouteOptions {
            group_by: GroupBy::Labels(Vec::new()),
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(5 * 60),
            repeat_interval: Duration::from_secs(4 * 3600),
            escalation: None,
            mute_time_intervals: Vec::new(),
            active_time_intervals: Vec::new(),
        }
    }
}

/// One route an alert takes: a receiver and how it groups.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteTo {
    /// The receiver.
    pub receiver: String,
    /// Grouping and timing.
    pub options: Arc<RouteOptions>,
}

/// Where an alert goes.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteDecision {
    /// The routes, in the order the script returned them; empty when the script drops the alert.
    pub routes: Vec<RouteTo>,
    /// Why the script's answer was replaced by the fallback route.
    pub failure: Option<String>,
}

impl RouteDecision {
    /// The receivers, in order.
    pub fn receivers(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.receiver.clone()).collect()
    }
}

/// A script that cannot go live: where and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ScriptError {
    /// The script.
    pub file: PathBuf,
    /// The line at fault, when known.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

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

/// Sandbox limits of a routing script, per evaluation.
pub mod limits {
    /// Rhai operations per evaluation (a 7-rule script uses about 200).
    pub const OPERATIONS: u64 = 50_000;
    /// Nested function calls.
    pub const CALL_LEVELS: usize = 16;
    /// Bytes in one string.
    pub const STRING_BYTES: usize = 64 << 10;
    /// Elements in one array or map.
    pub const COLLECTION_ITEMS: usize = 4_096;
    /// Memory one evaluation may hold (checked every [`MEMORY_CHECK_EVERY`] operations):
    /// what the size limits leave open, such as a map grown key by key.
    pub const MEMORY_BYTES: usize = 16 << 20;
    /// Operations between two checks of [`MEMORY_BYTES`].
    pub const MEMORY_CHECK_EVERY: u64 = 128;
    /// CPU time one evaluation may use. Operations bound the script's own steps (50,000 take
    /// ~1 ms), not what a built-in does for one of them: a regex compiled per iteration, or a
    /// string function on a 64 KiB string. Ten times more in unoptimized (test) builds.
    pub const CPU_TIME: std::time::Duration = std::time::Duration::from_millis(if cfg!(debug_assertions) { 200 } else { 20 });
    /// Operations between two reads of the thread's CPU clock; the first read starts the count,
    /// so an evaluation shorter than this never reads it.
    pub const CPU_CHECK_EVERY: u64 = 1024;
}

/// What a script stopped for holding more than [`limits::MEMORY_BYTES`] is terminated with.
const OVER_MEMORY: &str = "belfry:memory";
/// What a script stopped for using more than [`limits::CPU_TIME`] is terminated with.
const OVER_CPU_TIME: &str = "belfry:cpu";

thread_local! {
    /// The thread's CPU clock when the running evaluation first read it.
    static CPU_CLOCK_START: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Counts what one evaluation uses beyond Rhai's own limits, from its start to its drop: the
/// memory its thread holds and (past its first [`limits::CPU_CHECK_EVERY`] operations) its
/// CPU time. The engine's progress callback ([`over_budget`]) checks both.
struct Budget {
    _memory: crate::alloc::Meter,
}

impl Budget {
    fn start() -> Budget {
        CPU_CLOCK_START.with(|start| start.set(None));
        Budget { _memory: crate::alloc::Meter::start() }
    }

    /// Run `f` (an evaluation) within a fresh budget, which ends with it.
    fn run<T>(f: impl FnOnce() -> T) -> T {
        let _budget = Budget::start();
        f()
    }
}

/// Rhai's progress callback: `Some` ends the evaluation.
fn over_budget(operations: u64) -> Option<Dynamic> {
    if operations.is_multiple_of(limits::MEMORY_CHECK_EVERY) && crate::alloc::Meter::held() > limits::MEMORY_BYTES as isize {
        return Some(Dynamic::from(OVER_MEMORY));
    }
    if operations.is_multiple_of(limits::CPU_CHECK_EVERY)
        && let Some(now) = thread_cpu_time()
    {
        let start = CPU_CLOCK_START.with(|cell| {
            let start = cell.get().unwrap_or(now);
            cell.set(Some(start));
            start
        });
        if now.saturating_sub(start) > limits::CPU_TIME {
            return Some(Dynamic::from(OVER_CPU_TIME));
        }
    }
    None
}

/// The CPU time the calling thread has used (Linux's `CLOCK_THREAD_CPUTIME_ID`).
#[cfg(target_os = "linux")]
fn thread_cpu_time() -> Option<Duration> {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writing into a timespec this function owns.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) } == 0;
    ok.then(|| Duration::new(time.tv_sec as u64, time.tv_nsec as u32))
}

/// Elsewhere the CPU time is not limited (operations and memory still are).
#[cfg(not(target_os = "linux"))]
fn thread_cpu_time() -> Option<Duration> {
    None
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

struct Script {
    file: PathBuf,
    engine: Engine,
    ast: AST,
    /// Alert fields the script's text names; the others are not computed per alert.
    uses: Uses,
    /// The receiver names it spells out where `route()` returns them, with their lines.
    literal_receivers: Vec<(String, Option<usize>)>,
}

/// Which of the costlier alert fields a script can read (a conservative text search).
#[derive(Clone, Copy)]
struct Uses {
    annotations: bool,
    starts_at: bool,
    fingerprint: bool,
}

thread_local! {
    /// The evaluation's clock, in Unix milliseconds, for the time helpers.
    static EVAL_NOW_MS: Cell<i64> = const { Cell::new(0) };
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
        let result = call_script(script, |engine| {
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
        let cases = call_script(script, |engine| {
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
struct SelfTest {
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

impl Script {
    fn compile(file: &Path, text: &str) -> Result<Script, ScriptError> {
        let engine = sandboxed_engine(file);
        let ast = engine.compile(text).map_err(|e| ScriptError {
            file: file.to_path_buf(),
            line: e.1.line(),
            message: format!("does not compile: {}", e.0),
        })?;
        if !ast.iter_functions().any(|f| f.name == "route" && f.params.len() == 1) {
            return Err(ScriptError {
                file: file.to_path_buf(),
                line: None,
                message: "defines no `fn route(alert)`; the script must define it and return where the alert goes".into(),
            });
        }
        // A script can only read a field it names (there is no `eval` to build the name).
        let uses = Uses {
            annotations: text.contains("annotations"),
            starts_at: text.contains("starts_at"),
            fingerprint: text.contains("fingerprint"),
        };
        if let Some((field, at)) = crate::route_check::unknown_alert_field(text) {
            return Err(ScriptError {
                file: file.to_path_buf(),
                line: at.line(),
                message: format!(
                    "reads `{field}`, which no alert has (an alert has {}); a field that does not exist reads as () on every alert",
                    crate::route_check::ALERT_FIELDS.join(", ")
                ),
            });
        }
        let literal_receivers = crate::route_check::literal_receivers(text).into_iter().map(|(name, at)| (name, at.line())).collect();
        Ok(Script { file: file.to_path_buf(), engine, ast, uses, literal_receivers })
    }
}

/// An engine with no file, module or `eval` access and bounded operations, depth and sizes.
fn sandboxed_engine(file: &Path) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(limits::OPERATIONS)
        .set_max_call_levels(limits::CALL_LEVELS)
        .set_max_expr_depths(64, 32)
        .set_max_string_size(limits::STRING_BYTES)
        .set_max_array_size(limits::COLLECTION_ITEMS)
        .set_max_map_size(limits::COLLECTION_ITEMS)
        .set_max_modules(0)
        .set_max_variables(256)
        .set_strict_variables(true)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .disable_symbol("eval")
        .disable_symbol("import")
        .on_progress(over_budget);
    let origin = file.display().to_string();
    engine.on_print(move |s| tracing::info!(script = %origin, "{s}"));
    let origin = file.display().to_string();
    engine.on_debug(move |s, _, pos| tracing::debug!(script = %origin, line = pos.line().unwrap_or(0), "{s}"));
    register_helpers(&mut engine);
    engine
}

/// Regexes compiled once per script (scripts use a handful of constant patterns).
#[derive(Default)]
struct RegexCache(Mutex<HashMap<String, regex::Regex>>);

const REGEX_CACHE_ENTRIES: usize = 256;

impl RegexCache {
    fn is_match(&self, value: &str, pattern: &str) -> Result<bool, Box<EvalAltResult>> {
        let mut cache = self.0.lock().expect("regex cache lock");
        if let Some(re) = cache.get(pattern) {
            return Ok(re.is_match(value));
        }
        // Anchored, like Alertmanager's `=~` matchers.
        let re = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("matches(): `{pattern}` is not a valid regex: {e}"))?;
        let hit = re.is_match(value);
        if cache.len() < REGEX_CACHE_ENTRIES {
            cache.insert(pattern.to_string(), re);
        }
        Ok(hit)
    }
}

fn register_helpers(engine: &mut Engine) {
    let regexes = Arc::new(RegexCache::default());
    let r = regexes.clone();
    engine.register_fn("matches", move |value: &str, pattern: &str| r.is_match(value, pattern));
    // A missing label reads as `()`: it matches nothing.
    engine.register_fn("matches", |_: (), _: &str| false);
    engine.register_fn("local_time", |zone: &str| -> Result<Map, Box<EvalAltResult>> {
        let t = eval_now().with_timezone(&zone_of(zone)?);
        let mut m = Map::new();
        m.insert("year".into(), Dynamic::from(t.year() as i64));
        m.insert("month".into(), Dynamic::from(t.month() as i64));
        m.insert("day".into(), Dynamic::from(t.day() as i64));
        m.insert("hour".into(), Dynamic::from(t.hour() as i64));
        m.insert("minute".into(), Dynamic::from(t.minute() as i64));
        m.insert("weekday".into(), t.format("%A").to_string().to_lowercase().into());
        m.insert("weekday_num".into(), Dynamic::from(t.weekday().number_from_monday() as i64));
        Ok(m)
    });
    engine.register_fn("in_hours", |zone: &str, start: &str, end: &str| -> Result<bool, Box<EvalAltResult>> {
        let t = eval_now().with_timezone(&zone_of(zone)?);
        let minute = t.hour() * 60 + t.minute();
        let clock = |s: &str| -> Result<u32, Box<EvalAltResult>> {
            crate::timeinterval::clock(s).ok_or_else(|| format!("in_hours(): `{s}` is not HH:MM").into())
        };
        let (start, end) = (clock(start)?, clock(end)?);
        // A window that crosses midnight (22:00 to 06:00) wraps.
        Ok(if start <= end { start <= minute && minute < end } else { minute >= start || minute < end })
    });
    engine.register_fn("is_weekday", |zone: &str| -> Result<bool, Box<EvalAltResult>> {
        Ok(eval_now().with_timezone(&zone_of(zone)?).weekday().number_from_monday() <= 5)
    });
}

fn eval_now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(EVAL_NOW_MS.with(Cell::get)).unwrap_or_default()
}

fn zone_of(name: &str) -> Result<chrono_tz::Tz, Box<EvalAltResult>> {
    crate::timeinterval::parse_zone(name).map_err(|why| why.into())
}

fn strings(v: Dynamic) -> Option<Vec<String>> {
    v.try_cast::<Array>()?.into_iter().map(|s| s.into_string().ok()).collect()
}

/// `"30s"`, `"5m"`, `"1h30m"` or a number of seconds.
fn duration(v: Dynamic) -> Result<Duration, String> {
    if let Ok(secs) = v.as_int() {
        return u64::try_from(secs).map(Duration::from_secs).map_err(|_| format!("{secs} is negative"));
    }
    let s = v.into_string().map_err(|_| "must be a duration such as \"30s\" or a number of seconds".to_string())?;
    humantime_serde::re::humantime::parse_duration(&s).map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. \"30s\" or \"5m\""))
}

/// Run `call` (one call of a script function) on the script's engine within the evaluation's
/// [`Budget`]; a failure comes back with its line, if found, and described with it.
fn call_script(script: &Script, call: impl Fn(&Engine) -> Result<Dynamic, Box<EvalAltResult>>) -> Result<Dynamic, (Option<usize>, String)> {
    Budget::run(|| call(&script.engine)).map_err(|error| {
        let at = locate(script, &error, call);
        (at.line(), describe_eval_error(&error, at))
    })
}

/// Where in the script `error` happened.
///
/// Rhai gives most errors their position, but reports its limits (operations, string, array
/// and map sizes, call depth) at the call of the script's function, which for `route` and
/// `tests` has none. For those, `call` is run again in an engine like the script's with a
/// debugger that remembers the position of every step: the last one is where the limit was
/// hit. Only a failing call pays for this, at most once more its bounded cost.
fn locate(script: &Script, error: &EvalAltResult, call: impl FnOnce(&Engine) -> Result<Dynamic, Box<EvalAltResult>>) -> Position {
    let inner = innermost(error);
    if !inner.position().is_none() || !inner.is_system_exception() {
        return inner.position();
    }
    let last = Arc::new(Mutex::new(Position::NONE));
    let mut engine = sandboxed_engine(&script.file);
    // The first run already printed; this one is silent.
    engine.on_print(|_| {}).on_debug(|_, _, _| {});
    let seen = last.clone();
    #[allow(deprecated)] // "not deprecated, but considered volatile" (Rhai's words)
    engine.register_debugger(
        |_, debugger| debugger,
        move |_, event, _, _, position| {
            if matches!(event, rhai::debugger::DebuggerEvent::Step) && !position.is_none() {
                *seen.lock().expect("position lock") = position;
            }
            Ok(rhai::debugger::DebuggerCommand::StepInto)
        },
    );
    // The same limit stops the run again; its outcome is known and ignored.
    let _ = Budget::run(|| call(&engine));
    *last.lock().expect("position lock")
}

fn innermost(e: &EvalAltResult) -> &EvalAltResult {
    match e {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => innermost(inner),
        other => other,
    }
}

/// The error with its script line (`at`, from [`locate`]), without Rhai's function-call wrapping.
fn describe_eval_error(e: &EvalAltResult, at: Position) -> String {
    let inner = innermost(e);
    let what = match inner {
        EvalAltResult::ErrorTooManyOperations(_) => {
            format!("exceeded {} operations (an endless loop?)", limits::OPERATIONS)
        }
        EvalAltResult::ErrorTerminated(token, _) if token.clone().into_string().is_ok_and(|t| t == OVER_MEMORY) => {
            format!("held more than {} MiB of memory", limits::MEMORY_BYTES >> 20)
        }
        EvalAltResult::ErrorTerminated(token, _) if token.clone().into_string().is_ok_and(|t| t == OVER_CPU_TIME) => {
            format!("used more than {} ms of CPU time", limits::CPU_TIME.as_millis())
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            format!("functions called more than {} deep (endless recursion?)", limits::CALL_LEVELS)
        }
        EvalAltResult::ErrorDataTooLarge(what, _) => match what.as_str() {
            "Length of string" => format!("a string grew past {} bytes", limits::STRING_BYTES),
            "Size of array/BLOB" => format!("an array grew past {} items", limits::COLLECTION_ITEMS),
            "Size of object map" => format!("a map grew past {} entries", limits::COLLECTION_ITEMS),
            other => format!("{other} is over its limit"),
        },
        other => {
            let mut text = other.to_string();
            // Rhai appends " (line L, position P)"; the line is reported separately.
            if let Some(cut) = text.rfind(" (line ") {
                text.truncate(cut);
            }
            text
        }
    };
    match at.line() {
        None => what,
        Some(line) => format!("line {line}: {what}"),
    }
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `[route]`: the tenant's routing script, its fallback receiver and the default grouping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Where alerts go without a script, when the script returns `()`, and when it fails on
    /// an alert.
    pub receiver: String,
    /// A Rhai routing script (docs/ROUTING.md), relative to the file that names it. Reloaded
    /// when it changes.
    #[serde(default)]
    pub script: Option<PathBuf>,
    /// Labels that form a group; `["..."]` groups by all labels, `[]` puts all alerts in one
    /// group (Alertmanager's default).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification.
    #[serde(default = "default_group_wait", with = "humantime_serde")]
    pub group_wait: Duration,
    /// How long a group waits after a notification before notifying changes.
    #[serde(default = "default_group_interval", with = "humantime_serde")]
    pub group_interval: Duration,
    /// How long before an unchanged, still firing group is notified again.
    #[serde(default = "default_repeat_interval", with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// The escalation policy of the default route (a script's routes name their own).
    #[serde(default)]
    pub escalation: Option<String>,
}

fn default_group_wait() -> Duration {
    crate::route::RouteOptions::default().group_wait
}

fn default_group_interval() -> Duration {
    crate::route::RouteOptions::default().group_interval
}

fn default_repeat_interval() -> Duration {
    crate::route::RouteOptions::default().repeat_interval
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let guide = include_str!("../../docs/ROUTING.md");
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
        let script = "fn route(alert) {\n  let s = \"ab\";\n  for i in 0..14 { s += s; }\n  for i in 0..10000 { let t = s.to_upper(); }\n  \"pager\"\n}";
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
}
