//! What a user of the fleet sees over NATS: publish requests, read results, states, dead letters.
//!
//! Everything is read through the contract's names (`fleet.requests`, `FLEET_RESULTS`,
//! `fleet-status`, `FLEET_DLQ`, `fleet-catalog`) and handled as [`serde_json::Value`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::dlq::DeadLetter;
use crate::watch::StatusWatch;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, Context, message::StreamMessage};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

/// The request subject.
pub const REQUESTS: &str = "fleet.requests";
/// The results stream.
pub const RESULTS_STREAM: &str = "FLEET_RESULTS";
/// The dead-letter stream.
pub const DLQ_STREAM: &str = "FLEET_DLQ";
/// The status bucket.
pub const STATUS_BUCKET: &str = "fleet-status";
/// The catalog bucket.
pub const CATALOG_BUCKET: &str = "fleet-catalog";

/// How long a publish keeps retrying (long enough to ride out a server restart).
const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(30);

/// A NATS connection with the fleet's view on it.
#[derive(Debug, Clone)]
pub struct Client {
    /// Core NATS.
    nats: async_nats::Client,
    /// JetStream on the same connection.
    js: Context,
}

// === impl Client ===

impl Client {
    /// Connects to `url`, retrying for up to 15 s.
    ///
    /// # Panics
    ///
    /// When no connection can be made.
    pub async fn connect(url: &str) -> Self {
        let nats = crate::poll_until(Duration::from_secs(15), || async {
            let mut options =
                async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2));
            // async-nats ignores credentials written into the URL.
            let rest = url.split_once("://").map_or(url, |(_, r)| r);
            if let Some((userinfo, _)) = rest.rsplit_once('@') {
                options = match userinfo.split_once(':') {
                    Some((user, pass)) => options.user_and_password(user.into(), pass.into()),
                    None => options.token(userinfo.into()),
                };
            }
            options.connect(url).await.ok()
        })
        .await
        .unwrap_or_else(|| panic!("cannot connect to {url}"));
        let js = jetstream::new(nats.clone());
        Self { nats, js }
    }

    /// Wraps a connection the test made itself (TLS, say).
    pub fn from_nats(nats: async_nats::Client) -> Self {
        let js = jetstream::new(nats.clone());
        Self { nats, js }
    }

    /// The core NATS client.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &Context {
        &self.js
    }

    /// Publishes plain text on `fleet.requests`; returns the stream sequence.
    pub async fn publish_text(&self, text: &str) -> u64 {
        self.publish(HeaderMap::new(), Bytes::copy_from_slice(text.as_bytes()))
            .await
    }

    /// Publishes a JSON request on `fleet.requests`; returns the stream sequence.
    pub async fn publish_json(&self, request: &Value) -> u64 {
        self.publish(HeaderMap::new(), Bytes::from(request.to_string()))
            .await
    }

    /// Publishes raw bytes with a `Nats-Msg-Id` header; returns the stream sequence.
    pub async fn publish_with_id(&self, id: &str, payload: impl Into<Bytes>) -> u64 {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        self.publish(headers, payload.into()).await
    }

    /// Publishes on `fleet.requests` through JetStream, awaiting the ack and retrying on any
    /// error for up to 30 s (so a publish survives a server restart).
    ///
    /// # Panics
    ///
    /// When no publish is acked within 30 s.
    pub async fn publish(&self, headers: HeaderMap, payload: Bytes) -> u64 {
        let deadline = tokio::time::Instant::now() + PUBLISH_RETRY_FOR;
        loop {
            let error = match self
                .js
                .publish_with_headers(REQUESTS, headers.clone(), payload.clone())
                .await
            {
                Ok(ack) => match ack.await {
                    Ok(ack) => return ack.sequence,
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "publishing on {REQUESTS} kept failing for 30 s; last error: {error}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The result stored on `fleet.results.<id>`, if any (with its stream sequence).
    pub async fn result_message(&self, id: &str) -> Option<StreamMessage> {
        let stream = self.js.get_stream_no_info(RESULTS_STREAM).await.ok()?;
        stream
            .get_last_raw_message_by_subject(&format!("fleet.results.{id}"))
            .await
            .ok()
    }

    /// The result stored for `id`, parsed as JSON.
    ///
    /// # Panics
    ///
    /// When the stored result is not JSON.
    pub async fn result(&self, id: &str) -> Option<Value> {
        let message = self.result_message(id).await?;
        Some(parse_json(&message.payload, "a result"))
    }

    /// Waits up to `timeout` for the result of `id`.
    ///
    /// # Panics
    ///
    /// When there is none by then (the panic says the request's last state).
    pub async fn wait_result(&self, id: &str, timeout: Duration) -> Value {
        self.wait_result_where(id, timeout, |_| true).await
    }

    /// Waits up to `timeout` for a result of `id` for which `pred` holds (e.g. after a replay).
    ///
    /// # Panics
    ///
    /// When there is none by then.
    pub async fn wait_result_where(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let found = crate::poll_until(timeout, || async {
            self.result(id).await.filter(|r| pred(r))
        })
        .await;
        match found {
            Some(result) => result,
            None => panic!(
                "no (matching) result for request {id} within {timeout:?}; last result: {}; status: {}",
                self.result(id)
                    .await
                    .map_or("none".to_string(), |v| v.to_string()),
                self.status(id)
                    .await
                    .map_or("none".to_string(), |v| v.to_string()),
            ),
        }
    }

    /// Every result in `FLEET_RESULTS`, in stream order.
    pub async fn results(&self) -> Vec<Value> {
        self.stream_messages(RESULTS_STREAM)
            .await
            .iter()
            .map(|m| parse_json(&m.payload, "a result"))
            .collect()
    }

    /// Waits up to `timeout` for a result (of any id) for which `pred` holds: how tests find the
    /// result of a request whose id the fleet generated.
    ///
    /// # Panics
    ///
    /// When there is none by then (the panic lists the results seen).
    pub async fn wait_any_result(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let found = crate::poll_until(timeout, || async {
            self.results().await.into_iter().find(|r| pred(r))
        })
        .await;
        match found {
            Some(result) => result,
            None => panic!(
                "no matching result within {timeout:?}; results stored: {:#?}",
                self.results().await
            ),
        }
    }

    /// How many results are stored for `id` (the contract says: exactly one).
    pub async fn result_count(&self, id: &str) -> usize {
        self.result_counts_filtered(&format!("fleet.results.{id}"))
            .await
            .values()
            .sum()
    }

    /// How many results are stored per request id, for every id in `FLEET_RESULTS`.
    pub async fn result_counts(&self) -> HashMap<String, usize> {
        self.result_counts_filtered("fleet.results.>").await
    }

    /// Stored message counts per subject under `filter`, keyed by request id.
    async fn result_counts_filtered(&self, filter: &str) -> HashMap<String, usize> {
        let Ok(stream) = self.js.get_stream_no_info(RESULTS_STREAM).await else {
            return HashMap::new();
        };
        let mut counts = HashMap::new();
        let Ok(mut subjects) = stream.info_with_subjects(filter).await else {
            return counts;
        };
        while let Some(entry) = subjects.next().await {
            match entry {
                Ok((subject, count)) => {
                    let id = subject
                        .strip_prefix("fleet.results.")
                        .unwrap_or(&subject)
                        .to_string();
                    *counts.entry(id).or_insert(0) += count;
                }
                Err(e) => panic!("listing subjects of {RESULTS_STREAM}: {e}"),
            }
        }
        counts
    }

    /// The status record of `id` in `fleet-status`.
    ///
    /// # Panics
    ///
    /// When the stored value is not JSON.
    pub async fn status(&self, id: &str) -> Option<Value> {
        let kv = self.js.get_key_value(STATUS_BUCKET).await.ok()?;
        let value = kv.get(id).await.ok()??;
        Some(parse_json(&value, "a status record"))
    }

    /// Rewrites the status record of `id` with `change` applied, as a process of the fleet
    /// would (a compare-and-set on the revision read).
    ///
    /// # Panics
    ///
    /// When there is no record, or it cannot be written.
    pub async fn change_status(&self, id: &str, change: impl FnOnce(&mut Value)) {
        let kv = self
            .js
            .get_key_value(STATUS_BUCKET)
            .await
            .expect("the status bucket");
        let entry = kv
            .entry(id)
            .await
            .expect("read the status")
            .expect("a status record");
        let mut record = parse_json(&entry.value, "a status record");
        change(&mut record);
        kv.update(id, record.to_string().into(), entry.revision)
            .await
            .expect("write the status");
    }

    /// Waits up to `timeout` for the status of `id` to satisfy `pred`.
    ///
    /// # Panics
    ///
    /// When it does not by then.
    pub async fn wait_status(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let found = crate::poll_until(timeout, || async {
            self.status(id).await.filter(|s| pred(s))
        })
        .await;
        match found {
            Some(status) => status,
            None => panic!(
                "status of {id} never matched within {timeout:?}; last: {}",
                self.status(id)
                    .await
                    .map_or("none".to_string(), |v| v.to_string())
            ),
        }
    }

    /// Waits up to [`crate::WAIT`] for the status of `id` to reach `state`, and returns it.
    ///
    /// The status record may trail the result by a moment (the result is published first), so
    /// tests wait for a state rather than read it once.
    ///
    /// # Panics
    ///
    /// When it does not get there in time.
    pub async fn wait_state(&self, id: &str, state: &str) -> Value {
        self.wait_status(id, crate::WAIT, |s| s["state"] == state)
            .await
    }

    /// Starts recording every value the status of `id` takes from now on (start it before
    /// publishing to see every state).
    ///
    /// # Panics
    ///
    /// When the `fleet-status` bucket does not exist yet (wait for the fleet to be ready first).
    pub async fn watch_status(&self, id: &str) -> StatusWatch {
        let kv = self
            .js
            .get_key_value(STATUS_BUCKET)
            .await
            .expect("the fleet-status bucket exists (is the fleet ready?)");
        let mut watch = kv
            .watch_with_history(id)
            .await
            .expect("watch a fleet-status key");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(entry) = watch.next().await {
                let Ok(entry) = entry else { continue };
                if let Ok(value) = serde_json::from_slice::<Value>(&entry.value) {
                    sink.lock().expect("status watch").push(value);
                }
            }
        });
        StatusWatch { seen, task }
    }

    /// Every dead letter in `FLEET_DLQ`, in stream order.
    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.stream_messages(DLQ_STREAM)
            .await
            .into_iter()
            .map(DeadLetter::from)
            .collect()
    }

    /// Waits up to `timeout` for a dead letter matching `pred`.
    ///
    /// # Panics
    ///
    /// When there is none by then.
    pub async fn wait_dead_letter(
        &self,
        timeout: Duration,
        pred: impl Fn(&DeadLetter) -> bool,
    ) -> DeadLetter {
        let found = crate::poll_until(timeout, || async {
            self.dead_letters().await.into_iter().find(|d| pred(d))
        })
        .await;
        match found {
            Some(letter) => letter,
            None => panic!(
                "no matching dead letter within {timeout:?}; DLQ holds: {:#?}",
                self.dead_letters().await
            ),
        }
    }

    /// The catalog entry of `task` in `fleet-catalog`, if published.
    pub async fn catalog_entry(&self, task: &str) -> Option<Value> {
        let kv = self.js.get_key_value(CATALOG_BUCKET).await.ok()?;
        let value = kv.get(task).await.ok()??;
        serde_json::from_slice(&value).ok()
    }

    /// Does the durable consumer `name` exist on `stream`?
    pub async fn consumer_exists(&self, stream: &str, name: &str) -> bool {
        let Ok(stream) = self.js.get_stream_no_info(stream).await else {
            return false;
        };
        stream.consumer_info(name).await.is_ok()
    }

    /// Every message stored in `stream`, read by sequence.
    async fn stream_messages(&self, name: &str) -> Vec<StreamMessage> {
        let Ok(stream) = self.js.get_stream_no_info(name).await else {
            return Vec::new();
        };
        let Ok(info) = stream.get_info().await else {
            return Vec::new();
        };
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut messages = Vec::new();
        if info.state.messages == 0 {
            return messages;
        }
        for seq in first..=last {
            if let Ok(message) = stream.get_raw_message(seq).await {
                messages.push(message);
            }
        }
        messages
    }
}

/// Parses `bytes` as JSON, panicking with the text when it is not (a contract violation).
fn parse_json(bytes: &[u8], what: &str) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{what} is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    })
}
