//! Aggregation groups with Alertmanager's semantics (group_wait, group_interval, repeat_interval, send_resolved, the notification log), timed by one schedule per tenant instead of a task per group.
//!
//! A group wakes only when something can have changed: its `group_wait` ends, an alert in it
//! changes (at the next `group_interval` boundary), a firing alert's `endsAt` passes, its
//! `repeat_interval` is due, or silences and inhibitions change. An idle group costs no CPU,
//! so 100K groups cost what their memory costs. Everything here is pure state with the time
//! passed in: the caller (the host's dispatch) fetches alerts, decides muting and delivers.

mod aggregate;
mod flush;
mod groups;
mod nflog;
#[cfg(test)]
mod tests;

pub use aggregate::{Group, GroupKey, group_key};
pub use flush::{DueEscalation, Flush, FlushAlert, FlushOutcome};
pub use groups::Groups;
pub use nflog::{History, NotifyEntry};
