//! Recording the states a request goes through (a watch on its `fleet-status` key).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// The values a status record took, recorded by a KV watch.
#[derive(Debug)]
pub struct StatusWatch {
    /// Values in the order they were seen.
    pub(crate) seen: Arc<Mutex<Vec<Value>>>,
    /// The watch task, aborted on drop.
    pub(crate) task: tokio::task::JoinHandle<()>,
}

// === impl StatusWatch ===

impl StatusWatch {
    /// Every value seen so far.
    pub fn values(&self) -> Vec<Value> {
        self.seen.lock().expect("status watch").clone()
    }

    /// The `state` of every value seen so far, in order.
    pub fn states(&self) -> Vec<String> {
        self.values()
            .iter()
            .map(|v| v["state"].as_str().unwrap_or("<no state>").to_string())
            .collect()
    }

    /// Waits up to `timeout` for a value whose `state` is `state`, and returns it.
    ///
    /// # Panics
    ///
    /// When none is seen by then.
    pub async fn wait_for_state(&self, state: &str, timeout: Duration) -> Value {
        let found = crate::poll_until(timeout, || async {
            self.values().into_iter().find(|v| v["state"] == state)
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "state {state} not seen within {timeout:?}; states seen: {:?}",
                self.states()
            )
        })
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
