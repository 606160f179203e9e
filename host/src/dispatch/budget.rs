//! A tenant's routing-script time budget: script time is charged as it is spent, and a tenant in debt is refused ingest (429) until it has paid it back, so its script never takes another tenant's CPU.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket of script time: it refills at `per_second` of script time each second, up
/// to `burst`; each routing pass is charged what it took, so the balance may go negative. While
/// it is negative, ingest is refused for as long as the refill takes to bring it back to zero.
pub struct ScriptBudget {
    per_second: Duration,
    burst: Duration,
    /// The balance in nanoseconds (negative: in debt) and when it was last brought up to date.
    balance: Mutex<(i128, Instant)>,
}

impl ScriptBudget {
    /// A full budget: `per_second` of script time each second, `burst` at most saved up.
    pub fn new(per_second: Duration, burst: Duration) -> ScriptBudget {
        ScriptBudget { per_second, burst, balance: Mutex::new((burst.as_nanos() as i128, Instant::now())) }
    }

    fn refilled(&self, now: Instant) -> std::sync::MutexGuard<'_, (i128, Instant)> {
        let mut b = self.balance.lock().expect("script budget lock");
        let earned = now.saturating_duration_since(b.1).as_secs_f64() * self.per_second.as_nanos() as f64;
        b.0 = (b.0 + earned as i128).min(self.burst.as_nanos() as i128);
        b.1 = now;
        b
    }

    /// Charge `spent` of script time.
    pub fn charge(&self, spent: Duration) {
        self.refilled(Instant::now()).0 -= spent.as_nanos() as i128;
    }

    /// `Ok` if the tenant may route more now; else how long until its debt is paid.
    pub fn check(&self) -> Result<(), Duration> {
        let debt = -self.refilled(Instant::now()).0;
        if debt <= 0 || self.per_second.is_zero() {
            return Ok(());
        }
        Err(Duration::from_secs_f64(debt as f64 / self.per_second.as_nanos() as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_in_debt_waits_until_the_refill_has_paid_it() {
        let budget = ScriptBudget::new(Duration::from_millis(500), Duration::from_secs(1));
        budget.charge(Duration::from_millis(900));
        assert!(budget.check().is_ok(), "within the burst");
        budget.charge(Duration::from_millis(1100));
        let wait = budget.check().unwrap_err();
        // 1 s in debt at 0.5 s per second: about 2 s (less the few microseconds since).
        assert!(wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2), "{wait:?}");
    }
}
