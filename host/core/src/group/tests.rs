//! The groups' unit tests: Alertmanager's timing and dedup semantics, acks and escalations, with the time passed in.

use super::*;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::alert::{Fingerprint, LabelSet, Status};
use crate::escalate::Policies;
use crate::route::GroupBy;
use crate::route::{RouteOptions, RouteTo};
use crate::state::AlertRecord;
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
