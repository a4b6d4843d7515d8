//! Retry delays: exponential with jitter (the `backoff` crate), honouring `Retry-After`.

use std::time::Duration;

use backoff::{ExponentialBackoff, backoff::Backoff};

/// The longest `Retry-After` honoured; a server asking for more is asked again after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

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
        if let Some(after) = retry_after {
            return after.min(MAX_RETRY_AFTER);
        }
        let mut backoff = ExponentialBackoff {
            current_interval: self.min,
            initial_interval: self.min,
            max_interval: self.max.max(self.min),
            multiplier: 2.0,
            randomization_factor: 0.5,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        let mut delay = self.min;
        for _ in 0..attempt.max(1) {
            delay = backoff.next_backoff().unwrap_or(self.max);
        }
        delay.min(self.max.max(self.min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_within_bounds() {
        let p = RetryPolicy {
            min: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in 1..10 {
            let d = p.delay(attempt, None);
            assert!(d >= Duration::from_millis(50), "{attempt}: {d:?}");
            assert!(d <= Duration::from_secs(2), "{attempt}: {d:?}");
        }
        // The fifth retry is past the doubling's jitter band of the first.
        assert!(p.delay(5, None) > p.delay(1, None));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(100_000))),
            MAX_RETRY_AFTER
        );
    }
}
