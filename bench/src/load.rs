//! The load generator: publishes `text.transform` requests and waits for their results.
//!
//! It works against anything that speaks the fleet's subjects under a prefix: the fleet itself
//! and the bare relays of [`crate::relay`]. Results are seen with a core subscription on
//! `<prefix>.results.>` taken before the first publish; a request's latency runs from just before
//! its publish to the arrival of its result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap, jetstream};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::Error;

/// How requests are submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// All at once, each publish awaiting its ack concurrently.
    Burst,
    /// A new request each time a result arrives, this many in flight.
    Concurrent(usize),
}

/// What one load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// Requests that got a result.
    pub completed: usize,
    /// From the first publish to the last result, in seconds.
    pub elapsed_s: f64,
    /// `completed / elapsed`.
    pub throughput_rps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Mean latency, milliseconds.
    pub mean_ms: f64,
}

/// The body of a request `id`: explicit `text.transform`, as the SPEC writes it.
pub fn request_body(id: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"id":"{id}","task":"text.transform","input":{{"text":"x","op":"upper"}}}}"#
    ))
}

/// Publishes the request `body` with `Nats-Msg-Id: id` and awaits the stream's ack.
///
/// # Errors
///
/// [`Error::Nats`] when the publish or its ack fails.
pub async fn publish_request(
    js: &jetstream::Context,
    prefix: &str,
    id: &str,
    body: Bytes,
) -> Result<(), Error> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    let ack = js
        .publish_with_headers(format!("{prefix}.requests"), headers, body)
        .await
        .map_err(|e| Error::nats("publish request", e))?;
    ack.await.map_err(|e| Error::nats("store request", e))?;
    Ok(())
}

/// Submits `n` requests with ids `<tag>-<i>` to `<prefix>.requests` and waits for every result.
///
/// # Errors
///
/// [`Error::Timeout`] when not every result arrives within `timeout`; [`Error::Nats`] when a
/// publish fails.
pub async fn run(
    client: &Client,
    prefix: &str,
    tag: &str,
    n: usize,
    mode: Mode,
    timeout: Duration,
) -> Result<LoadResult, Error> {
    let js = jetstream::new(client.clone());
    let results_prefix = format!("{prefix}.results.");
    let mut sub = client
        .subscribe(format!("{results_prefix}>"))
        .await
        .map_err(|e| Error::nats("subscribe to results", e))?;
    client.flush().await.map_err(|e| Error::nats("flush", e))?;

    let sent: Arc<Mutex<HashMap<String, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(n)));
    let window = match mode {
        Mode::Burst => n.max(1),
        Mode::Concurrent(c) => c.max(1),
    };
    let permits = Arc::new(Semaphore::new(window));
    let start = Instant::now();

    let collector = {
        let sent = sent.clone();
        let permits = permits.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n);
            let mut last = Instant::now();
            while latencies.len() < n {
                let Some(msg) = sub.next().await else { break };
                let Some(id) = msg.subject.as_str().strip_prefix(results_prefix.as_str()) else {
                    continue;
                };
                let sent_at = match sent.lock() {
                    Ok(mut map) => map.remove(id),
                    Err(poisoned) => poisoned.into_inner().remove(id),
                };
                if let Some(at) = sent_at {
                    last = Instant::now();
                    latencies.push(last - at);
                    permits.add_permits(1);
                }
            }
            (latencies, last)
        })
    };

    let publisher = {
        let prefix = prefix.to_owned();
        let tag = tag.to_owned();
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut acks = tokio::task::JoinSet::new();
            for i in 0..n {
                match permits.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
                let id = format!("{tag}-{i}");
                match sent.lock() {
                    Ok(mut map) => map.insert(id.clone(), Instant::now()),
                    Err(poisoned) => poisoned.into_inner().insert(id.clone(), Instant::now()),
                };
                let js = js.clone();
                let prefix = prefix.clone();
                acks.spawn(
                    async move { publish_request(&js, &prefix, &id, request_body(&id)).await },
                );
                while let Some(done) = acks.try_join_next() {
                    if let Ok(Err(e)) = done {
                        return Err(e);
                    }
                }
            }
            while let Some(done) = acks.join_next().await {
                if let Ok(Err(e)) = done {
                    return Err(e);
                }
            }
            Ok(())
        })
    };

    let collected = tokio::time::timeout(timeout, collector).await;
    if collected.is_err() {
        // The publisher may wait for permits that never come back.
        publisher.abort();
    }
    if let Ok(Err(e)) = publisher.await {
        return Err(e);
    }
    let (mut latencies, last) = match collected {
        Ok(Ok(done)) => done,
        _ => {
            let missing = sent.lock().map(|m| m.len()).unwrap_or(0);
            return Err(Error::Timeout(format!(
                "{missing} of {n} results of `{tag}` missing after {timeout:?}"
            )));
        }
    };
    latencies.sort();
    let elapsed = (last - start).as_secs_f64().max(1e-9);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map(|d| ms(*d))
            .unwrap_or(0.0)
    };
    let mean = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|d| ms(*d)).sum::<f64>() / latencies.len() as f64
    };
    Ok(LoadResult {
        completed: latencies.len(),
        elapsed_s: elapsed,
        throughput_rps: latencies.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        mean_ms: mean,
    })
}

/// A client of the fleet at `url` for a benchmark: JetStream on a new connection, and a
/// subscription to every result (`fleet.results.*`) on it, flushed so none is missed.
///
/// # Errors
///
/// [`Error`] when NATS cannot be reached or subscribed to.
pub async fn results_client(
    url: &str,
) -> Result<(async_nats::jetstream::Context, async_nats::Subscriber), Error> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| Error::nats("connect", e))?;
    let js = async_nats::jetstream::new(client.clone());
    let results = client
        .subscribe("fleet.results.*")
        .await
        .map_err(|e| Error::nats("subscribe to results", e))?;
    client.flush().await.map_err(|e| Error::nats("flush", e))?;
    Ok((js, results))
}
