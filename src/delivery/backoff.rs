//! The retry schedule: exponential backoff with jitter, capped, honouring
//! Mixpanel's `Retry-After`, within a time budget.
//!
//! Attempt `n` (from 0) waits `base = min(initial * 2^n, max)` scaled by a jitter
//! factor in `[0.5, 1.0]` ("equal jitter": never less than half the base, so the
//! spacing grows even with bad luck), and never less than `Retry-After`.

use std::time::Duration;

/// Backoff parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The un-jittered delay before retry number `attempt` (0 = first retry).
    pub fn base(&self, attempt: u32) -> Duration {
        let factor = 2u32.checked_pow(attempt.min(30)).unwrap_or(u32::MAX);
        self.initial.checked_mul(factor).unwrap_or(self.max).min(self.max)
    }

    /// The delay before retry `attempt`, with `jitter` in `[0, 1]` (0 gives half the
    /// base, 1 the full base) and Mixpanel's `Retry-After` as a floor.
    pub fn delay(&self, attempt: u32, jitter: f64, retry_after: Option<Duration>) -> Duration {
        let base = self.base(attempt);
        let j = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let jittered = base.mul_f64(0.5 + 0.5 * j);
        match retry_after {
            Some(after) => jittered.max(after),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    #[test]
    fn doubles_up_to_the_cap() {
        let bases: Vec<u64> = (0..9).map(|a| B.base(a).as_secs()).collect();
        assert_eq!(bases, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(B.base(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        assert_eq!(B.delay(3, 0.0, None), Duration::from_secs(4));
        assert_eq!(B.delay(3, 1.0, None), Duration::from_secs(8));
        assert_eq!(B.delay(3, f64::NAN, None), Duration::from_secs(8));
    }

    #[test]
    fn retry_after_is_a_floor() {
        assert_eq!(B.delay(0, 1.0, Some(Duration::from_secs(30))), Duration::from_secs(30));
        assert_eq!(B.delay(5, 1.0, Some(Duration::from_secs(3))), Duration::from_secs(32));
    }
}
