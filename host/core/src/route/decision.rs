//! What a route decides for an alert: its receivers, and how each groups it and times its notifications.

use crate::alert;
use std::sync::Arc;
use std::time::Duration;

use crate::alert::LabelSet;

/// Which labels form an aggregation group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GroupBy {
    /// Every label (Alertmanager's `group_by: ['...']`): one group per alert.
    All,
    /// These labels; an empty list puts every alert of the route in one group.
    Labels(Vec<String>),
}

impl GroupBy {
    /// The group labels of an alert with `labels`.
    pub fn group_labels(&self, labels: &LabelSet) -> LabelSet {
        match self {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => names.iter().filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone()))).collect(),
        }
    }

    /// As written in config and scripts.
    pub fn names(&self) -> Vec<String> {
        match self {
            GroupBy::All => vec!["...".into()],
            GroupBy::Labels(names) => names.clone(),
        }
    }

    /// From a list of label names, `...` meaning all.
    pub fn from_names(names: Vec<String>) -> Result<GroupBy, String> {
        if names.iter().any(|n| n == "...") {
            return if names.len() == 1 { Ok(GroupBy::All) } else { Err("`...` (all labels) cannot be combined with other labels".into()) };
        }
        if let Some(bad) = names.iter().find(|n| !alert::is_valid_label_name(n)) {
            return Err(format!("`{bad}` is not a valid label name"));
        }
        let mut names = names;
        names.sort();
        names.dedup();
        Ok(GroupBy::Labels(names))
    }
}

/// How a route groups and times its notifications.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteOptions {
    /// Which labels form a group.
    pub group_by: GroupBy,
    /// How long a new group waits for more alerts before its first notification.
    pub group_wait: Duration,
    /// How long a group waits after a notification before notifying changes.
    pub group_interval: Duration,
    /// How long before an unchanged group is notified again.
    pub repeat_interval: Duration,
    /// The escalation policy that follows up unacknowledged notifications.
    pub escalation: Option<String>,
    /// Notifications are held while any of these time intervals is active.
    pub mute_time_intervals: Vec<String>,
    /// Notifications go out only while one of these time intervals is active (none: always).
    pub active_time_intervals: Vec<String>,
}

impl Default for RouteOptions {
    /// Alertmanager's defaults.
    fn default() -> Self {
        RouteOptions {
            group_by: GroupBy::Labels(Vec::new()),
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(5 * 60),
            repeat_interval: Duration::from_secs(4 * 3600),
            escalation: None,
            mute_time_intervals: Vec::new(),
            active_time_intervals: Vec::new(),
        }
    }
}

/// One route an alert takes: a receiver and how it groups.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteTo {
    /// The receiver.
    pub receiver: String,
    /// Grouping and timing.
    pub options: Arc<RouteOptions>,
}

/// Where an alert goes.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteDecision {
    /// The routes, in the order the script returned them; empty when the script drops the alert.
    pub routes: Vec<RouteTo>,
    /// Why the script's answer was replaced by the fallback route.
    pub failure: Option<String>,
}

impl RouteDecision {
    /// The receivers, in order.
    pub fn receivers(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.receiver.clone()).collect()
    }
}
