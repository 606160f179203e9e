//! Decides which receivers get an alert. Today: the configured `[route] receiver`; per-tenant Rhai routing extends this.

use crate::alert::Alert;

/// A routing decision for one alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteDecision {
    /// Receivers that get the alert, in order.
    pub receivers: Vec<String>,
}

/// The routing table of one tenant.
#[derive(Clone, Debug)]
pub struct Router {
    default_receiver: String,
}

impl Router {
    /// Every alert goes to `default_receiver`.
    pub fn new(default_receiver: String) -> Self {
        Router { default_receiver }
    }

    /// The receivers `alert` goes to.
    pub fn route(&self, _alert: &Alert) -> RouteDecision {
        RouteDecision { receivers: vec![self.default_receiver.clone()] }
    }
}
