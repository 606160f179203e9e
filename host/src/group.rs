//! Aggregation groups with Alertmanager's semantics (group_wait, group_interval, repeat_interval, send_resolved, the notification log), timed by one schedule per tenant instead of a task per group.
//!
//! A group wakes only when something can have changed: its `group_wait` ends, an alert in it
//! changes (at the next `group_interval` boundary), a firing alert's `endsAt` passes, its
//! `repeat_interval` is due, or silences and inhibitions change. An idle group costs no CPU,
//! so 100K groups cost what their memory costs. Everything here is pure state with the time
//! passed in: the caller (dispatch.rs) fetches alerts, decides muting and delivers.

use foldhash::{HashMap, HashSet};
use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ack::Ack;
use crate::alert::{self, Fingerprint, LabelSet, Status};
use crate::escalate::{Escalation, Policies, Step};
use crate::route::{RouteOptions, RouteTo};
use crate::state::AlertRecord;

/// What a group was last notified about: Alertmanager's notification log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyEntry {
    /// Fingerprints notified as firing, sorted.
    pub firing: Vec<u64>,
    /// Fingerprints notified as resolved, sorted.
    pub resolved: Vec<u64>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A group's identity: receiver, grouping labels and their values. Stable across restarts and
/// reloads, so it doubles as the dedup key channels collapse repeats with.
pub type GroupKey = Arc<str>;

/// The groups one alert is in: one unless its routes `continue`, so the first is kept inline
/// (a `Vec` cost an allocation per held alert).
type GroupKeys = smallvec::SmallVec<[GroupKey; 1]>;

/// The key of the group `receiver` forms from `group_by` and `labels`.
pub fn group_key(receiver: &str, group_by: &[String], labels: &LabelSet) -> String {
    format!("{receiver}/{}:{}", group_by.join(","), alert::format_label_set(labels))
}

/// One aggregation group.
#[derive(Debug)]
pub struct Group {
    /// Its key.
    pub key: GroupKey,
    /// Who it notifies.
    pub receiver: String,
    /// Grouping and timing.
    pub options: Arc<RouteOptions>,
    /// Its alerts (their `group_by` labels are the group's labels, so those are not kept here:
    /// with one group per alert they would double the memory of each alert's labels).
    pub alerts: BTreeSet<Fingerprint>,
    created: DateTime<Utc>,
    /// The last flush (a notification or a decision not to send one).
    flushed_at: Option<DateTime<Utc>>,
    due: Option<DateTime<Utc>>,
}

/// An alert of a group at flush time, and whether silences or inhibitions mute it.
#[derive(Debug, Clone)]
pub struct FlushAlert {
    /// The alert.
    pub record: AlertRecord,
    /// Silenced or inhibited.
    pub muted: bool,
}

/// A notification to send: a group's alerts, decided by the notification log.
#[derive(Debug, Clone)]
pub struct Flush {
    /// The group.
    pub key: GroupKey,
    /// Who gets it.
    pub receiver: String,
    /// The route's options (escalation, for one).
    pub options: Arc<RouteOptions>,
    /// The group labels.
    pub labels: LabelSet,
    /// The alerts to send: firing and (with `send_resolved`) resolved; firing first, then
    /// by `startsAt`. Empty when only the log changes (all resolved, and the
    /// receiver does not want resolves).
    pub alerts: Vec<AlertRecord>,
    /// The new log entry, to persist with the notification.
    pub entry: NotifyEntry,
}

/// What a flush decided.
#[derive(Debug)]
pub enum FlushOutcome {
    /// The group has no alerts left and is gone; its log entry should be deleted.
    Gone,
    /// A time interval mutes the route now; the changes wait.
    Held,
    /// The receiver already knows everything (or the changes are all muted).
    Unchanged,
    /// Send this.
    Notify(Flush),
}

/// One tenant's groups and their schedule.
#[derive(Debug, Default)]
pub struct Groups {
    groups: HashMap<GroupKey, Group>,
    /// Which groups each alert is in.
    members: HashMap<Fingerprint, GroupKeys>,
    /// `(when, group)`, earliest first.
    schedule: BTreeSet<(DateTime<Utc>, GroupKey)>,
    /// The notification log, by group key; it outlives groups across restarts and reloads.
    log: HashMap<GroupKey, NotifyEntry>,
    /// Acknowledged groups; like the log, they outlive restarts and reloads.
    acks: HashMap<GroupKey, Ack>,
    /// Acks set (`Some`) or cleared (`None`) since the caller last took them, to persist.
    ack_changes: Vec<(GroupKey, Option<Ack>)>,
    /// The tenant's escalation policies.
    policies: Arc<Policies>,
    /// Running escalations, by group.
    escalations: HashMap<GroupKey, Escalation>,
    /// `(when, group)`: the next level of each running escalation, earliest first. Entries of
    /// escalations since stopped or restarted are skipped when they come up.
    escalation_schedule: BTreeSet<(DateTime<Utc>, GroupKey)>,
    /// Escalations started, advanced (`Some`) or stopped (`None`), to persist.
    escalation_changes: Vec<(GroupKey, Option<Escalation>)>,
}

/// A level of a group's escalation that is due: notify `step.notify` at `level`.
#[derive(Debug, Clone)]
pub struct DueEscalation {
    /// The group.
    pub key: GroupKey,
    /// Its policy's name.
    pub policy: String,
    /// 1 for the first step, and on through repeats.
    pub level: u32,
    /// The step: its receivers and time intervals.
    pub step: Step,
}

/// What groups remember across restarts and reloads: the notification log and the acks.
#[derive(Debug, Default)]
pub struct History {
    /// The notification log.
    pub log: HashMap<GroupKey, NotifyEntry>,
    /// The acks.
    pub acks: HashMap<GroupKey, Ack>,
    /// The running escalations.
    pub escalations: HashMap<GroupKey, Escalation>,
}

impl History {
    /// From stored `(group key, entry)` and `(group key, ack)` pairs.
    pub fn from_stored(
        log: impl IntoIterator<Item = (String, NotifyEntry)>,
        acks: impl IntoIterator<Item = (String, Ack)>,
        escalations: impl IntoIterator<Item = (String, Escalation)>,
    ) -> History {
        History {
            log: log.into_iter().map(|(k, e)| (Arc::from(k), e)).collect(),
            acks: acks.into_iter().map(|(k, a)| (Arc::from(k), a)).collect(),
            escalations: escalations.into_iter().map(|(k, e)| (Arc::from(k), e)).collect(),
        }
    }
}

impl Groups {
    /// No groups, what `history` remembers.
    pub fn with_history(history: History) -> Groups {
        let mut groups = Groups::default();
        groups.set_history(history);
        groups
    }

    /// Take a copy of `other`'s notification log: what groups built anew need to keep the
    /// cadence of their last notification ([`Groups::insert`]).
    pub fn copy_log_from(&mut self, other: &Groups) {
        self.log = other.log.clone();
    }

    /// Take the log, the acks and the escalations (to carry them into rebuilt groups).
    pub fn take_history(&mut self) -> History {
        self.escalation_schedule.clear();
        History {
            log: std::mem::take(&mut self.log),
            acks: std::mem::take(&mut self.acks),
            escalations: std::mem::take(&mut self.escalations),
        }
    }

    /// Replace the log, the acks and the escalations.
    pub fn set_history(&mut self, history: History) {
        self.log = history.log;
        self.acks = history.acks;
        self.escalations = history.escalations;
        self.reschedule_escalations();
    }

    /// The tenant's escalation policies (at start and on reload): running escalations follow
    /// the new definitions; one whose policy is gone stops.
    pub fn set_policies(&mut self, policies: Arc<Policies>) {
        self.policies = policies;
        let gone: Vec<GroupKey> =
            self.escalations.iter().filter(|(_, e)| !self.policies.contains_key(&e.policy)).map(|(k, _)| k.clone()).collect();
        for key in gone {
            self.stop_escalation(&key);
        }
        self.reschedule_escalations();
    }

    /// The tenant's escalation policies.
    pub fn policies(&self) -> Arc<Policies> {
        self.policies.clone()
    }

    fn reschedule_escalations(&mut self) {
        self.escalation_schedule.clear();
        for (key, e) in &self.escalations {
            // An unknown policy waits for `set_policies`, which stops it if it is really gone.
            if let Some(at) = self.policies.get(&e.policy).and_then(|p| p.due(e.started_at, e.fired + 1)) {
                self.escalation_schedule.insert((at, key.clone()));
            }
        }
    }

    /// Start (or start over) the escalation of `key` under `policy`, following up a
    /// notification sent at `now`.
    fn start_escalation(&mut self, key: &GroupKey, policy: &str, now: DateTime<Utc>) {
        let Some(p) = self.policies.get(policy) else { return };
        let e = Escalation { policy: policy.to_string(), started_at: now, fired: 0 };
        if let Some(at) = p.due(now, 1) {
            self.escalation_schedule.insert((at, key.clone()));
        }
        self.escalations.insert(key.clone(), e.clone());
        self.escalation_changes.push((key.clone(), Some(e)));
    }

    fn stop_escalation(&mut self, key: &str) {
        if let Some((key, _)) = self.escalations.remove_entry(key) {
            self.escalation_changes.push((key, None));
        }
    }

    /// The running escalation of a group.
    pub fn escalation_of(&self, key: &str) -> Option<&Escalation> {
        self.escalations.get(key)
    }

    /// Escalations started, advanced or stopped since the last call, to persist.
    pub fn take_escalation_changes(&mut self) -> Vec<(GroupKey, Option<Escalation>)> {
        std::mem::take(&mut self.escalation_changes)
    }

    /// Escalation levels due at `now`, taken off the schedule and recorded as fired.
    pub fn take_due_escalations(&mut self, now: DateTime<Utc>) -> Vec<DueEscalation> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.escalation_schedule.first() {
            if *at > now {
                break;
            }
            let (_, key) = self.escalation_schedule.pop_first().expect("checked");
            let Some(e) = self.escalations.get(&key) else { continue };
            let Some(policy) = self.policies.get(&e.policy) else { continue };
            // A stale entry (the escalation stopped or started over since) finds nothing due.
            let Some(level) = policy.level_due(e, now) else { continue };
            if !self.groups.contains_key(&key) || self.acks.contains_key(&key) {
                self.stop_escalation(&key);
                continue;
            }
            let step = policy.step(level).clone();
            let next = policy.due(e.started_at, level + 1);
            let name = e.policy.clone();
            let e = self.escalations.get_mut(&key).expect("checked");
            e.fired = level;
            let e = e.clone();
            match next {
                Some(at) => {
                    self.escalation_schedule.insert((at, key.clone()));
                    self.escalation_changes.push((key.clone(), Some(e)));
                }
                // The last level: nothing more to follow up.
                None => self.stop_escalation(&key),
            }
            due.push(DueEscalation { key, policy: name, level, step });
        }
        due
    }

    /// Log entries and acks of keys no group has (after a rebuild): they can be deleted.
    pub fn orphaned_log_keys(&self) -> Vec<GroupKey> {
        let mut keys: Vec<GroupKey> = self.log.keys().chain(self.acks.keys()).filter(|k| !self.groups.contains_key(*k)).cloned().collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Drop the log entry and the ack of `key`.
    pub fn forget_log(&mut self, key: &str) {
        self.log.remove(key);
        self.acks.remove(key);
    }

    /// Acknowledge the group `key` as it is now: its repeats stop until an alert the ack does
    /// not cover fires, or the group ends. `None` if there is no such group.
    pub fn ack(&mut self, key: &str, by: &str, comment: &str, now: DateTime<Utc>) -> Option<Ack> {
        let group = self.groups.get(key)?;
        let ack = Ack { by: by.to_string(), comment: comment.to_string(), at: now, covers: group.alerts.iter().map(|fp| fp.0).collect() };
        let key = group.key.clone();
        self.acks.insert(key.clone(), ack.clone());
        self.ack_changes.push((key.clone(), Some(ack.clone())));
        self.stop_escalation(&key);
        Some(ack)
    }

    /// Withdraw the ack of `key`: the group repeats again. Whether there was one.
    pub fn unack(&mut self, key: &str, now: DateTime<Utc>) -> bool {
        let Some((key, _)) = self.acks.remove_entry(key) else { return false };
        self.ack_changes.push((key.clone(), None));
        if let Some(group) = self.groups.get_mut(&key) {
            // The repeat it held back may be due already.
            let at = next_flush(group, now);
            Self::schedule_at(&mut self.schedule, group, at);
            // Nobody is on it any more: escalate again, from the first step.
            if let Some(policy) = group.options.escalation.clone() {
                self.start_escalation(&key, &policy, now);
            }
        }
        true
    }

    /// The ack of a group.
    pub fn ack_of(&self, key: &str) -> Option<&Ack> {
        self.acks.get(key)
    }

    /// Every ack, by group key.
    pub fn acks(&self) -> impl Iterator<Item = (&GroupKey, &Ack)> {
        self.acks.iter()
    }

    /// Acks set or cleared since the last call, to persist.
    pub fn take_ack_changes(&mut self) -> Vec<(GroupKey, Option<Ack>)> {
        std::mem::take(&mut self.ack_changes)
    }

    fn clear_ack(&mut self, key: &str) {
        if let Some((key, _)) = self.acks.remove_entry(key) {
            self.ack_changes.push((key, None));
        }
    }

    /// How many groups there are.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Every group.
    pub fn iter(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// A group by key.
    pub fn get(&self, key: &str) -> Option<&Group> {
        self.groups.get(key)
    }

    /// Whether the alert is in some group (it was routed and is not yet done with).
    pub fn is_member(&self, fp: Fingerprint) -> bool {
        self.members.contains_key(&fp)
    }

    /// The groups the alert is in.
    pub fn groups_of(&self, fp: Fingerprint) -> impl Iterator<Item = &Group> {
        self.members.get(&fp).into_iter().flatten().filter_map(|k| self.groups.get(k))
    }

    /// The last notification of a group.
    pub fn last_notified(&self, key: &str) -> Option<&NotifyEntry> {
        self.log.get(key)
    }

    /// The earliest scheduled flush.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        let flush = self.schedule.first().map(|(at, _)| *at);
        let escalation = self.escalation_schedule.first().map(|(at, _)| *at);
        flush.into_iter().chain(escalation).min()
    }

    /// Whether a group is due at `now` (escalations aside).
    pub fn any_due(&self, now: DateTime<Utc>) -> bool {
        self.schedule.first().is_some_and(|(at, _)| *at <= now)
    }

    /// Put a routed alert into the groups of its routes; a new group flushes after
    /// `group_wait` (at once if the alert started more than `group_wait` ago, as Alertmanager
    /// does), an existing one at its next `group_interval` boundary.
    ///
    /// A group rebuilt after a restart (or a reload that regroups) is not new: its notification
    /// log entry says when it last notified, and it keeps that cadence, so a restart neither
    /// notifies early nor sends every changed group at once (Alertmanager starts each group
    /// over, and notifies after `group_wait`).
    pub fn insert(&mut self, fp: Fingerprint, labels: &LabelSet, starts_at: DateTime<Utc>, routes: &[RouteTo], now: DateTime<Utc>) {
        for route in routes {
            let group_labels = route.options.group_by.group_labels(labels);
            let key: GroupKey = Arc::from(group_key(&route.receiver, &route.options.group_by.names(), &group_labels));
            let log = &self.log;
            let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
                key: key.clone(),
                receiver: route.receiver.clone(),
                options: route.options.clone(),
                alerts: BTreeSet::new(),
                created: now,
                flushed_at: log.get(&key).map(|entry| entry.at),
                due: None,
            });
            if !group.alerts.insert(fp) {
                continue;
            }
            let keys = self.members.entry(fp).or_default();
            if !keys.contains(&key) {
                keys.push(key.clone());
            }
            let waited_already = group.flushed_at.is_none() && starts_at + span(group.options.group_wait) <= now;
            let at = if waited_already { now } else { next_flush(group, now) };
            Self::schedule_at(&mut self.schedule, group, at);
        }
    }

    /// Move `fp` into the groups of `routes`, a new script's decision: out of the groups it no
    /// longer belongs to (a group left empty ends, and its log entry and ack are forgotten),
    /// into the new ones (as [`Groups::insert`]), and the groups it stays in take the new
    /// options. Returns the keys of the groups that ended, whose stored log and ack can go.
    pub fn reassign(
        &mut self,
        fp: Fingerprint,
        labels: &LabelSet,
        starts_at: DateTime<Utc>,
        routes: &[RouteTo],
        now: DateTime<Utc>,
    ) -> Vec<GroupKey> {
        let target: Vec<(String, &RouteTo)> = routes
            .iter()
            .map(|r| (group_key(&r.receiver, &r.options.group_by.names(), &r.options.group_by.group_labels(labels)), r))
            .collect();
        let current = self.members.get(&fp).cloned().unwrap_or_default();
        let mut ended = Vec::new();
        for key in current.iter().filter(|k| !target.iter().any(|(t, _)| t.as_str() == &***k)) {
            let Some(group) = self.groups.get_mut(key) else { continue };
            group.alerts.remove(&fp);
            unlink(&mut self.members, fp, key);
            if group.alerts.is_empty() {
                self.remove(key);
                ended.push(key.clone());
            }
        }
        for (key, route) in &target {
            if let Some(group) = self.groups.get_mut(key.as_str())
                && group.alerts.contains(&fp)
                && group.options != route.options
            {
                group.options = route.options.clone();
            }
        }
        self.insert(fp, labels, starts_at, routes, now);
        ended
    }

    /// The notification decided for `key` at `decided_at` was refused by every receiver: forget
    /// that decision (unless a later one replaced it), so the group's next flush, a
    /// `group_interval` on, notifies again, as Alertmanager does after a failed notify.
    /// Whether the log entry was forgotten.
    pub fn forget_refused(&mut self, key: &str, decided_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        if self.log.get(key).is_none_or(|e| e.at != decided_at) {
            return false;
        }
        self.log.remove(key);
        if let Some(group) = self.groups.get_mut(key) {
            let at = next_flush(group, now);
            Self::schedule_at(&mut self.schedule, group, at);
        }
        true
    }

    /// An alert in some groups changed status: those groups flush at their next boundary.
    pub fn changed(&mut self, fp: Fingerprint, now: DateTime<Utc>) {
        let Some(keys) = self.members.get(&fp) else { return };
        for key in keys {
            if let Some(group) = self.groups.get_mut(key) {
                let at = next_flush(group, now);
                Self::schedule_at(&mut self.schedule, group, at);
            }
        }
    }

    /// Silences or inhibitions changed: every group re-evaluates at its next boundary.
    pub fn touch_all(&mut self, now: DateTime<Utc>) {
        // Groups not flushed yet are due at the end of their group_wait anyway.
        for group in self.groups.values_mut().filter(|g| g.flushed_at.is_some()) {
            let at = next_flush(group, now);
            Self::schedule_at(&mut self.schedule, group, at);
        }
    }

    /// Groups due at `now`, at most `limit` of them (the earliest first), taken off the schedule.
    pub fn take_due(&mut self, now: DateTime<Utc>, limit: usize) -> Vec<GroupKey> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.schedule.first() {
            if *at > now || due.len() == limit {
                break;
            }
            let (_, key) = self.schedule.pop_first().expect("checked");
            if let Some(group) = self.groups.get_mut(&key) {
                group.due = None;
            }
            due.push(key);
        }
        due
    }

    /// Alertmanager's flush of one group: decide from the notification log whether to notify,
    /// record the new entry, drop resolved alerts, and schedule the next wake-up. `alerts`
    /// are the group's alerts as currently held (collected ones are simply absent).
    pub fn flush(&mut self, key: &str, now: DateTime<Utc>, alerts: Vec<FlushAlert>, time_muted: bool, send_resolved: bool) -> FlushOutcome {
        let Some(group) = self.groups.get_mut(key) else { return FlushOutcome::Unchanged };
        let held: HashSet<Fingerprint> = alerts.iter().map(|a| a.record.fingerprint()).collect();
        let gone: Vec<Fingerprint> = group.alerts.iter().filter(|fp| !held.contains(fp)).copied().collect();
        for fp in gone {
            group.alerts.remove(&fp);
            unlink(&mut self.members, fp, key);
        }
        if group.alerts.is_empty() {
            return self.remove(key);
        }
        let interval = span(group.options.group_interval);
        if time_muted {
            group.flushed_at = Some(now);
            Self::schedule_at(&mut self.schedule, group, now + interval);
            return FlushOutcome::Held;
        }
        let mut firing = Vec::new();
        let mut resolved = Vec::new();
        for a in alerts.iter().filter(|a| !a.muted) {
            match a.record.status_at(now) {
                Status::Firing => firing.push(a.record.fingerprint().0),
                Status::Resolved => resolved.push(a.record.fingerprint().0),
            }
        }
        firing.sort_unstable();
        resolved.sort_unstable();
        // An alert the ack did not cover fires: the group is re-triggered (PagerDuty's rule).
        if let Some(ack) = self.acks.get(key)
            && !firing.iter().all(|fp| ack.covers.binary_search(fp).is_ok())
        {
            self.clear_ack(key);
        }
        let acked = self.acks.contains_key(key);
        let group = self.groups.get_mut(key).expect("checked above");
        let repeat = span(group.options.repeat_interval);
        let notify = needs_update(self.log.get(key), &firing, &resolved, repeat, send_resolved, acked, now);
        let mut escalate = None;
        let outcome = if notify {
            let mut to_send: Vec<AlertRecord> = alerts
                .iter()
                .filter(|a| !a.muted && (send_resolved || a.record.status_at(now) == Status::Firing))
                .map(|a| a.record.clone())
                .collect();
            sort_for_notification(&mut to_send, now);
            escalate =
                (!firing.is_empty() && !acked && !self.escalations.contains_key(key)).then(|| group.options.escalation.clone()).flatten();
            let entry = NotifyEntry { firing, resolved, at: now };
            self.log.insert(group.key.clone(), entry.clone());
            FlushOutcome::Notify(Flush {
                key: group.key.clone(),
                receiver: group.receiver.clone(),
                options: group.options.clone(),
                labels: group.options.group_by.group_labels(&alerts[0].record.labels),
                alerts: to_send,
                entry,
            })
        } else {
            FlushOutcome::Unchanged
        };
        // Resolved alerts leave the group once flushed (Alertmanager's DeleteIfNotModified).
        let done: Vec<Fingerprint> =
            alerts.iter().filter(|a| a.record.status_at(now) == Status::Resolved).map(|a| a.record.fingerprint()).collect();
        for fp in done {
            group.alerts.remove(&fp);
            unlink(&mut self.members, fp, key);
        }
        if group.alerts.is_empty() {
            // Everything resolved: the group ends (its resolve, if any, is in `outcome`).
            self.groups.remove(key);
            self.clear_ack(key);
            self.stop_escalation(key);
            if !notify {
                self.log.remove(key);
            }
            return outcome;
        }
        group.flushed_at = Some(now);
        // Wake for the repeat (none while acked), or when a firing alert's endsAt passes,
        // whichever is first, and never sooner than group_interval.
        let mut next = self.log.get(key).filter(|e| !e.firing.is_empty() && !acked).map(|e| e.at + repeat);
        for a in &alerts {
            if a.record.status_at(now) == Status::Firing {
                next = Some(next.map_or(a.record.ends_at, |n| n.min(a.record.ends_at)));
            }
        }
        if let Some(next) = next {
            Self::schedule_at(&mut self.schedule, group, next.max(now + interval));
        }
        if let FlushOutcome::Notify(f) = &outcome {
            if f.entry.firing.is_empty() {
                // Everything it followed up resolved.
                self.stop_escalation(key);
            } else if let Some(policy) = escalate {
                self.start_escalation(&f.key, &policy, now);
            }
        }
        outcome
    }

    fn remove(&mut self, key: &str) -> FlushOutcome {
        if let Some(group) = self.groups.remove(key) {
            if let Some(at) = group.due {
                self.schedule.remove(&(at, group.key.clone()));
            }
            for fp in &group.alerts {
                unlink(&mut self.members, *fp, key);
            }
        }
        self.log.remove(key);
        self.clear_ack(key);
        self.stop_escalation(key);
        FlushOutcome::Gone
    }

    /// Schedule `group` at `at`, unless it is already due sooner.
    fn schedule_at(schedule: &mut BTreeSet<(DateTime<Utc>, GroupKey)>, group: &mut Group, at: DateTime<Utc>) {
        match group.due {
            Some(due) if due <= at => {}
            Some(due) => {
                schedule.remove(&(due, group.key.clone()));
                schedule.insert((at, group.key.clone()));
                group.due = Some(at);
            }
            None => {
                schedule.insert((at, group.key.clone()));
                group.due = Some(at);
            }
        }
    }
}

/// When a group that changed may flush: at the end of its `group_wait` if it never flushed,
/// else a `group_interval` after its last flush (and not before `now`).
fn next_flush(group: &Group, now: DateTime<Utc>) -> DateTime<Utc> {
    match group.flushed_at {
        None => group.created + span(group.options.group_wait),
        Some(t) => (t + span(group.options.group_interval)).max(now),
    }
}

/// A configured duration on the wall clock; durations beyond chrono's range mean "never".
fn span(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn unlink(members: &mut HashMap<Fingerprint, GroupKeys>, fp: Fingerprint, key: &str) {
    if let Some(keys) = members.get_mut(&fp) {
        keys.retain(|k| &**k != key);
        if keys.is_empty() {
            members.remove(&fp);
        }
    }
}

/// Alertmanager's `DedupStage.needsUpdate`.
fn needs_update(
    entry: Option<&NotifyEntry>,
    firing: &[u64],
    resolved: &[u64],
    repeat: chrono::Duration,
    send_resolved: bool,
    acked: bool,
    now: DateTime<Utc>,
) -> bool {
    let Some(entry) = entry else {
        // Not in the log: notify unless there are only resolved alerts, or an ack covers the
        // firing ones (someone is on it: acked through the API before any notification, or
        // the log entry was lost in a crash after the notification it records).
        return !firing.is_empty() && !acked;
    };
    let subset = |of: &[u64], set: &[u64]| set.iter().all(|x| of.binary_search(x).is_ok());
    if !subset(&entry.firing, firing) {
        return true;
    }
    if firing.is_empty() {
        // All resolved: tell the receiver, if it was told they fired. (Regardless of
        // send_resolved, so that the log is cleared of the firing alerts.)
        return !entry.firing.is_empty();
    }
    if send_resolved && !subset(&entry.resolved, resolved) {
        return true;
    }
    // An acknowledged group is not repeated: someone is on it.
    !acked && entry.at + repeat <= now
}

/// Firing first, then by `startsAt`, then by labels: the order `wit/receiver.wit` promises.
fn sort_for_notification(alerts: &mut [AlertRecord], now: DateTime<Utc>) {
    alerts.sort_by(|a, b| {
        let key = |r: &AlertRecord| (r.status_at(now) == Status::Resolved, r.starts_at);
        key(a).cmp(&key(b)).then_with(|| a.labels.cmp(&b.labels))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::GroupBy;
    use std::time::Duration;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-11-23T{s}Z")).unwrap().with_timezone(&Utc)
    }

    fn route(group_by: &[&str], wait: u64, interval: u64, repeat: u64) -> RouteTo {
        RouteTo {
            receiver: "pager".into(),
            options: Arc::new(RouteOptions {
                group_by: GroupBy::from_names(group_by.iter().map(|s| s.to_string()).collect()).unwrap(),
                group_wait: Duration::from_secs(wait),
                group_interval: Duration::from_secs(interval),
                repeat_interval: Duration::from_secs(repeat),
                ..RouteOptions::default()
            }),
        }
    }

    fn record(name: &str, instance: &str, starts: &str, ends: &str) -> AlertRecord {
        AlertRecord {
            labels: [("alertname", name), ("instance", instance)].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            annotations: LabelSet::new(),
            starts_at: t(starts),
            ends_at: t(ends),
            generator_url: String::new(),
            updated_at: t(starts),
            timeout: false,
        }
    }

    /// A tiny harness: a group set, the alerts as the state holds them, and a clock.
    struct Bench {
        groups: Groups,
        alerts: Vec<AlertRecord>,
        route: RouteTo,
        send_resolved: bool,
    }

    impl Bench {
        fn new(route: RouteTo) -> Bench {
            Bench { groups: Groups::default(), alerts: Vec::new(), route, send_resolved: true }
        }

        fn post(&mut self, r: AlertRecord, now: DateTime<Utc>) {
            let fp = r.fingerprint();
            self.alerts.retain(|a| a.fingerprint() != fp);
            self.alerts.push(r.clone());
            if self.groups.is_member(fp) {
                self.groups.changed(fp, now);
            } else {
                self.groups.insert(fp, &r.labels, r.starts_at, std::slice::from_ref(&self.route), now);
            }
        }

        /// Flush whatever is due at `now`; the names of the alerts notified, by group.
        fn tick(&mut self, now: DateTime<Utc>) -> Vec<Vec<String>> {
            let mut sent = Vec::new();
            for key in self.groups.take_due(now, usize::MAX) {
                let members: Vec<Fingerprint> = self.groups.get(&key).map(|g| g.alerts.iter().copied().collect()).unwrap_or_default();
                let alerts = self
                    .alerts
                    .iter()
                    .filter(|a| members.contains(&a.fingerprint()))
                    .map(|a| FlushAlert { record: a.clone(), muted: a.labels.contains_key("muted") })
                    .collect();
                if let FlushOutcome::Notify(f) = self.groups.flush(&key, now, alerts, false, self.send_resolved) {
                    sent.push(
                        f.alerts
                            .iter()
                            .map(|a| format!("{}{}", a.labels["instance"], if a.status_at(now) == Status::Resolved { "-" } else { "+" }))
                            .collect(),
                    );
                }
            }
            sent
        }
    }

    #[test]
    fn group_wait_batches_then_group_interval_paces_changes() {
        let mut b = Bench::new(route(&["alertname"], 30, 300, 3600 * 4));
        b.post(record("Down", "a", "10:00:00", "11:00:00"), t("10:00:00"));
        b.post(record("Down", "b", "10:00:10", "11:00:00"), t("10:00:10"));
        assert!(b.tick(t("10:00:29")).is_empty(), "group_wait not over");
        assert_eq!(b.tick(t("10:00:30")), [["a+", "b+"]], "one notification for both");
        b.post(record("Down", "c", "10:01:00", "11:00:00"), t("10:01:00"));
        assert!(b.tick(t("10:04:59")).is_empty(), "group_interval not over");
        assert_eq!(b.tick(t("10:05:30")), [["a+", "b+", "c+"]]);
        assert_eq!(b.groups.next_due(), Some(t("11:00:00")), "nothing changes until the first endsAt (before the repeat)");
    }

    #[test]
    fn groups_split_by_group_labels() {
        let mut b = Bench::new(route(&["alertname"], 0, 60, 3600));
        b.post(record("Down", "a", "10:00:00", "11:00:00"), t("10:00:00"));
        b.post(record("Slow", "a", "10:00:00", "11:00:00"), t("10:00:00"));
        assert_eq!(b.tick(t("10:00:00")).len(), 2);
        assert_eq!(b.groups.len(), 2);
    }

    #[test]
    fn an_unchanged_group_is_repeated_after_repeat_interval_only() {
        let mut b = Bench::new(route(&[], 0, 60, 600));
        b.post(record("Down", "a", "10:00:00", "12:00:00"), t("10:00:00"));
        assert_eq!(b.tick(t("10:00:00")).len(), 1);
        // Prometheus re-sends every 30 s: nothing changes, nothing is sent.
        for s in ["10:00:30", "10:01:00", "10:05:00"] {
            b.post(record("Down", "a", "10:00:00", "12:00:00"), t(s));
            assert!(b.tick(t(s)).is_empty(), "{s}");
        }
        assert_eq!(b.groups.next_due(), Some(t("10:10:00")), "idle until the repeat: no polling");
        assert_eq!(b.tick(t("10:10:00")), [["a+"]], "repeated");
    }

    #[test]
    fn resolves_are_sent_when_the_end_passes_and_the_group_ends() {
        let mut b = Bench::new(route(&[], 0, 60, 3600));
        b.post(record("Down", "a", "10:00:00", "10:30:00"), t("10:00:00"));
        b.post(record("Down", "b", "10:00:00", "12:00:00"), t("10:00:00"));
        assert_eq!(b.tick(t("10:00:00")), [["a+", "b+"]]);
        assert_eq!(b.groups.next_due(), Some(t("10:30:00")), "woken by a's endsAt, without any request");
        assert_eq!(b.tick(t("10:30:00")), [["b+", "a-"]], "firing first");
        assert_eq!(b.groups.get_by_alert_count(), 1, "a left the group once its resolve was flushed");
        b.post(record("Down", "b", "10:00:00", "10:31:00"), t("10:31:00"));
        assert_eq!(b.tick(t("10:31:00")), [["b-"]]);
        assert!(b.groups.is_empty(), "all resolved: the group is gone");
    }

    #[test]
    fn without_send_resolved_the_last_resolve_still_clears_the_log_but_sends_no_alert() {
        let mut b = Bench::new(route(&[], 0, 60, 3600));
        b.send_resolved = false;
        b.post(record("Down", "a", "10:00:00", "10:30:00"), t("10:00:00"));
        b.post(record("Down", "b", "10:00:00", "12:00:00"), t("10:00:00"));
        b.tick(t("10:00:00"));
        assert!(b.tick(t("10:30:00")).is_empty(), "a resolved: nothing to send without send_resolved");
        b.post(record("Down", "b", "10:00:00", "10:40:00"), t("10:40:00"));
        assert_eq!(b.tick(t("10:40:00")), [Vec::<String>::new()], "the log is updated with an empty notification");
    }

    #[test]
    fn a_group_that_only_ever_saw_resolved_alerts_sends_nothing() {
        let mut b = Bench::new(route(&[], 0, 60, 3600));
        b.post(record("Down", "a", "09:00:00", "09:30:00"), t("10:00:00"));
        assert!(b.tick(t("10:00:00")).is_empty());
        assert!(b.groups.is_empty());
    }

    #[test]
    fn muted_alerts_are_left_out_and_do_not_trigger() {
        let mut b = Bench::new(route(&[], 0, 60, 3600));
        let mut muted = record("Down", "m", "10:00:00", "12:00:00");
        muted.labels.insert("muted".into(), "yes".into());
        b.post(muted, t("10:00:00"));
        assert!(b.tick(t("10:00:00")).is_empty(), "everything muted: nothing sent");
        b.post(record("Down", "a", "10:01:00", "12:00:00"), t("10:01:00"));
        assert_eq!(b.tick(t("10:01:00")), [["a+"]], "only the unmuted alert");
    }

    #[test]
    fn an_old_alert_in_a_new_group_skips_group_wait() {
        let mut b = Bench::new(route(&[], 30, 60, 3600));
        b.post(record("Down", "a", "09:00:00", "12:00:00"), t("10:00:00"));
        assert_eq!(b.tick(t("10:00:00")).len(), 1);
    }

    #[test]
    fn a_restored_log_prevents_repeats_after_a_restart() {
        let mut b = Bench::new(route(&[], 0, 60, 3600));
        b.post(record("Down", "a", "10:00:00", "12:00:00"), t("10:00:00"));
        b.tick(t("10:00:00"));
        let log: Vec<(String, NotifyEntry)> = b.groups.take_history().log.into_iter().map(|(k, e)| (k.to_string(), e)).collect();
        let mut restarted = Bench::new(b.route.clone());
        restarted.groups = Groups::with_history(History::from_stored(log, [], []));
        restarted.post(record("Down", "a", "10:00:00", "12:00:00"), t("10:05:00"));
        assert!(restarted.tick(t("10:05:00")).is_empty(), "already notified before the restart");
        restarted.post(record("Down", "b", "10:05:00", "12:00:00"), t("10:06:00"));
        assert_eq!(restarted.tick(t("10:06:00")), [["a+", "b+"]]);
    }

    #[test]
    fn a_group_rebuilt_after_a_restart_keeps_its_group_interval() {
        let mut b = Bench::new(route(&[], 0, 300, 3600));
        b.post(record("Down", "a", "10:00:00", "12:00:00"), t("10:00:00"));
        assert_eq!(b.tick(t("10:00:00")), [["a+"]]);
        let mut restarted = Bench::new(b.route.clone());
        restarted.groups = Groups::with_history(b.groups.take_history());
        // Restored, and a new alert joins, a minute after the last notification.
        restarted.post(record("Down", "a", "10:00:00", "12:00:00"), t("10:01:00"));
        restarted.post(record("Down", "b", "10:01:00", "12:00:00"), t("10:01:00"));
        assert!(restarted.tick(t("10:01:00")).is_empty(), "not a new group: group_wait does not apply");
        assert!(restarted.tick(t("10:04:59")).is_empty());
        assert_eq!(restarted.tick(t("10:05:00")), [["a+", "b+"]], "at the group_interval boundary, as without the restart");
        // A group the log does not know is new: group_wait (0 s here) applies.
        let mut fresh = Bench::new(b.route.clone());
        fresh.post(record("Down", "b", "10:01:00", "12:00:00"), t("10:01:00"));
        assert_eq!(fresh.tick(t("10:01:00")), [["b+"]]);
    }

    #[test]
    fn an_ack_stops_repeats_until_a_new_alert_fires_and_ends_with_the_group() {
        let mut b = Bench::new(route(&[], 0, 60, 3600));
        b.post(record("Down", "a", "10:00:00", "14:00:00"), t("10:00:00"));
        assert_eq!(b.tick(t("10:00:00")), [["a+"]]);
        let key = b.groups.iter().next().unwrap().key.clone();
        assert!(b.groups.ack(&key, "alice", "on it", t("10:10:00")).is_some());
        assert!(b.groups.ack("no such group", "alice", "", t("10:10:00")).is_none());
        assert_eq!(b.groups.take_ack_changes().len(), 1, "to persist");
        assert!(b.tick(t("11:00:00")).is_empty(), "the hourly repeat is held back");
        assert!(b.tick(t("13:00:00")).is_empty());
        assert_eq!(b.groups.next_due(), Some(t("14:00:00")), "only the end is scheduled, no repeat");
        // A new alert in the group re-triggers it: notified, and the ack is gone.
        b.post(record("Down", "b", "13:30:00", "15:00:00"), t("13:30:00"));
        assert_eq!(b.tick(t("13:30:00")), [["a+", "b+"]]);
        assert!(b.groups.ack_of(&key).is_none());
        assert_eq!(b.groups.take_ack_changes(), [(key.clone(), None)]);
        // Acked again, then resolved: the resolve goes out and the ack ends with the group.
        b.groups.ack(&key, "bob", "", t("13:40:00"));
        b.post(record("Down", "a", "10:00:00", "13:45:00"), t("13:45:00"));
        b.post(record("Down", "b", "13:30:00", "13:45:00"), t("13:45:00"));
        assert_eq!(b.tick(t("13:45:00")), [["a-", "b-"]]);
        assert!(b.groups.is_empty() && b.groups.ack_of(&key).is_none());
    }

    #[test]
    fn an_acked_group_missing_from_the_log_is_not_notified_again() {
        let mut b = Bench::new(route(&[], 0, 60, 3600));
        b.post(record("Down", "a", "10:00:00", "14:00:00"), t("10:00:00"));
        assert_eq!(b.tick(t("10:00:00")), [["a+"]]);
        let key = b.groups.iter().next().unwrap().key.clone();
        b.groups.ack(&key, "alice", "", t("10:01:00"));
        // A restart after a crash that lost the log entry (written after the delivery) but not the ack.
        let mut history = b.groups.take_history();
        history.log.clear();
        let mut restarted = Bench::new(b.route.clone());
        restarted.groups = Groups::with_history(history);
        restarted.post(record("Down", "a", "10:00:00", "14:00:00"), t("10:02:00"));
        assert!(restarted.tick(t("10:02:00")).is_empty(), "the ack covers the firing alert");
        // A new alert is not covered: the group is re-triggered and notified.
        restarted.post(record("Down", "b", "10:03:00", "14:00:00"), t("10:03:00"));
        assert_eq!(restarted.tick(t("10:03:00")), [["a+", "b+"]]);
    }

    #[test]
    fn withdrawing_an_ack_lets_the_held_repeat_go() {
        let mut b = Bench::new(route(&[], 0, 60, 3600));
        b.post(record("Down", "a", "10:00:00", "14:00:00"), t("10:00:00"));
        b.tick(t("10:00:00"));
        let key = b.groups.iter().next().unwrap().key.clone();
        b.groups.ack(&key, "alice", "", t("10:10:00"));
        assert!(b.tick(t("11:30:00")).is_empty());
        assert!(b.groups.unack(&key, t("11:30:00")));
        assert!(!b.groups.unack(&key, t("11:30:00")), "only once");
        assert_eq!(b.tick(t("11:31:00")), [["a+"]], "the repeat was overdue");
    }

    #[test]
    fn reassigning_moves_an_alert_and_ends_the_group_it_left() {
        let mut b = Bench::new(route(&["alertname"], 0, 60, 3600));
        b.post(record("Down", "a", "10:00:00", "14:00:00"), t("10:00:00"));
        b.post(record("Down", "b", "10:00:00", "14:00:00"), t("10:00:00"));
        assert_eq!(b.tick(t("10:00:00")), [["a+", "b+"]]);
        let old_key = b.groups.iter().next().unwrap().key.clone();
        let mut elsewhere = route(&["alertname"], 0, 60, 3600);
        elsewhere.receiver = "other".into();
        let mut slower = route(&["alertname"], 0, 120, 7200);
        slower.receiver = b.route.receiver.clone();
        let [a, bb] = [&b.alerts[0], &b.alerts[1]].map(|r| (r.fingerprint(), r.labels.clone(), r.starts_at));
        // `a` stays (with new options), `b` moves: the old group lives on with `a` only.
        assert!(b.groups.reassign(a.0, &a.1, a.2, std::slice::from_ref(&slower), t("10:01:00")).is_empty());
        assert_eq!(b.groups.get(&old_key).unwrap().options.repeat_interval, Duration::from_secs(7200));
        assert!(b.groups.reassign(bb.0, &bb.1, bb.2, std::slice::from_ref(&elsewhere), t("10:01:00")).is_empty());
        assert_eq!(b.groups.get(&old_key).unwrap().alerts.len(), 1);
        assert_eq!(b.groups.len(), 2);
        // Then `a` leaves too: the old group ends, its log entry goes with it.
        assert_eq!(b.groups.reassign(a.0, &a.1, a.2, std::slice::from_ref(&elsewhere), t("10:01:00")), std::slice::from_ref(&old_key));
        assert!(b.groups.get(&old_key).is_none() && b.groups.last_notified(&old_key).is_none());
        assert_eq!(b.groups.groups_of(a.0).map(|g| g.receiver.clone()).collect::<Vec<_>>(), ["other"]);
    }

    #[test]
    fn a_refused_notification_is_sent_again_at_the_next_group_interval() {
        let mut b = Bench::new(route(&[], 0, 60, 3600));
        b.post(record("Down", "a", "10:00:00", "14:00:00"), t("10:00:00"));
        assert_eq!(b.tick(t("10:00:00")), [["a+"]]);
        let key = b.groups.iter().next().unwrap().key.clone();
        assert!(!b.groups.forget_refused(&key, t("09:59:00"), t("10:00:05")), "not the decision the log holds");
        assert!(b.groups.forget_refused(&key, t("10:00:00"), t("10:00:05")));
        assert_eq!(b.groups.next_due(), Some(t("10:01:00")), "a group_interval after the flush");
        assert_eq!(b.tick(t("10:01:00")), [["a+"]], "tried again");
        assert!(b.tick(t("10:30:00")).is_empty(), "then the log holds it again");
    }

    fn escalating(b: &mut Bench) {
        use crate::escalate::{Policy, Step};
        let step = |wait: u64, who: &str| Step {
            wait: Duration::from_secs(wait),
            notify: vec![who.into()],
            notify_on_call: vec![],
            active_time_intervals: vec![],
        };
        let policy = Policy { name: "page".into(), steps: vec![step(300, "oncall"), step(600, "manager")], repeat: 0 };
        b.groups.set_policies(Arc::new([("page".to_string(), policy)].into_iter().collect()));
        let mut options = (*b.route.options).clone();
        options.escalation = Some("page".into());
        b.route.options = Arc::new(options);
    }

    fn levels(due: Vec<DueEscalation>) -> Vec<(u32, String)> {
        due.into_iter().map(|d| (d.level, d.step.notify[0].clone())).collect()
    }

    #[test]
    fn an_unacknowledged_group_escalates_step_by_step_until_the_last() {
        let mut b = Bench::new(route(&[], 0, 60, 3600));
        escalating(&mut b);
        b.post(record("Down", "a", "10:00:00", "14:00:00"), t("10:00:00"));
        assert_eq!(b.tick(t("10:00:00")), [["a+"]]);
        assert_eq!(b.groups.take_escalation_changes().len(), 1, "started, to persist");
        assert_eq!(b.groups.next_due(), Some(t("10:05:00")), "the first step is the next event");
        assert!(b.groups.take_due_escalations(t("10:04:59")).is_empty());
        assert_eq!(levels(b.groups.take_due_escalations(t("10:05:00"))), [(1, "oncall".to_string())]);
        assert_eq!(levels(b.groups.take_due_escalations(t("10:15:00"))), [(2, "manager".to_string())]);
        assert!(b.groups.escalation_of(&b.groups.iter().next().unwrap().key.clone()).is_none(), "the last level ends it");
        assert!(b.groups.take_due_escalations(t("12:00:00")).is_empty());
    }

    #[test]
    fn an_ack_or_the_resolution_stops_escalation_and_a_retrigger_starts_it_over() {
        let mut b = Bench::new(route(&[], 0, 60, 3600));
        escalating(&mut b);
        b.post(record("Down", "a", "10:00:00", "14:00:00"), t("10:00:00"));
        b.tick(t("10:00:00"));
        let key = b.groups.iter().next().unwrap().key.clone();
        b.groups.ack(&key, "alice", "", t("10:02:00"));
        assert!(b.groups.escalation_of(&key).is_none());
        assert!(b.groups.take_due_escalations(t("10:30:00")).is_empty(), "acknowledged: nobody else is paged");
        // A new alert re-triggers the group: notified, and escalating again from its notification.
        b.post(record("Down", "b", "10:40:00", "14:00:00"), t("10:40:00"));
        assert_eq!(b.tick(t("10:40:00")), [["a+", "b+"]]);
        assert_eq!(b.groups.escalation_of(&key).unwrap().started_at, t("10:40:00"));
        assert_eq!(levels(b.groups.take_due_escalations(t("10:45:00"))), [(1, "oncall".to_string())]);
        // Resolution ends it.
        b.post(record("Down", "a", "10:00:00", "10:46:00"), t("10:46:00"));
        b.post(record("Down", "b", "10:40:00", "10:46:00"), t("10:46:00"));
        assert_eq!(b.tick(t("10:46:00")), [["a-", "b-"]]);
        assert!(b.groups.escalation_of(&key).is_none());
        assert!(b.groups.take_due_escalations(t("11:00:00")).is_empty());
    }

    #[test]
    fn a_stored_escalation_resumes_and_a_removed_policy_stops_it() {
        let mut b = Bench::new(route(&[], 0, 60, 3600));
        escalating(&mut b);
        b.post(record("Down", "a", "10:00:00", "14:00:00"), t("10:00:00"));
        b.tick(t("10:00:00"));
        let history = b.groups.take_history();
        assert_eq!(history.escalations.len(), 1);
        let policies = b.groups.policies();
        let mut restarted = Bench::new(b.route.clone());
        restarted.groups = Groups::with_history(history);
        restarted.groups.set_policies(policies);
        assert_eq!(restarted.groups.next_due(), Some(t("10:05:00")));
        // At start the held alerts are routed back into their groups before anything flushes.
        restarted.post(record("Down", "a", "10:00:00", "14:00:00"), t("10:20:00"));
        assert_eq!(levels(restarted.groups.take_due_escalations(t("10:20:00"))), [(2, "manager".to_string())], "missed levels fire once");
        let mut again = Bench::new(route(&[], 0, 60, 3600));
        escalating(&mut again);
        again.post(record("Down", "a", "10:00:00", "14:00:00"), t("10:00:00"));
        again.tick(t("10:00:00"));
        again.groups.take_escalation_changes();
        again.groups.set_policies(Arc::new(Policies::new()));
        assert_eq!(again.groups.take_escalation_changes().len(), 1, "stopped, to persist");
        assert!(again.groups.take_due_escalations(t("11:00:00")).is_empty());
    }

    #[test]
    fn idle_groups_are_not_scheduled_before_their_next_event() {
        let mut b = Bench::new(route(&["..."], 0, 1, 3600));
        for i in 0..1000 {
            b.post(record("Down", &i.to_string(), "10:00:00", "11:00:00"), t("10:00:00"));
        }
        assert_eq!(b.tick(t("10:00:00")).len(), 1000);
        // group_interval is 1 s, yet nothing is due until the first endsAt.
        assert_eq!(b.groups.next_due(), Some(t("10:59:59").max(t("11:00:00"))));
        assert!(b.groups.take_due(t("10:59:59"), usize::MAX).is_empty());
    }

    #[test]
    fn due_groups_are_taken_a_limited_number_at_a_time_earliest_first() {
        let mut b = Bench::new(route(&["..."], 0, 60, 3600));
        for (instance, at) in [("c", "10:00:03"), ("a", "10:00:01"), ("b", "10:00:02")] {
            b.post(record("Down", instance, at, "11:00:00"), t(at));
        }
        let instances = |b: &Bench, keys: Vec<GroupKey>| -> Vec<String> {
            let instance = |fp: &Fingerprint| b.alerts.iter().find(|a| a.fingerprint() == *fp).unwrap().labels["instance"].clone();
            keys.iter().flat_map(|k| b.groups.get(k).unwrap().alerts.iter().map(instance)).collect()
        };
        let taken = b.groups.take_due(t("10:00:05"), 2);
        assert_eq!(instances(&b, taken), ["a", "b"], "the two due first");
        assert!(b.groups.any_due(t("10:00:05")), "the third stays due");
        let taken = b.groups.take_due(t("10:00:05"), 2);
        assert_eq!(instances(&b, taken), ["c"]);
        assert!(!b.groups.any_due(t("10:00:05")));
        assert!(b.groups.take_due(t("10:00:05"), 2).is_empty());
    }

    impl Groups {
        fn get_by_alert_count(&self) -> usize {
            self.groups.values().map(|g| g.alerts.len()).sum()
        }
    }
}
