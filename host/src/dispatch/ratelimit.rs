//! Per-receiver rate limit: a token bucket (governor) on tokio's clock, so tests drive it with paused time.

use serde::Deserialize;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// governor's clock reading tokio's time (paused in tests, real otherwise).
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// At most `messages` notifications per `per`, with a burst; the rest wait their turn.
pub struct RateLimit {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>,
}

impl RateLimit {
    /// A bucket for `config` (checked by the config: every number is positive).
    pub fn new(config: &RateLimitConfig) -> RateLimit {
        let one = NonZeroU32::MIN;
        let messages = NonZeroU32::new(config.messages).unwrap_or(one);
        let burst = NonZeroU32::new(config.burst.unwrap_or(config.messages)).unwrap_or(one);
        let period = (config.per / messages.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period).expect("a positive period").allow_burst(burst);
        RateLimit { limiter: RateLimiter::direct_with_clock(quota, TokioClock) }
    }

    /// Take a token now, or say how long until one is free.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.limiter.check().map_err(|not_until| not_until.wait_time_from(TokioClock.now()))
    }

    /// Wait for a token.
    pub async fn acquire(&self) {
        while let Err(wait) = self.try_acquire() {
            tokio::time::sleep(wait).await;
        }
    }
}

// Its section of the configuration file, which `config` assembles (docs/CONFIG.md).

/// `rate_limit = { messages = 1, per = "1s" }`: a token bucket per receiver.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Notifications allowed per `per`.
    pub messages: u32,
    /// The period, e.g. "1s" or "1m".
    #[serde(default = "default_rate_period", with = "humantime_serde")]
    pub per: Duration,
    /// Notifications that may go at once after a quiet spell (default: `messages`).
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_rate_period() -> Duration {
    Duration::from_secs(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn slack() -> RateLimit {
        RateLimit::new(&RateLimitConfig { messages: 1, per: Duration::from_secs(1), burst: None })
    }

    #[tokio::test(start_paused = true)]
    async fn one_per_second_spaces_messages_a_second_apart() {
        let limit = slack();
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..4 {
            limit.acquire().await;
            sent.push((Instant::now() - start).as_millis());
        }
        assert_eq!(sent, [0, 1000, 2000, 3000]);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_passes_at_once_then_refills_at_the_rate() {
        let limit = RateLimit::new(&RateLimitConfig { messages: 10, per: Duration::from_secs(1), burst: Some(3) });
        for _ in 0..3 {
            assert!(limit.try_acquire().is_ok());
        }
        let wait = limit.try_acquire().unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        tokio::time::advance(wait).await;
        assert!(limit.try_acquire().is_ok());
    }
}
