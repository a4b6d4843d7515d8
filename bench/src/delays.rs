//! How late delayed requests start: `--requests` requests (1,000 by default), each with a
//! `not_before` spread evenly over `--spread` after a lead time, published at once to an idle
//! fleet (dispatcher + one worker, default settings); lateness is when each request's result
//! arrived minus its `not_before`. A result is stored right after its task starts (a
//! `text.transform` takes microseconds), so this bounds how late the task started from above.
//!
//! The fleet waits with no timer or loop of its own: the dispatcher hands each request's message
//! back to JetStream with the time left as the NAK delay, and routes it when it comes back.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use async_nats::HeaderMap;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use fleet_testkit::{NatsServer, TempDir};

use crate::{Error, proc::FleetProcs};

/// Settings of the delay benchmark.
#[derive(Debug, Clone)]
pub struct DelaysConfig {
    /// Where `dispatcher` and `worker` are.
    pub bin_dir: PathBuf,
    /// Delayed requests.
    pub requests: usize,
    /// Time from the first publish to the first `not_before` (all are published before it).
    pub lead: Duration,
    /// The `not_before` times are spread evenly over this window.
    pub spread: Duration,
    /// How long to wait for the last result after the last `not_before`.
    pub timeout: Duration,
}

/// What the delay benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct DelaysReport {
    /// Delayed requests published.
    pub requests: usize,
    /// Results received.
    pub completed: usize,
    /// Results that came before their `not_before` (must be 0).
    pub early: usize,
    /// Median lateness, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile lateness, milliseconds.
    pub p99_ms: f64,
    /// Largest lateness, milliseconds.
    pub max_ms: f64,
    /// How long publishing all of them took, milliseconds.
    pub publish_ms: f64,
}

// === impl DelaysReport ===

impl DelaysReport {
    /// The report as a small table.
    pub fn table(&self) -> String {
        format!(
            "delayed requests: {} sent, {} done, {} early\nlateness (result - not_before): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (publishing took {:.0} ms)",
            self.requests,
            self.completed,
            self.early,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.publish_ms
        )
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs the delay benchmark on a fresh nats-server and fleet.
///
/// # Errors
///
/// [`Error`] when a process or NATS fails, or results do not arrive in time.
pub async fn run(config: &DelaysConfig) -> Result<DelaysReport, Error> {
    let work = TempDir::new("bench-delays")?;
    let nats = NatsServer::start()?;
    let settings = [("RUST_LOG", "warn")];
    let mut procs = FleetProcs::new(&config.bin_dir, work.path(), &nats.url(), &settings, 1)?;
    procs.start_all(Duration::from_secs(30)).await?;

    let (js, mut results) = crate::load::results_client(&nats.url()).await?;

    let n = config.requests.max(1);
    let first = OffsetDateTime::now_utc() + config.lead;
    let step = config.spread / u32::try_from(n).unwrap_or(u32::MAX);
    let mut due: HashMap<String, OffsetDateTime> = HashMap::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let id = format!("delay-{i}");
        let at = first + step * u32::try_from(i).unwrap_or(u32::MAX);
        let body = json!({
            "id": id,
            "task": "text.transform",
            "input": {"text": format!("item {i}"), "op": "upper"},
            "not_before": at.format(&Rfc3339).map_err(|e| Error::Timeout(e.to_string()))?,
        });
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        let ack = js
            .publish_with_headers("fleet.requests", headers, body.to_string().into())
            .await
            .map_err(|e| Error::nats("publish request", e))?;
        ack.await.map_err(|e| Error::nats("store request", e))?;
        due.insert(format!("fleet.results.{id}"), at);
    }
    let publish_ms = started.elapsed().as_secs_f64() * 1000.0;

    let mut lateness = Vec::with_capacity(n);
    let mut early = 0;
    let deadline = tokio::time::Instant::now() + config.lead + config.spread + config.timeout;
    while lateness.len() < n {
        match tokio::time::timeout_at(deadline, results.next()).await {
            Ok(Some(msg)) => {
                let arrived = OffsetDateTime::now_utc();
                if let Some(at) = due.remove(msg.subject.as_str()) {
                    let late = (arrived - at).as_seconds_f64() * 1000.0;
                    if late < 0.0 {
                        early += 1;
                    }
                    lateness.push(late);
                }
            }
            Ok(None) => break,
            Err(_) => {
                return Err(Error::Timeout(format!(
                    "{} of {n} delayed requests done",
                    lateness.len()
                )));
            }
        }
    }
    drop(procs);
    drop(nats);
    drop(work);
    lateness.sort_by(f64::total_cmp);
    Ok(DelaysReport {
        requests: n,
        completed: lateness.len(),
        early,
        p50_ms: percentile(&lateness, 50.0),
        p99_ms: percentile(&lateness, 99.0),
        max_ms: lateness.last().copied().unwrap_or(f64::NAN),
        publish_ms,
    })
}
