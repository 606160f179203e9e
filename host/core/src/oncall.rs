//! On-call schedules: rotations of receivers with handoffs in a time zone, layered, with overrides; who is on call at an instant, for escalation steps.
//!
//! PagerDuty's and Grafana OnCall's model, kept to what decides who is paged:
//!
//! - a **rotation** hands off from one receiver to the next every `length`, from its `start`
//!   (a local time in the schedule's `location`). Lengths of whole days hand off at the start's
//!   local time of day, so a weekly Monday-09:00 handoff stays at 09:00 across daylight saving
//!   changes; other lengths (`12h`) count real hours from the start;
//! - a rotation may apply only while one of its `active_time_intervals` is active (a
//!   business-hours layer over a 24/7 one); **later rotations override earlier ones** where
//!   they apply (PagerDuty's layers);
//! - an **override** puts one receiver on call from `start` to `end`, over every rotation
//!   (the last override listed wins where two overlap).
//!
//! Who is on call is a pure function of the configuration and the instant: nothing is stored,
//! and a schedule edited by reload takes effect at once.

use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::timeinterval::parse_zone;

/// A tenant's schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Its name.
    pub name: String,
    location: Tz,
    rotations: Vec<Rotation>,
    overrides: Vec<Override>,
}

#[derive(Clone, Debug)]
struct Rotation {
    receivers: Vec<String>,
    start: NaiveDateTime,
    length: Duration,
    active_time_intervals: Vec<String>,
}

#[derive(Clone, Debug)]
struct Override {
    receiver: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// Who is on call, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnCall {
    /// The receiver paged.
    pub receiver: String,
    /// `overrides[i]` or `rotations[i]`: the entry of the schedule that put it there.
    pub source: String,
}

/// A tenant's schedules by name.
pub type Schedules = HashMap<String, Schedule>;

/// A configuration problem: the key under `schedules[i]` and what is wrong.
pub type Problem = (String, String);

const DAY: u64 = 86_400;

impl Schedule {
    /// Build a schedule from its configuration, or every problem in it (keys relative to the
    /// schedule's table).
    pub fn from_config(c: &ScheduleConfig) -> Result<Schedule, Vec<Problem>> {
        let mut problems = Vec::new();
        let location = match &c.location {
            None => Tz::UTC,
            Some(name) => parse_zone(name).unwrap_or_else(|why| {
                problems.push(("location".into(), why));
                Tz::UTC
            }),
        };
        if c.rotations.is_empty() && c.overrides.is_empty() {
            problems.push(("rotations".into(), "needs at least one rotation (or override)".into()));
        }
        let mut rotations = Vec::new();
        for (i, r) in c.rotations.iter().enumerate() {
            let key = |k: &str| format!("rotations[{i}].{k}");
            if r.receivers.is_empty() {
                problems.push((key("receivers"), "name at least one receiver".into()));
            }
            if r.length < Duration::from_secs(60) {
                problems.push((key("length"), "must be at least 1m".into()));
            }
            match parse_local(&r.start) {
                Ok(start) => rotations.push(Rotation {
                    receivers: r.receivers.clone(),
                    start,
                    length: r.length,
                    active_time_intervals: r.active_time_intervals.clone(),
                }),
                Err(why) => problems.push((key("start"), why)),
            }
        }
        let mut overrides = Vec::new();
        for (i, o) in c.overrides.iter().enumerate() {
            let key = |k: &str| format!("overrides[{i}].{k}");
            let start = parse_local(&o.start).map_err(|why| problems.push((key("start"), why))).ok();
            let end = parse_local(&o.end).map_err(|why| problems.push((key("end"), why))).ok();
            if let (Some(start), Some(end)) = (start, end) {
                if end <= start {
                    problems.push((key("end"), "must be after start".into()));
                }
                overrides.push(Override { receiver: o.receiver.clone(), start: instant(location, start), end: instant(location, end) });
            }
        }
        if problems.is_empty() { Ok(Schedule { name: c.name.clone(), location, rotations, overrides }) } else { Err(problems) }
    }

    /// Who is on call at `at`; `active` tells whether a named time interval is active then.
    /// `None` when no override covers `at` and no rotation applies (a gap in the schedule).
    pub fn on_call(&self, at: DateTime<Utc>, active: &dyn Fn(&str) -> bool) -> Option<OnCall> {
        if let Some((i, o)) = self.overrides.iter().enumerate().rev().find(|(_, o)| o.start <= at && at < o.end) {
            return Some(OnCall { receiver: o.receiver.clone(), source: format!("overrides[{i}]") });
        }
        self.rotations.iter().enumerate().rev().find_map(|(i, r)| {
            if !r.active_time_intervals.is_empty() && !r.active_time_intervals.iter().any(|n| active(n)) {
                return None;
            }
            let turn = r.turn(self.location, at)?;
            Some(OnCall { receiver: r.receivers[turn % r.receivers.len()].clone(), source: format!("rotations[{i}]") })
        })
    }
}

impl Rotation {
    /// How many handoffs happened from the start to `at` (`None` before the start).
    fn turn(&self, location: Tz, at: DateTime<Utc>) -> Option<usize> {
        let secs = self.length.as_secs().max(1);
        if secs.is_multiple_of(DAY) {
            // Whole days: count local days, handing off at the start's local time of day.
            let local = at.with_timezone(&location).naive_local();
            if local < self.start {
                return None;
            }
            let mut days = (local.date() - self.start.date()).num_days();
            if local.time() < self.start.time() {
                days -= 1;
            }
            Some((days as u64 / (secs / DAY)) as usize)
        } else {
            let elapsed = at.signed_duration_since(instant(location, self.start)).num_seconds();
            (elapsed >= 0).then(|| (elapsed as u64 / secs) as usize)
        }
    }
}

/// A local time in `location` as an instant: a time that a daylight-saving change skips
/// counts from the change; one it repeats is its first occurrence.
fn instant(location: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match location.from_local_datetime(&local).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => {
            let later = local + chrono::Duration::hours(1);
            location.from_local_datetime(&later).earliest().map_or_else(|| local.and_utc(), |t| t.with_timezone(&Utc))
        }
    }
}

/// `2026-11-02T09:00` or `2026-11-02T09:00:00`, a local time (no offset: the schedule's
/// `location` gives it).
fn parse_local(text: &str) -> Result<NaiveDateTime, String> {
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .ok_or_else(|| format!("`{text}` is not a local date and time such as `2026-11-02T09:00` (the schedule's location gives the zone)"))
}

/// The schedules of a tenant's configuration, already validated by `belfry check` / reload
/// (an invalid one is left out).
pub fn schedules(configs: &[ScheduleConfig]) -> Schedules {
    configs.iter().filter_map(|c| Schedule::from_config(c).ok()).map(|s| (s.name.clone(), s)).collect()
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `[[schedules]]`: an on-call schedule, named by escalation steps (`notify_on_call`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Unique within the tenant.
    pub name: String,
    /// IANA time zone of its handoffs and overrides (default UTC).
    #[serde(default)]
    pub location: Option<String>,
    /// Layers of rotations; later ones override earlier ones where they apply.
    #[serde(default)]
    pub rotations: Vec<RotationConfig>,
    /// Someone else on call for a while, over every rotation.
    #[serde(default)]
    pub overrides: Vec<OverrideConfig>,
}

/// One rotation of a schedule.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// Receivers of the tenant, on call in turn.
    pub receivers: Vec<String>,
    /// The first handoff, a local time (`2026-11-02T09:00`).
    pub start: String,
    /// Each turn (`1d`, `7d`, `12h`); at least 1m.
    #[serde(with = "humantime_serde")]
    pub length: Duration,
    /// The rotation applies only while one of these time intervals is active. None: always.
    #[serde(default)]
    pub active_time_intervals: Vec<String>,
}

/// An override of a schedule.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OverrideConfig {
    /// The receiver on call.
    pub receiver: String,
    /// From (local time).
    pub start: String,
    /// Until (local time, exclusive).
    pub end: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const HOUR: u64 = 3600;

    fn rotation(receivers: &[&str], start: &str, length_secs: u64, active: &[&str]) -> RotationConfig {
        RotationConfig {
            receivers: receivers.iter().map(|r| r.to_string()).collect(),
            start: start.into(),
            length: Duration::from_secs(length_secs),
            active_time_intervals: active.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn schedule(location: &str, rotations: Vec<RotationConfig>, overrides: Vec<OverrideConfig>) -> Schedule {
        Schedule::from_config(&ScheduleConfig { name: "primary".into(), location: Some(location.into()), rotations, overrides }).unwrap()
    }

    fn who(s: &Schedule, at: &str) -> Option<String> {
        s.on_call(t(at), &|name| name == "always").map(|o| o.receiver)
    }

    #[test]
    fn a_weekly_rotation_hands_off_at_local_time_across_daylight_saving() {
        // Monday 2026-10-19 09:00 in Paris (UTC+2); the clocks go back on 2026-10-25.
        let s = schedule("Europe/Paris", vec![rotation(&["alice", "bob", "carol"], "2026-10-19T09:00", 7 * DAY, &[])], vec![]);
        assert_eq!(who(&s, "2026-10-19T06:59:00Z"), None, "before the first handoff");
        assert_eq!(who(&s, "2026-10-19T07:00:00Z").as_deref(), Some("alice"));
        assert_eq!(who(&s, "2026-10-26T07:59:00Z").as_deref(), Some("alice"), "08:59 local, UTC+1 now");
        assert_eq!(who(&s, "2026-10-26T08:00:00Z").as_deref(), Some("bob"), "09:00 local after the change");
        assert_eq!(who(&s, "2026-11-02T08:00:00Z").as_deref(), Some("carol"));
        assert_eq!(who(&s, "2026-11-09T08:00:00Z").as_deref(), Some("alice"), "round again");
    }

    #[test]
    fn an_hourly_rotation_counts_real_hours() {
        let s = schedule("UTC", vec![rotation(&["a", "b"], "2026-11-24T00:00", 12 * HOUR, &[])], vec![]);
        assert_eq!(who(&s, "2026-11-24T11:59:59Z").as_deref(), Some("a"));
        assert_eq!(who(&s, "2026-11-24T12:00:00Z").as_deref(), Some("b"));
        assert_eq!(who(&s, "2026-11-25T00:00:00Z").as_deref(), Some("a"));
    }

    #[test]
    fn later_rotations_override_earlier_ones_where_they_apply_and_overrides_win() {
        let s = schedule(
            "UTC",
            vec![rotation(&["night"], "2026-01-01T00:00", DAY, &[]), rotation(&["day"], "2026-01-01T00:00", DAY, &["always"])],
            vec![OverrideConfig { receiver: "dave".into(), start: "2026-11-24T10:00".into(), end: "2026-11-24T12:00".into() }],
        );
        assert_eq!(
            s.on_call(t("2026-11-24T09:00:00Z"), &|_| false).unwrap(),
            OnCall { receiver: "night".into(), source: "rotations[0]".into() }
        );
        assert_eq!(s.on_call(t("2026-11-24T09:00:00Z"), &|n| n == "always").unwrap().receiver, "day", "the later layer applies");
        assert_eq!(
            s.on_call(t("2026-11-24T10:00:00Z"), &|_| false).unwrap(),
            OnCall { receiver: "dave".into(), source: "overrides[0]".into() }
        );
        assert_eq!(who(&s, "2026-11-24T12:00:00Z").as_deref(), Some("day"), "the override ended");
    }

    #[test]
    fn bad_schedules_name_every_problem() {
        let c = ScheduleConfig {
            name: "x".into(),
            location: Some("Mars/Olympus".into()),
            rotations: vec![rotation(&[], "next monday", 30, &[])],
            overrides: vec![OverrideConfig { receiver: "a".into(), start: "2026-11-24T12:00".into(), end: "2026-11-24T10:00".into() }],
        };
        let keys: Vec<String> = Schedule::from_config(&c).unwrap_err().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["location", "rotations[0].receivers", "rotations[0].length", "rotations[0].start", "overrides[0].end"]);
    }
}
