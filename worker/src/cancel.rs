//! Cancellation of running tasks: `fleet cancel` stores the request's `cancelled` result, then
//! sends `<prefix>.cancel.<id>` on core NATS; every worker listens, and the one running that
//! request cancels its signal, which stops the task (its future is dropped, see
//! [`crate::tasks::cancellation`]).
//!
//! A notice for a request that is not running here is remembered for [`REMEMBERED`], so a task
//! taken from the stream a moment later (a cancellation while `queued`) does not start. A
//! worker that missed the notice (started after it) runs the task, and its result loses to the
//! stored `cancelled` one: the one-result rule keeps the outcome right either way.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fleet_common::topology::Fleet;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// How long a notice for a request not running here is remembered.
pub const REMEMBERED: Duration = Duration::from_secs(600);

/// The requests running in this worker, with their cancellation signals, and recent notices.
#[derive(Debug, Clone, Default)]
pub struct Cancels {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Running requests by id.
    running: HashMap<String, CancellationToken>,
    /// Notices for requests that were not running here, by id, with when they came.
    noticed: HashMap<String, Instant>,
}

// === impl Cancels ===

impl Cancels {
    /// Registers a request about to run; `None` when it was cancelled already (do not run it).
    pub fn start(&self, id: &str) -> Option<CancellationToken> {
        let mut inner = self.lock();
        // Only a recent notice counts: an id may come back once its result has expired.
        if inner
            .noticed
            .get(id)
            .is_some_and(|at| at.elapsed() < REMEMBERED)
        {
            return None;
        }
        let token = CancellationToken::new();
        inner.running.insert(id.to_owned(), token.clone());
        Some(token)
    }

    /// Forgets a request that stopped running.
    pub fn finish(&self, id: &str) {
        self.lock().running.remove(id);
    }

    /// Handles a notice: stops the request if it runs here, else remembers it for a while.
    pub fn cancel(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(token) = inner.running.get(id) {
            token.cancel();
            return;
        }
        let now = Instant::now();
        if inner.noticed.len() >= 1024 {
            inner
                .noticed
                .retain(|_, at| now.duration_since(*at) < REMEMBERED);
        }
        inner.noticed.insert(id.to_owned(), now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Listens for cancellation notices until `stop`; runs for the worker's life.
    ///
    /// # Errors
    ///
    /// [`fleet_common::Error::JetStream`] when the subscription cannot be made.
    pub async fn listen(
        &self,
        fleet: &Fleet,
        stop: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, fleet_common::Error> {
        let mut notices = fleet.cancellations().await?;
        let prefix = fleet.topology().cancel_subject("");
        let cancels = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    notice = notices.next() => match notice {
                        Some(msg) => {
                            if let Some(id) = msg.subject.strip_prefix(prefix.as_str()) {
                                tracing::info!(request_id = id, "cancellation notice");
                                cancels.cancel(id);
                            }
                        }
                        None => return,
                    },
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_request_is_told_and_a_later_one_never_starts() {
        let cancels = Cancels::default();
        let token = cancels.start("a").expect("not cancelled");
        cancels.cancel("a");
        assert!(token.is_cancelled());
        cancels.finish("a");
        cancels.cancel("b");
        assert!(cancels.start("b").is_none());
        assert!(cancels.start("c").is_some());
    }
}
