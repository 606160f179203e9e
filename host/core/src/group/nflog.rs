//! What groups remember across restarts and reloads: Alertmanager's notification log (what each group was last notified about, and whether that calls for a new notification), the acks and the running escalations.

use super::aggregate::GroupKey;
use crate::ack::Ack;
use crate::escalate::Escalation;
use chrono::DateTime;
use chrono::Utc;
use foldhash::HashMap;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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

/// Alertmanager's `DedupStage.needsUpdate`.
pub(super) fn needs_update(
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
