//! Decides which receivers get an alert, and how it is grouped: a tenant's Rhai script compiled once, evaluated per alert in a sandboxed engine, with the `[route]` receiver as fallback.
//!
//! A script defines `fn route(alert)` and returns `()` (the default route), a receiver name,
//! a map (`#{ receiver: "pager", group_by: ["alertname"], group_wait: "10s", ... }`), or an
//! array of those (Alertmanager's `continue`: every element is a route). It may define
//! `fn tests()` returning example alerts with the receivers they expect; they run before the
//! script goes live. See docs/ROUTING.md.

mod check;
mod decision;
mod router;
mod sandbox;
mod script;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use decision::{GroupBy, RouteDecision, RouteOptions, RouteTo};
pub use router::{Router, RouterSpec};
pub use sandbox::limits;
pub use script::ScriptError;

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `[route]`: the tenant's routing script, its fallback receiver and the default grouping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Where alerts go without a script, when the script returns `()`, and when it fails on
    /// an alert.
    pub receiver: String,
    /// A Rhai routing script (docs/ROUTING.md), relative to the file that names it. Reloaded
    /// when it changes.
    #[serde(default)]
    pub script: Option<PathBuf>,
    /// Labels that form a group; `["..."]` groups by all labels, `[]` puts all alerts in one
    /// group (Alertmanager's default).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification.
    #[serde(default = "default_group_wait", with = "humantime_serde")]
    pub group_wait: Duration,
    /// How long a group waits after a notification before notifying changes.
    #[serde(default = "default_group_interval", with = "humantime_serde")]
    pub group_interval: Duration,
    /// How long before an unchanged, still firing group is notified again.
    #[serde(default = "default_repeat_interval", with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// The escalation policy of the default route (a script's routes name their own).
    #[serde(default)]
    pub escalation: Option<String>,
}

fn default_group_wait() -> Duration {
    crate::route::RouteOptions::default().group_wait
}

fn default_group_interval() -> Duration {
    crate::route::RouteOptions::default().group_interval
}

fn default_repeat_interval() -> Duration {
    crate::route::RouteOptions::default().repeat_interval
}
