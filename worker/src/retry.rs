//! Retry delays: exponential with jitter, honouring `Retry-After`.
//!
//! A few lines of our own rather than a crate: the delay is `min · 2^(attempt-1)`, capped at
//! `max`, times a jitter factor drawn from `[0.5, 1.5]` (so replicas retrying the same outage do
//! not come back in step), capped at `max` again. A `Retry-After` from the failed call wins,
//! up to [`MAX_RETRY_AFTER`].

use std::time::Duration;

/// The longest `Retry-After` honoured; a server asking for more is asked again after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// The jitter band: the delay is multiplied by a factor drawn from `1 ± JITTER`.
const JITTER: f64 = 0.5;

/// Retry delay bounds, from `FLEET_BACKOFF_MIN` and `FLEET_BACKOFF_MAX`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The first delay.
    pub min: Duration,
    /// The largest delay.
    pub max: Duration,
}

// === impl RetryPolicy ===

impl RetryPolicy {
    /// The delay before delivery `attempt + 1`, after delivery `attempt` (1-based) failed.
    ///
    /// `retry_after` (from the failed call) wins when given, up to [`MAX_RETRY_AFTER`].
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let factor = rand::random_range((1.0 - JITTER)..=(1.0 + JITTER));
        self.delay_with(attempt, retry_after, factor)
    }

    /// [`RetryPolicy::delay`] with the jitter factor given.
    fn delay_with(&self, attempt: u32, retry_after: Option<Duration>, factor: f64) -> Duration {
        if let Some(after) = retry_after {
            return after.min(MAX_RETRY_AFTER);
        }
        let max = self.max.max(self.min);
        // 2^31 times any positive minimum is past any sensible maximum.
        let doublings = attempt.saturating_sub(1).min(31);
        let base = self.min.saturating_mul(1 << doublings).min(max);
        base.mul_f64(factor.clamp(1.0 - JITTER, 1.0 + JITTER))
            .min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RetryPolicy = RetryPolicy {
        min: Duration::from_millis(100),
        max: Duration::from_secs(2),
    };

    #[test]
    fn delays_double_from_min_up_to_max() {
        let ms = |attempt| P.delay_with(attempt, None, 1.0).as_millis();
        assert_eq!(
            (1..=7).map(ms).collect::<Vec<_>>(),
            [100, 200, 400, 800, 1600, 2000, 2000]
        );
        assert_eq!(P.delay_with(u32::MAX, None, 1.0), P.max, "no overflow");
        let odd = RetryPolicy {
            min: Duration::from_secs(3),
            max: Duration::from_secs(1),
        };
        assert_eq!(
            odd.delay_with(1, None, 1.0),
            Duration::from_secs(3),
            "a max below min is min"
        );
    }

    #[test]
    fn jitter_spreads_half_either_way_within_max() {
        assert_eq!(P.delay_with(2, None, 0.5), Duration::from_millis(100));
        assert_eq!(P.delay_with(2, None, 1.5), Duration::from_millis(300));
        assert_eq!(P.delay_with(5, None, 1.5), P.max, "jitter never passes max");
        assert_eq!(P.delay_with(2, None, 9.0), Duration::from_millis(300));
        // The random draw stays in the band, and does vary.
        let drawn: Vec<Duration> = (0..200).map(|_| P.delay(3, None)).collect();
        assert!(
            drawn
                .iter()
                .all(|d| (Duration::from_millis(200)..=Duration::from_millis(600)).contains(d)),
            "{drawn:?}"
        );
        assert!(drawn.iter().any(|d| *d != drawn[0]), "jittered: {drawn:?}");
    }

    #[test]
    fn retry_after_wins_up_to_its_cap() {
        assert_eq!(
            P.delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            P.delay(1, Some(Duration::from_secs(100_000))),
            MAX_RETRY_AFTER
        );
    }
}
