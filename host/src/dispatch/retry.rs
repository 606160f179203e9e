//! Retry timing: exponential backoff with full jitter, where a service's Retry-After wins when it asks for longer.

use serde::Deserialize;
use std::time::Duration;

/// When to try again, and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// Upper bound of the first backoff.
    pub initial: Duration,
    /// Upper bound of every backoff.
    pub max: Duration,
}

impl From<&RetryConfig> for Backoff {
    fn from(c: &RetryConfig) -> Backoff {
        Backoff { max_attempts: c.max_attempts.max(1), initial: c.initial_backoff, max: c.max_backoff }
    }
}

impl Backoff {
    /// Whether another try may follow `attempts` tries.
    pub fn may_retry(&self, attempts: u32) -> bool {
        attempts < self.max_attempts
    }

    /// The wait after failed try number `attempt` (1-based): a uniform pick in
    /// `[0, min(max, initial × 2^(attempt-1))]` ("full jitter", so a burst of failures does not
    /// retry in lockstep), `jitter` being that pick's fraction in `[0, 1)`. A Retry-After from the
    /// service is honoured when longer, up to `max`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        let ceiling = self.initial.saturating_mul(1u32 << doublings.min(31)).min(self.max);
        let jittered = ceiling.mul_f64(jitter.clamp(0.0, 1.0));
        match retry_after {
            Some(asked) => jittered.max(asked.min(self.max)),
            None => jittered,
        }
    }
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `retry = { ... }`: exponential backoff with full jitter; a service's Retry-After wins when longer.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Tries in all, the first included (1 = never retry).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Upper bound of the first backoff.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of any backoff, Retry-After included.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { max_attempts: default_max_attempts(), initial_backoff: default_initial_backoff(), max_backoff: default_max_backoff() }
    }
}

fn default_max_attempts() -> u32 {
    6
}

fn default_initial_backoff() -> Duration {
    Duration::from_millis(500)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff { max_attempts: 6, initial: Duration::from_millis(500), max: Duration::from_secs(10) }
    }

    #[test]
    fn ceiling_doubles_per_attempt_up_to_max() {
        let b = backoff();
        let ceilings: Vec<u128> = (1..=7).map(|a| b.delay(a, None, 1.0).as_millis()).collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(b.delay(1000, None, 1.0), Duration::from_secs(10), "no overflow on huge attempt numbers");
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let b = backoff();
        assert_eq!(b.delay(3, None, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, None, 0.5), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let b = backoff();
        assert_eq!(b.delay(1, Some(Duration::from_secs(3)), 0.5), Duration::from_secs(3));
        assert_eq!(b.delay(5, Some(Duration::from_secs(1)), 0.5), Duration::from_secs(4), "shorter Retry-After: the backoff stands");
        assert_eq!(b.delay(1, Some(Duration::from_secs(3600)), 0.0), Duration::from_secs(10));
    }

    #[test]
    fn attempts_are_bounded() {
        let b = backoff();
        assert!(b.may_retry(5));
        assert!(!b.may_retry(6));
    }
}
