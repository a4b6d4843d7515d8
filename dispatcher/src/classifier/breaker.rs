//! A circuit breaker: stop calling a failing LLM for a while.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// Opens after `threshold` failures in a row; stays open for `cooldown`, then lets one call
/// through (half-open): its success closes the circuit, its failure opens it again.
#[derive(Debug)]
pub struct Breaker {
    /// Failures in a row that open the circuit.
    threshold: u32,
    /// How long the circuit stays open.
    cooldown: Duration,
    /// Failures in a row, and when the circuit opened (None: closed).
    state: Mutex<(u32, Option<Instant>)>,
}

// === impl Breaker ===

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new((0, None)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u32, Option<Instant>)> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether a call may go out now. After the cooldown one call is let through and the
    /// circuit re-arms its cooldown, so only one trial runs at a time.
    pub fn allow(&self) -> bool {
        let mut state = self.lock();
        match state.1 {
            None => true,
            Some(opened) if opened.elapsed() >= self.cooldown => {
                state.1 = Some(Instant::now());
                true
            }
            Some(_) => false,
        }
    }

    /// Whether the circuit is open now.
    pub fn is_open(&self) -> bool {
        self.lock()
            .1
            .is_some_and(|opened| opened.elapsed() < self.cooldown)
    }

    /// Records a successful call: the circuit closes.
    pub fn success(&self) {
        *self.lock() = (0, None);
    }

    /// Records a failed call; returns true when this failure opened the circuit.
    pub fn failure(&self) -> bool {
        let mut state = self.lock();
        state.0 = state.0.saturating_add(1);
        if state.0 >= self.threshold {
            let was_closed = state.1.is_none();
            state.1 = Some(Instant::now());
            return was_closed;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_half_opens_after_cooldown() {
        let b = Breaker::new(2, Duration::from_millis(50));
        assert!(b.allow());
        assert!(!b.failure());
        assert!(b.failure());
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow(), "one trial after the cooldown");
        assert!(!b.allow(), "only one trial at a time");
        b.success();
        assert!(b.allow());
        assert!(!b.is_open());
    }
}
