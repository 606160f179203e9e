//! One aggregation group: its identity (the key channels deduplicate with), its alerts and when it next flushes.

use crate::alert;
use crate::alert::Fingerprint;
use crate::alert::LabelSet;
use crate::route::RouteOptions;
use chrono::DateTime;
use chrono::Utc;
use std::collections::BTreeSet;
use std::sync::Arc;

/// A group's identity: receiver, grouping labels and their values. Stable across restarts and
/// reloads, so it doubles as the dedup key channels collapse repeats with.
pub type GroupKey = Arc<str>;

/// The groups one alert is in: one unless its routes `continue`, so the first is kept inline
/// (a `Vec` cost an allocation per held alert).
pub(super) type GroupKeys = smallvec::SmallVec<[GroupKey; 1]>;

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
    pub(super) created: DateTime<Utc>,
    /// The last flush (a notification or a decision not to send one).
    pub(super) flushed_at: Option<DateTime<Utc>>,
    pub(super) due: Option<DateTime<Utc>>,
}

/// When a group that changed may flush: at the end of its `group_wait` if it never flushed,
/// else a `group_interval` after its last flush (and not before `now`).
pub(super) fn next_flush(group: &Group, now: DateTime<Utc>) -> DateTime<Utc> {
    match group.flushed_at {
        None => group.created + span(group.options.group_wait),
        Some(t) => (t + span(group.options.group_interval)).max(now),
    }
}

/// A configured duration on the wall clock; durations beyond chrono's range mean "never".
pub(super) fn span(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
