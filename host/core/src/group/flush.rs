//! What a group's flush yields: the notification to send (its alerts in the order the contract promises, muted ones marked), or why nothing is sent; and an escalation step that is due.

use super::aggregate::GroupKey;
use super::nflog::NotifyEntry;
use crate::alert::LabelSet;
use crate::alert::Status;
use crate::escalate::Step;
use crate::route::RouteOptions;
use crate::state::AlertRecord;
use chrono::DateTime;
use chrono::Utc;
use std::sync::Arc;

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

/// Firing first, then by `startsAt`, then by labels: the order `wit/receiver.wit` promises.
pub(super) fn sort_for_notification(alerts: &mut [AlertRecord], now: DateTime<Utc>) {
    alerts.sort_by(|a, b| {
        let key = |r: &AlertRecord| (r.status_at(now) == Status::Resolved, r.starts_at);
        key(a).cmp(&key(b)).then_with(|| a.labels.cmp(&b.labels))
    });
}
