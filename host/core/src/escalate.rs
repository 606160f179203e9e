//! Escalation policies: while a group fires unacknowledged, notify the next receivers, step by step (wait, notify, repeat), until an ack or its resolution stops it.
//!
//! A group whose route names a policy starts escalating at its first notification (level 0:
//! the route's own receiver). Step `n` of the policy fires `wait` after step `n-1` (the first
//! `wait` after that notification): it notifies its receivers at level `n`. After the last
//! step the steps run again, `repeat` more times. An ack, the group's end (every alert
//! resolved) or a re-trigger stops it; a re-trigger starts it over with the new notification.
//!
//! The state of a running escalation is only its policy, when it started and how many levels
//! fired, so when the next level is due is a pure function of the policy: nothing needs a
//! timer per group, and the state is stored (it survives restarts; a level that fell due while
//! Belfry was down fires at start, once).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A tenant's escalation policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Its name.
    pub name: String,
    /// The steps.
    pub steps: Vec<Step>,
    /// Further runs of all the steps after the last.
    pub repeat: u32,
}

/// One step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// After the previous step.
    pub wait: Duration,
    /// Receivers to notify.
    pub notify: Vec<String>,
    /// Schedules whose on-call receiver to notify (docs/ESCALATION.md).
    pub notify_on_call: Vec<String>,
    /// Only while one of these is active (none: always).
    pub active_time_intervals: Vec<String>,
}

/// A tenant's policies by name.
pub type Policies = HashMap<String, Policy>;

/// The policies of a tenant's configuration.
pub fn policies(configs: &[EscalationPolicyConfig]) -> Policies {
    configs
        .iter()
        .map(|c| {
            let steps = c
                .steps
                .iter()
                .map(|s| Step {
                    wait: s.wait,
                    notify: s.notify.clone(),
                    notify_on_call: s.notify_on_call.clone(),
                    active_time_intervals: s.active_time_intervals.clone(),
                })
                .collect();
            (c.name.clone(), Policy { name: c.name.clone(), steps, repeat: c.repeat })
        })
        .collect()
}

/// A running escalation of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// The policy.
    pub policy: String,
    /// The group's notification it follows up.
    pub started_at: DateTime<Utc>,
    /// Levels fired so far (0: none yet).
    pub fired: u32,
}

impl Policy {
    /// Levels in all: steps × (1 + repeat).
    pub fn levels(&self) -> u32 {
        (self.steps.len() as u32).saturating_mul(self.repeat.saturating_add(1))
    }

    /// The step of `level` (1-based).
    pub fn step(&self, level: u32) -> &Step {
        &self.steps[(level as usize - 1) % self.steps.len()]
    }

    /// When `level` (1-based) falls due for an escalation started at `started_at`; `None`
    /// past the last level.
    pub fn due(&self, started_at: DateTime<Utc>, level: u32) -> Option<DateTime<Utc>> {
        if level == 0 || level > self.levels() || self.steps.is_empty() {
            return None;
        }
        let waited: Duration = (1..=level).map(|l| self.step(l).wait).sum();
        Some(started_at + chrono::Duration::from_std(waited).unwrap_or(chrono::Duration::MAX))
    }

    /// The highest level due at `now` that has not fired, if any: levels that all fell due
    /// while nobody looked (a restart) fire once, as the highest of them.
    pub fn level_due(&self, e: &Escalation, now: DateTime<Utc>) -> Option<u32> {
        let mut level = None;
        let mut next = e.fired + 1;
        while let Some(at) = self.due(e.started_at, next) {
            if at > now {
                break;
            }
            level = Some(next);
            next += 1;
        }
        level
    }
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `[[escalation_policies]]`: who is notified next while a group fires unacknowledged.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EscalationPolicyConfig {
    /// Unique within the tenant; routes name it (`escalation`).
    pub name: String,
    /// How many more times the steps run, from the first, after the last one (default 0).
    #[serde(default)]
    pub repeat: u32,
    /// The steps, in order.
    pub steps: Vec<EscalationStepConfig>,
}

/// One step of an escalation policy.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EscalationStepConfig {
    /// How long after the previous step (for the first: after the group's first notification).
    #[serde(with = "humantime_serde")]
    pub wait: Duration,
    /// Receivers of the tenant to notify.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Schedules whose on-call receiver to notify (`[[schedules]]`).
    #[serde(default)]
    pub notify_on_call: Vec<String>,
    /// The step notifies only while one of these time intervals is active (business hours);
    /// outside them it is passed over. None: always.
    #[serde(default)]
    pub active_time_intervals: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        format!("2026-11-24T{s}Z").parse().unwrap()
    }

    fn policy(repeat: u32) -> Policy {
        let step = |wait: u64, who: &str| Step {
            wait: Duration::from_secs(wait),
            notify: vec![who.into()],
            notify_on_call: vec![],
            active_time_intervals: vec![],
        };
        Policy { name: "p".into(), steps: vec![step(300, "oncall"), step(600, "manager")], repeat }
    }

    #[test]
    fn levels_fall_due_step_after_step_and_repeat() {
        let p = policy(1);
        assert_eq!(p.levels(), 4);
        let start = t("10:00:00");
        assert_eq!(p.due(start, 1), Some(t("10:05:00")));
        assert_eq!(p.due(start, 2), Some(t("10:15:00")));
        assert_eq!(p.due(start, 3), Some(t("10:20:00")), "the steps again");
        assert_eq!(p.step(3).notify, ["oncall"]);
        assert_eq!(p.due(start, 4), Some(t("10:30:00")));
        assert_eq!(p.due(start, 5), None, "done");
    }

    #[test]
    fn missed_levels_fire_once_as_the_highest() {
        let p = policy(0);
        let e = Escalation { policy: "p".into(), started_at: t("10:00:00"), fired: 0 };
        assert_eq!(p.level_due(&e, t("10:04:59")), None);
        assert_eq!(p.level_due(&e, t("10:05:00")), Some(1));
        assert_eq!(p.level_due(&e, t("11:00:00")), Some(2), "after a long outage, only the last level");
        let e = Escalation { fired: 2, ..e };
        assert_eq!(p.level_due(&e, t("12:00:00")), None);
    }
}
