//! Per-receiver circuit breaker: after enough consecutive failures a receiver is skipped for a while, then one probe decides.

use serde::Deserialize;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::plugin::{DeliveryFailure, FailureKind};

/// Where the breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Deliveries go through.
    Closed,
    /// Deliveries are refused until `until`.
    Open { until: Instant },
    /// One probe is in flight; others are refused until it reports.
    HalfOpen,
}

impl BreakerState {
    /// A stable lowercase name for logs, metrics and health.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// The breaker's answer to "may I deliver now?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Yes.
    Go,
    /// Yes, as the probe that decides whether the breaker closes again.
    Probe,
    /// No; ask again at `retry_at`.
    Refused { retry_at: Instant },
}

/// How a delivery attempt bears on the receiver's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The service took it, or answered (a permanent refusal of one payload says the service is up).
    Healthy,
    /// The service, the plugin or the receiver's configuration failed.
    Unhealthy,
}

impl Verdict {
    /// What a delivery outcome says about the receiver.
    pub fn of<T>(outcome: &Result<T, DeliveryFailure>) -> Verdict {
        match outcome {
            Ok(_) => Verdict::Healthy,
            Err(f) if f.kind == FailureKind::Permanent => Verdict::Healthy,
            Err(_) => Verdict::Unhealthy,
        }
    }
}

/// A circuit breaker: `failure_threshold` consecutive unhealthy attempts open it for `open_for`;
/// then a single probe either closes it or opens it again.
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
}

/// Refused callers during a probe ask again after this long (or `open_for`, if shorter).
const PROBE_RECHECK: Duration = Duration::from_secs(1);

impl Breaker {
    /// A closed breaker with `config`'s thresholds.
    pub fn new(config: &BreakerConfig) -> Breaker {
        Breaker {
            threshold: config.failure_threshold.max(1),
            open_for: config.open_for,
            inner: Mutex::new(Inner { state: BreakerState::Closed, consecutive_failures: 0 }),
        }
    }

    /// The current state and the failures in a row behind it.
    pub fn state(&self) -> (BreakerState, u32) {
        let inner = self.inner.lock().expect("breaker lock");
        (inner.state, inner.consecutive_failures)
    }

    /// May a delivery go at `now`?
    pub fn admit(&self, now: Instant) -> Admission {
        let mut inner = self.inner.lock().expect("breaker lock");
        match inner.state {
            BreakerState::Closed => Admission::Go,
            BreakerState::Open { until } if now >= until => {
                inner.state = BreakerState::HalfOpen;
                Admission::Probe
            }
            BreakerState::Open { until } => Admission::Refused { retry_at: until },
            BreakerState::HalfOpen => Admission::Refused { retry_at: now + PROBE_RECHECK.min(self.open_for) },
        }
    }

    /// Report an attempt's verdict at `now`. Returns true when this report opened the breaker.
    pub fn record(&self, verdict: Verdict, now: Instant) -> bool {
        let mut inner = self.inner.lock().expect("breaker lock");
        match verdict {
            Verdict::Healthy => {
                inner.state = BreakerState::Closed;
                inner.consecutive_failures = 0;
                false
            }
            Verdict::Unhealthy => {
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                let trips = match inner.state {
                    BreakerState::Closed => inner.consecutive_failures >= self.threshold,
                    // The probe failed, or an attempt admitted before the breaker opened did.
                    BreakerState::HalfOpen => true,
                    BreakerState::Open { .. } => false,
                };
                if trips {
                    inner.state = BreakerState::Open { until: now + self.open_for };
                }
                trips
            }
        }
    }
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `breaker = { ... }`: a per-receiver circuit breaker.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed attempts that open the breaker.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open breaker refuses deliveries before one probe is let through.
    #[serde(default = "default_open_for", with = "humantime_serde")]
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { failure_threshold: default_failure_threshold(), open_for: default_open_for() }
    }
}

fn default_failure_threshold() -> u32 {
    5
}

fn default_open_for() -> Duration {
    Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(&BreakerConfig { failure_threshold: 3, open_for: Duration::from_secs(30) })
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let (b, t0) = (breaker(), Instant::now());
        assert!(!b.record(Verdict::Unhealthy, t0));
        assert!(!b.record(Verdict::Unhealthy, t0));
        assert_eq!(b.admit(t0), Admission::Go);
        assert!(b.record(Verdict::Unhealthy, t0), "the third failure opens it");
        assert_eq!(b.admit(t0 + Duration::from_secs(10)), Admission::Refused { retry_at: t0 + Duration::from_secs(30) });
        assert_eq!(b.state().0.as_str(), "open");
    }

    #[test]
    fn a_success_resets_the_count() {
        let (b, t0) = (breaker(), Instant::now());
        b.record(Verdict::Unhealthy, t0);
        b.record(Verdict::Unhealthy, t0);
        b.record(Verdict::Healthy, t0);
        b.record(Verdict::Unhealthy, t0);
        b.record(Verdict::Unhealthy, t0);
        assert_eq!(b.admit(t0), Admission::Go);
        assert_eq!(b.state(), (BreakerState::Closed, 2));
    }

    #[test]
    fn one_probe_after_open_for_then_close_or_reopen() {
        let (b, t0) = (breaker(), Instant::now());
        for _ in 0..3 {
            b.record(Verdict::Unhealthy, t0);
        }
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(b.admit(t1), Admission::Probe);
        assert_eq!(b.admit(t1), Admission::Refused { retry_at: t1 + Duration::from_secs(1) }, "only one probe at a time");
        assert!(b.record(Verdict::Unhealthy, t1), "a failed probe reopens");
        assert_eq!(b.admit(t1 + Duration::from_secs(29)), Admission::Refused { retry_at: t1 + Duration::from_secs(30) });
        let t2 = t1 + Duration::from_secs(30);
        assert_eq!(b.admit(t2), Admission::Probe);
        b.record(Verdict::Healthy, t2);
        assert_eq!(b.admit(t2), Admission::Go, "a good probe closes it");
    }

    #[test]
    fn permanent_refusals_say_the_service_is_up() {
        let permanent: Result<(), _> =
            Err(DeliveryFailure { blame: crate::plugin::Blame::Remote, kind: FailureKind::Permanent, message: "400".into() });
        assert_eq!(Verdict::of(&permanent), Verdict::Healthy);
        let down: Result<(), _> = Err(DeliveryFailure {
            blame: crate::plugin::Blame::Remote,
            kind: FailureKind::Retryable { retry_after: None },
            message: "503".into(),
        });
        assert_eq!(Verdict::of(&down), Verdict::Unhealthy);
    }
}
