//! What a client sees of a request: its result first, then its state, followed live.
//!
//! The final state is written after the result and may lag behind it (or, after a crash, wait
//! for a redelivery to write it), so every reader takes the stored result first: a reader never
//! shows an older state beside a result.

use async_nats::{HeaderMap, jetstream::kv};
use bytes::Bytes;
use futures::StreamExt;

use super::rules;
use crate::{
    Error,
    messages::{State, StatusRecord, TaskResult},
    topology::Fleet,
};

/// A request as the client sees it.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The status record; its state is always the result's once there is one.
    pub record: Option<StatusRecord>,
    /// The stored result.
    pub result: Option<TaskResult>,
}

// === impl View ===

impl View {
    /// The state to show: the result's when there is one.
    pub fn state(&self) -> Option<State> {
        rules::shown_state(self.record.as_ref(), self.result.as_ref())
    }

    /// Whether the fleet knows nothing of the request.
    pub fn is_unknown(&self) -> bool {
        self.record.is_none() && self.result.is_none()
    }
}

/// One thing that happened to a followed request.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new state (never a final one: that comes as its result).
    State(Box<StatusRecord>),
    /// The result: the end.
    Result(Box<TaskResult>),
}

/// A request followed live: see [`Fleet::follow`].
pub struct Follow {
    fleet: Fleet,
    id: String,
    results: async_nats::Subscriber,
    watch: kv::Watch,
    first: Option<TaskResult>,
}

// === impl Follow ===

impl Follow {
    /// The next event; `None` when the watch ends (NATS went away).
    pub async fn next(&mut self) -> Option<Result<Event, Error>> {
        if let Some(result) = self.first.take() {
            return Some(Ok(Event::Result(Box::new(result))));
        }
        loop {
            tokio::select! {
                msg = self.results.next() => {
                    let msg = msg?;
                    match serde_json::from_slice::<TaskResult>(&msg.payload) {
                        Ok(r) => return Some(Ok(Event::Result(Box::new(r)))),
                        Err(e) => tracing::debug!(error = %e, "unreadable result message"),
                    }
                }
                entry = self.watch.next() => {
                    let entry = match entry? {
                        Ok(entry) => entry,
                        Err(e) => return Some(Err(Error::js("watch status", e))),
                    };
                    if entry.operation != kv::Operation::Put {
                        continue;
                    }
                    let Ok(record) = serde_json::from_slice::<StatusRecord>(&entry.value) else {
                        continue;
                    };
                    if !record.state.is_terminal() {
                        return Some(Ok(Event::State(Box::new(record))));
                    }
                    // The result is stored before the final state: read it.
                    match self.fleet.result(&self.id).await {
                        Ok(Some(r)) => return Some(Ok(Event::Result(Box::new(r)))),
                        Ok(None) => continue,
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
    }
}

// === impl Fleet ===

impl Fleet {
    /// A request's stored result and status record.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when NATS cannot be read.
    pub async fn view(&self, id: &str) -> Result<View, Error> {
        let result = self.result(id).await?;
        let mut record = self.status_of(id).await?;
        if let Some(r) = &result
            && record
                .as_ref()
                .is_none_or(|rec| rec.state != State::from(r.status))
        {
            // The final state lags behind the result (or was never written): show the state
            // the result stands for.
            record = Some(rules::settled(record, r));
        }
        Ok(View { record, result })
    }

    /// Follows a request: its states as they change, then its result. Call it before
    /// submitting, and nothing is missed.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the subscription or the watch cannot be opened.
    pub async fn follow(&self, id: &str) -> Result<Follow, Error> {
        let results = self
            .client
            .subscribe(self.topology.result_subject(id))
            .await
            .map_err(|e| Error::js("subscribe to the result", e))?;
        let watch = self
            .status
            .watch_with_history(id)
            .await
            .map_err(|e| Error::js("watch status", e))?;
        let first = self.result(id).await?;
        Ok(Follow {
            fleet: self.clone(),
            id: id.to_owned(),
            results,
            watch,
            first,
        })
    }

    /// Every result as it is stored (for `fleet eval`).
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the subscription cannot be opened.
    pub async fn subscribe_results(&self) -> Result<async_nats::Subscriber, Error> {
        self.client
            .subscribe(self.topology.result_subject("*"))
            .await
            .map_err(|e| Error::js("subscribe to results", e))
    }

    /// Publishes a request on `<prefix>.requests` and awaits the stream's acknowledgement.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the requests stream does not acknowledge it.
    pub async fn submit(&self, headers: HeaderMap, payload: Bytes) -> Result<(), Error> {
        let ack = self
            .js
            .publish_with_headers(self.topology.requests_subject(), headers, payload)
            .await
            .map_err(|e| Error::js("publish request", e))?;
        ack.await.map_err(|e| Error::js("store request", e))?;
        Ok(())
    }
}
