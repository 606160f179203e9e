//! One tenant's groups and their schedule: alerts joining and leaving groups, flushes decided by the notification log, acks and escalations, and the next time anything is due.

use super::aggregate::Group;
use super::aggregate::GroupKey;
use super::aggregate::GroupKeys;
use super::aggregate::group_key;
use super::aggregate::next_flush;
use super::aggregate::span;
use super::flush::DueEscalation;
use super::flush::Flush;
use super::flush::FlushAlert;
use super::flush::FlushOutcome;
use super::flush::sort_for_notification;
use super::nflog::History;
use super::nflog::NotifyEntry;
use super::nflog::needs_update;
use crate::ack::Ack;
use crate::alert::Fingerprint;
use crate::alert::LabelSet;
use crate::alert::Status;
use crate::escalate::Escalation;
use crate::escalate::Policies;
use crate::route::RouteTo;
use crate::state::AlertRecord;
use chrono::DateTime;
use chrono::Utc;
use foldhash::HashMap;
use foldhash::HashSet;
use std::collections::BTreeSet;
use std::sync::Arc;

/// One tenant's groups and their schedule.
#[derive(Debug, Default)]
pub struct Groups {
    pub(super) groups: HashMap<GroupKey, Group>,
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

pub(super) fn unlink(members: &mut HashMap<Fingerprint, GroupKeys>, fp: Fingerprint, key: &str) {
    if let Some(keys) = members.get_mut(&fp) {
        keys.retain(|k| &**k != key);
        if keys.is_empty() {
            members.remove(&fp);
        }
    }
}
