//! The sandbox a routing script runs in: Rhai's limits plus Belfry's memory and CPU budget per evaluation, the helpers scripts may call, and errors described at their line.

use chrono::DateTime;
use chrono::Utc;
use chrono::{Datelike, Timelike};
use rhai::Dynamic;
use rhai::Engine;
use rhai::EvalAltResult;
use rhai::Map;
use rhai::Position;
use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

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
pub(super) const OVER_MEMORY: &str = "belfry:memory";
/// What a script stopped for using more than [`limits::CPU_TIME`] is terminated with.
pub(super) const OVER_CPU_TIME: &str = "belfry:cpu";

thread_local! {
    /// The thread's CPU clock when the running evaluation first read it.
    pub(super) static CPU_CLOCK_START: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Counts what one evaluation uses beyond Rhai's own limits, from its start to its drop: the
/// memory its thread holds and (past its first [`limits::CPU_CHECK_EVERY`] operations) its
/// CPU time. The engine's progress callback ([`over_budget`]) checks both.
pub(super) struct Budget {
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
pub(super) fn over_budget(operations: u64) -> Option<Dynamic> {
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
pub(super) fn thread_cpu_time() -> Option<Duration> {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writing into a timespec this function owns.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) } == 0;
    ok.then(|| Duration::new(time.tv_sec as u64, time.tv_nsec as u32))
}

/// Elsewhere the CPU time is not limited (operations and memory still are).
#[cfg(not(target_os = "linux"))]
pub(super) fn thread_cpu_time() -> Option<Duration> {
    None
}

thread_local! {
    /// The evaluation's clock, in Unix milliseconds, for the time helpers.
    pub(super) static EVAL_NOW_MS: Cell<i64> = const { Cell::new(0) };
}

/// An engine with no file, module or `eval` access and bounded operations, depth and sizes.
pub(super) fn sandboxed_engine(file: &Path) -> Engine {
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
pub(super) struct RegexCache(Mutex<HashMap<String, regex::Regex>>);

pub(super) const REGEX_CACHE_ENTRIES: usize = 256;

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

pub(super) fn register_helpers(engine: &mut Engine) {
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

pub(super) fn eval_now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(EVAL_NOW_MS.with(Cell::get)).unwrap_or_default()
}

pub(super) fn zone_of(name: &str) -> Result<chrono_tz::Tz, Box<EvalAltResult>> {
    crate::timeinterval::parse_zone(name).map_err(|why| why.into())
}

/// Run `call` (one call of a script function) on the script's engine within the evaluation's
/// [`Budget`]; a failure comes back with its line, if found, and described with it.
pub(super) fn call_script(
    engine: &Engine,
    file: &Path,
    call: impl Fn(&Engine) -> Result<Dynamic, Box<EvalAltResult>>,
) -> Result<Dynamic, (Option<usize>, String)> {
    Budget::run(|| call(engine)).map_err(|error| {
        let at = locate(file, &error, call);
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
pub(super) fn locate(file: &Path, error: &EvalAltResult, call: impl FnOnce(&Engine) -> Result<Dynamic, Box<EvalAltResult>>) -> Position {
    let inner = innermost(error);
    if !inner.position().is_none() || !inner.is_system_exception() {
        return inner.position();
    }
    let last = Arc::new(Mutex::new(Position::NONE));
    let mut engine = sandboxed_engine(file);
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

pub(super) fn innermost(e: &EvalAltResult) -> &EvalAltResult {
    match e {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => innermost(inner),
        other => other,
    }
}

/// The error with its script line (`at`, from [`locate`]), without Rhai's function-call wrapping.
pub(super) fn describe_eval_error(e: &EvalAltResult, at: Position) -> String {
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
