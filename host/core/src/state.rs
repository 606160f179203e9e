//! Alert state per tenant with Alertmanager's semantics: merge of re-posted alerts, resolve_timeout, garbage collection.
//!
//! Prometheus re-sends every firing alert each evaluation interval with the same `startsAt`
//! and a moving `endsAt`: that is one alert, updated, not a new one. What was notified about
//! each alert is not kept here but in the groups' notification log (`group/nflog.rs`).

use foldhash::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, Fingerprint, LabelSet, Status};
use crate::store::{Commit, Op, Store, Table};

/// An alert as Belfry keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// Identifying labels.
    pub labels: LabelSet,
    /// Annotations of the latest update.
    pub annotations: LabelSet,
    /// Earliest known start.
    pub starts_at: DateTime<Utc>,
    /// When it resolves (or resolved); always set, by the client or by `resolve_timeout`.
    pub ends_at: DateTime<Utc>,
    /// Link to the source.
    pub generator_url: String,
    /// When Belfry last received it.
    pub updated_at: DateTime<Utc>,
    /// `ends_at` came from `resolve_timeout`, not from the client.
    pub timeout: bool,
}

impl AlertRecord {
    /// A freshly posted alert, with Alertmanager's defaulting of a missing `endsAt`.
    pub fn from_posted(a: Alert, now: DateTime<Utc>, resolve_timeout: Duration) -> AlertRecord {
        let (ends_at, timeout) = match a.ends_at {
            Some(end) => (end, false),
            None => (now + chrono::Duration::from_std(resolve_timeout).unwrap_or(chrono::Duration::MAX), true),
        };
        AlertRecord {
            labels: a.labels,
            annotations: a.annotations,
            starts_at: a.starts_at,
            ends_at,
            generator_url: a.generator_url,
            updated_at: now,
            timeout,
        }
    }

    /// Alertmanager's fingerprint of the labels.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.labels)
    }

    /// Resolved once `ends_at` has passed.
    pub fn status_at(&self, now: DateTime<Utc>) -> Status {
        if self.ends_at <= now { Status::Resolved } else { Status::Firing }
    }

    /// The alert as the dispatcher sees it.
    pub fn to_alert(&self) -> Alert {
        Alert {
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            starts_at: self.starts_at,
            ends_at: Some(self.ends_at),
            generator_url: self.generator_url.clone(),
        }
    }

    /// Alertmanager's `Alert.Merge`, `self` being the older alert and `new` the younger.
    fn merge(&self, new: AlertRecord, now: DateTime<Utc>) -> AlertRecord {
        let mut merged = new;
        // Always pick the earliest starting time.
        if self.starts_at < merged.starts_at {
            merged.starts_at = self.starts_at;
        }
        if merged.status_at(now) == Status::Resolved {
            // The latest explicit resolve wins when both are resolved.
            if self.status_at(now) == Status::Resolved && self.ends_at > merged.ends_at {
                merged.ends_at = self.ends_at;
            }
        } else if self.ends_at > merged.ends_at && !self.timeout {
            // A later end set by a client beats a timeout-derived one.
            merged.ends_at = self.ends_at;
            merged.timeout = false;
        }
        merged
    }
}

/// An alert a request touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Touched {
    /// Which alert.
    pub fingerprint: Fingerprint,
    /// It is new, or its status at the time of the request changed (firing ↔ resolved).
    pub changed: bool,
}

/// How long alerts live.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlertSettings {
    /// `endsAt` of an alert posted without one: now + this (Alertmanager's `resolve_timeout`).
    pub resolve_timeout: Duration,
    /// Resolved, notified alerts are dropped this long after they resolved.
    pub resolved_retention: Duration,
}

/// A label name or value, shared by every alert that carries it (names and most values repeat).
type Sym = Arc<str>;

/// Hands out one shared copy of each distinct string.
#[derive(Default)]
struct Interner {
    set: HashSet<Sym>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> Sym {
        if let Some(sym) = self.set.get(s) {
            return sym.clone();
        }
        let sym: Sym = Arc::from(s);
        self.set.insert(sym.clone());
        sym
    }

    fn pairs(&mut self, set: &LabelSet) -> Box<[(Sym, Sym)]> {
        set.iter().map(|(k, v)| (self.intern(k), self.intern(v))).collect()
    }

    /// Forget strings no alert uses any more.
    fn sweep(&mut self) {
        self.set.retain(|sym| Arc::strong_count(sym) > 1);
    }
}

/// An alert as held in memory: an [`AlertRecord`] with interned strings in sorted slices,
/// a fraction of the size of two `BTreeMap<String, String>` (docs/BENCHMARKS.md).
struct Stored {
    labels: Box<[(Sym, Sym)]>,
    annotations: Box<[(Sym, Sym)]>,
    generator_url: Sym,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    timeout: bool,
}

impl Stored {
    fn new(r: &AlertRecord, interner: &mut Interner) -> Stored {
        Stored {
            labels: interner.pairs(&r.labels),
            annotations: interner.pairs(&r.annotations),
            generator_url: interner.intern(&r.generator_url),
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            updated_at: r.updated_at,
            timeout: r.timeout,
        }
    }

    fn record(&self) -> AlertRecord {
        let set = |pairs: &[(Sym, Sym)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        AlertRecord {
            labels: set(&self.labels),
            annotations: set(&self.annotations),
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            generator_url: self.generator_url.to_string(),
            updated_at: self.updated_at,
            timeout: self.timeout,
        }
    }

    fn status_at(&self, now: DateTime<Utc>) -> Status {
        if self.ends_at <= now { Status::Resolved } else { Status::Firing }
    }
}

/// A held alert, as [`AlertState::select`] shows it to its filter without copying it.
pub struct AlertView<'a>(&'a Stored);

impl AlertView<'_> {
    /// A label's value.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.0.labels.binary_search_by(|(k, _)| k.as_ref().cmp(name)).ok().map(|i| self.0.labels[i].1.as_ref())
    }

    /// When it resolves (or resolved).
    pub fn ends_at(&self) -> DateTime<Utc> {
        self.0.ends_at
    }
}

/// The alerts and the strings they share.
#[derive(Default)]
struct Held {
    alerts: HashMap<Fingerprint, Stored>,
    interner: Interner,
}

/// One tenant's alerts.
pub struct AlertState {
    tenant: String,
    settings: AlertSettings,
    held: Mutex<Held>,
}

impl AlertState {
    /// Empty state for `tenant`.
    pub fn new(tenant: &str, settings: AlertSettings) -> AlertState {
        AlertState { tenant: tenant.to_string(), settings, held: Mutex::new(Held::default()) }
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Put back what the store had.
    pub fn restore(&self, records: impl IntoIterator<Item = AlertRecord>) {
        let mut held = self.lock();
        let Held { alerts, interner } = &mut *held;
        for r in records {
            alerts.insert(r.fingerprint(), Stored::new(&r, interner));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().expect("alert state lock")
    }

    /// Merge posted alerts into the state and queue them for the store. The batch is queued
    /// under the lock, so the store commits updates of one alert in the order they were merged.
    /// Returns the fingerprints touched and the commit to await before acknowledging, or, when
    /// the new alerts would take the tenant over `max_alerts`, an error and no change at all.
    pub fn ingest(
        &self,
        posted: Vec<Alert>,
        now: DateTime<Utc>,
        store: &dyn Store,
        max_alerts: usize,
    ) -> Result<(Vec<Touched>, Commit), String> {
        let mut held = self.lock();
        let Held { alerts, interner } = &mut *held;
        let mut new: Vec<Fingerprint> = posted.iter().map(|a| Fingerprint::of(&a.labels)).filter(|fp| !alerts.contains_key(fp)).collect();
        new.sort();
        new.dedup();
        if alerts.len() + new.len() > max_alerts {
            return Err(format!(
                "the tenant holds {} alerts and this request adds {} new ones; the limit is {max_alerts} (max_alerts): resolve alerts or raise the limit",
                alerts.len(),
                new.len()
            ));
        }
        let mut ops = Vec::with_capacity(posted.len());
        let mut touched = Vec::with_capacity(posted.len());
        for a in posted {
            let new = AlertRecord::from_posted(a, now, self.settings.resolve_timeout);
            let fp = new.fingerprint();
            let (record, changed) = match alerts.get(&fp) {
                // Merge when the activity ranges overlap (Alertmanager's provider/mem Put);
                // otherwise this is a new occurrence that replaces the old one.
                Some(old)
                    if (new.ends_at > old.starts_at && new.ends_at < old.ends_at)
                        || (new.starts_at > old.starts_at && new.starts_at < old.ends_at) =>
                {
                    let merged = old.record().merge(new, now);
                    let changed = merged.status_at(now) != old.status_at(now);
                    (merged, changed)
                }
                Some(old) => {
                    let changed = new.status_at(now) != old.status_at(now) || new.starts_at != old.starts_at;
                    (new, changed)
                }
                None => (new, true),
            };
            alerts.insert(fp, Stored::new(&record, interner));
            ops.push(Op::put(Table::Alerts, &self.tenant, &fp.0.to_be_bytes(), &record));
            touched.push(Touched { fingerprint: fp, changed });
        }
        let commit = store.submit(ops);
        Ok((touched, commit))
    }

    /// The alerts among `fingerprints` that are still held, in the order given.
    pub fn records(&self, fingerprints: impl IntoIterator<Item = Fingerprint>) -> Vec<(Fingerprint, AlertRecord)> {
        let held = self.lock();
        fingerprints.into_iter().filter_map(|fp| held.alerts.get(&fp).map(|r| (fp, r.record()))).collect()
    }

    /// The fingerprints of every held alert, in no particular order.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.lock().alerts.keys().copied().collect()
    }

    /// Call `f` with every alert firing at `now`, without copying it.
    pub fn for_each_firing(&self, now: DateTime<Utc>, f: &mut dyn FnMut(Fingerprint, &AlertView<'_>)) {
        let held = self.lock();
        for (fp, r) in &held.alerts {
            if r.status_at(now) == Status::Firing {
                f(*fp, &AlertView(r));
            }
        }
    }

    /// Drop resolved alerts older than the retention that no group still holds (`in_use`: a
    /// group that has not yet notified the resolve); returns the store deletions.
    pub fn collect_garbage(&self, now: DateTime<Utc>, in_use: &dyn Fn(Fingerprint) -> bool) -> Vec<Op> {
        let retention = chrono::Duration::from_std(self.settings.resolved_retention).unwrap_or(chrono::Duration::MAX);
        let mut held = self.lock();
        let expired: Vec<Fingerprint> = held
            .alerts
            .iter()
            .filter(|(fp, r)| r.status_at(now) == Status::Resolved && r.ends_at + retention <= now && !in_use(**fp))
            .map(|(fp, _)| *fp)
            .collect();
        let ops: Vec<Op> = expired
            .into_iter()
            .map(|fp| {
                held.alerts.remove(&fp);
                Op::delete(Table::Alerts, &self.tenant, &fp.0.to_be_bytes())
            })
            .collect();
        if !ops.is_empty() {
            held.interner.sweep();
        }
        ops
    }

    /// The alerts `keep` accepts, in fingerprint order; only those are copied.
    pub fn select(&self, keep: &dyn Fn(&AlertView<'_>) -> bool) -> Vec<AlertRecord> {
        let held = self.lock();
        let mut out: Vec<(Fingerprint, AlertRecord)> =
            held.alerts.iter().filter(|(_, r)| keep(&AlertView(r))).map(|(fp, r)| (*fp, r.record())).collect();
        out.sort_by_key(|(fp, _)| *fp);
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// Every alert, in fingerprint order.
    pub fn list(&self) -> Vec<AlertRecord> {
        self.select(&|_| true)
    }

    /// How many alerts are held.
    pub fn len(&self) -> usize {
        self.lock().alerts.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `[alerts]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// `endsAt` given to alerts posted without one (Alertmanager's `resolve_timeout`), e.g. "5m".
    #[serde(default = "default_resolve_timeout", with = "humantime_serde")]
    pub resolve_timeout: Duration,
    /// How long resolved alerts stay visible after their resolve was notified, e.g. "30m".
    #[serde(default = "default_resolved_retention", with = "humantime_serde")]
    pub resolved_retention: Duration,
    /// How often Belfry looks for alerts that resolved by timeout and for garbage, e.g. "1s".
    #[serde(default = "default_sweep_interval", with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            resolve_timeout: default_resolve_timeout(),
            resolved_retention: default_resolved_retention(),
            sweep_interval: default_sweep_interval(),
        }
    }
}

fn default_resolve_timeout() -> Duration {
    // Alertmanager's default.
    Duration::from_secs(5 * 60)
}

fn default_resolved_retention() -> Duration {
    // Alertmanager's alerts.gc-interval: resolved alerts stay listed for up to this long.
    Duration::from_secs(30 * 60)
}

fn default_sweep_interval() -> Duration {
    Duration::from_secs(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Snapshot, StoreError};

    /// A store that acknowledges at once and records what it was given.
    #[derive(Default)]
    struct Recording(Mutex<Vec<Op>>);

    impl Store for Recording {
        fn submit(&self, ops: Vec<Op>) -> Commit {
            self.0.lock().unwrap().extend(ops);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(Ok(()));
            rx
        }
        fn load(&self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-11-23T{s}Z")).unwrap().with_timezone(&Utc)
    }

    fn alert(name: &str, starts: &str, ends: Option<&str>) -> Alert {
        Alert {
            labels: [("alertname".to_string(), name.to_string())].into_iter().collect(),
            annotations: LabelSet::new(),
            starts_at: t(starts),
            ends_at: ends.map(t),
            generator_url: String::new(),
        }
    }

    const SETTINGS: AlertSettings =
        AlertSettings { resolve_timeout: Duration::from_secs(300), resolved_retention: Duration::from_secs(1800) };

    #[test]
    fn prometheus_resends_are_one_alert_with_a_moving_end() {
        let (state, store) = (AlertState::new("t", SETTINGS), Recording::default());
        state.ingest(vec![alert("A", "10:00:00", Some("10:04:00"))], t("10:00:00"), &store, usize::MAX).unwrap();
        state.ingest(vec![alert("A", "10:00:00", Some("10:05:00"))], t("10:01:00"), &store, usize::MAX).unwrap();
        let all = state.list();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].starts_at, all[0].ends_at), (t("10:00:00"), t("10:05:00")));
        assert_eq!(store.0.lock().unwrap().len(), 2, "both updates are persisted");
    }

    #[test]
    fn missing_end_uses_resolve_timeout_and_a_client_end_beats_it() {
        let (state, store) = (AlertState::new("t", SETTINGS), Recording::default());
        state.ingest(vec![alert("A", "10:00:00", None)], t("10:00:00"), &store, usize::MAX).unwrap();
        let r = &state.list()[0];
        assert_eq!((r.ends_at, r.timeout), (t("10:05:00"), true));
        state.ingest(vec![alert("A", "10:00:00", Some("10:20:00"))], t("10:01:00"), &store, usize::MAX).unwrap();
        state.ingest(vec![alert("A", "10:00:00", None)], t("10:02:00"), &store, usize::MAX).unwrap();
        let r = &state.list()[0];
        assert_eq!((r.ends_at, r.timeout), (t("10:20:00"), false), "an explicit later end is kept");
    }

    #[test]
    fn an_explicit_resolve_ends_the_alert_and_a_later_firing_is_a_new_occurrence() {
        let (state, store) = (AlertState::new("t", SETTINGS), Recording::default());
        state.ingest(vec![alert("A", "10:00:00", None)], t("10:00:00"), &store, usize::MAX).unwrap();
        state.ingest(vec![alert("A", "10:00:00", Some("10:02:00"))], t("10:02:00"), &store, usize::MAX).unwrap();
        assert_eq!(state.list()[0].status_at(t("10:02:00")), Status::Resolved);
        // Fires again an hour later: no overlap, so it replaces the old occurrence.
        state.ingest(vec![alert("A", "11:00:00", None)], t("11:00:00"), &store, usize::MAX).unwrap();
        let r = &state.list()[0];
        assert_eq!((r.starts_at, r.status_at(t("11:00:00"))), (t("11:00:00"), Status::Firing));
    }

    #[test]
    fn ingest_reports_which_alerts_changed_status() {
        let (state, store) = (AlertState::new("t", SETTINGS), Recording::default());
        let changed = |r: Result<(Vec<Touched>, Commit), String>| r.unwrap().0.iter().map(|t| t.changed).collect::<Vec<_>>();
        assert_eq!(changed(state.ingest(vec![alert("A", "10:00:00", None)], t("10:00:00"), &store, usize::MAX)), [true], "new");
        assert_eq!(changed(state.ingest(vec![alert("A", "10:00:00", None)], t("10:01:00"), &store, usize::MAX)), [false], "a re-send");
        let resolve = alert("A", "10:00:00", Some("10:02:00"));
        assert_eq!(changed(state.ingest(vec![resolve], t("10:02:00"), &store, usize::MAX)), [true], "resolved");
        let again = alert("A", "11:00:00", None);
        assert_eq!(changed(state.ingest(vec![again], t("11:00:00"), &store, usize::MAX)), [true], "fires again");
    }

    #[test]
    fn resolved_alerts_are_collected_after_retention_unless_a_group_holds_them() {
        let (state, store) = (AlertState::new("t", SETTINGS), Recording::default());
        state.ingest(vec![alert("A", "10:00:00", Some("10:01:00"))], t("10:00:00"), &store, usize::MAX).unwrap();
        assert!(state.collect_garbage(t("12:00:00"), &|_| true).is_empty(), "a group still has to send its resolve");
        assert!(state.collect_garbage(t("10:20:00"), &|_| false).is_empty(), "within retention");
        let deleted = state.collect_garbage(t("12:00:00"), &|_| false);
        assert_eq!(deleted.len(), 1);
        assert!(state.is_empty());
    }

    #[test]
    fn max_alerts_refuses_the_whole_request_but_not_updates() {
        let (state, store) = (AlertState::new("t", SETTINGS), Recording::default());
        state.ingest(vec![alert("A", "10:00:00", None)], t("10:00:00"), &store, 2).unwrap();
        let err = state.ingest(vec![alert("B", "10:00:00", None), alert("C", "10:00:00", None)], t("10:00:00"), &store, 2).unwrap_err();
        assert!(err.contains("max_alerts"), "{err}");
        assert_eq!(state.len(), 1, "nothing of the refused request was kept");
        state
            .ingest(vec![alert("A", "10:00:00", None), alert("B", "10:00:00", None)], t("10:01:00"), &store, 2)
            .expect("an update and one new fit");
    }

    #[test]
    fn held_alerts_share_their_strings_and_forget_unused_ones() {
        let (state, store) = (AlertState::new("t", SETTINGS), Recording::default());
        let mut a = alert("Same", "10:00:00", Some("10:01:00"));
        a.labels.insert("instance".into(), "one".into());
        let mut b = alert("Same", "10:00:00", Some("23:00:00"));
        b.labels.insert("instance".into(), "two".into());
        state.ingest(vec![a, b], t("10:00:00"), &store, usize::MAX).unwrap();
        {
            let held = state.lock();
            let mut it = held.alerts.values();
            let (x, y) = (it.next().unwrap(), it.next().unwrap());
            assert!(Arc::ptr_eq(&x.labels[0].0, &y.labels[0].0), "`alertname` is stored once");
            assert!(Arc::ptr_eq(&x.labels[0].1, &y.labels[0].1), "so is its value");
        }
        let view_names: Vec<String> =
            state.select(&|v| v.label("instance") == Some("two")).iter().map(|r| r.labels["instance"].clone()).collect();
        assert_eq!(view_names, ["two"]);
        assert_eq!(state.collect_garbage(t("12:00:00"), &|_| false).len(), 1, "`one` resolved at 10:01 and is collected");
        assert!(!state.lock().interner.set.contains("one"), "its unique value is forgotten");
        assert!(state.lock().interner.set.contains("two"));
    }
}
