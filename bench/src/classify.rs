//! Dispatcher throughput when an LLM routes every request, with a scripted OpenAI-compatible
//! server that answers after a fixed delay (300 ms by default), at several concurrency settings.
//!
//! The dispatcher's real async-openai client calls the scripted server over HTTP; the cache is
//! off so every request costs one call. With `FLEET_CONCURRENCY` (= `FLEET_LLM_CONCURRENCY`)
//! requests in flight, throughput should approach concurrency / delay.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::HeaderMap;
use axum::{Json, Router, extract::State, routing::post};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

use fleet_testkit::{NatsServer, TempDir};

use crate::{Error, proc::FleetProcs};

/// Settings of the routing benchmark.
#[derive(Debug, Clone)]
pub struct ClassifyConfig {
    /// Where `dispatcher` and `worker` are.
    pub bin_dir: PathBuf,
    /// Requests per concurrency setting.
    pub requests: usize,
    /// The concurrency settings to measure.
    pub concurrency: Vec<usize>,
    /// How long the scripted LLM takes to answer.
    pub llm_delay: Duration,
    /// How long one measurement may take.
    pub timeout: Duration,
}

/// One measured setting.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifyRow {
    /// `FLEET_CONCURRENCY` and `FLEET_LLM_CONCURRENCY` of the dispatcher.
    pub concurrency: usize,
    /// Requests completed.
    pub completed: usize,
    /// Requests per second, first publish to last result.
    pub throughput_rps: f64,
    /// The ceiling `concurrency / delay`.
    pub ideal_rps: f64,
    /// LLM calls the scripted server answered.
    pub llm_calls: u64,
}

/// The scripted LLM: counts calls, waits, answers with a valid routing.
async fn complete(
    State((delay, calls)): State<(Duration, Arc<AtomicU64>)>,
    Json(body): Json<Value>,
) -> Json<Value> {
    calls.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(delay).await;
    let model = body["model"].as_str().unwrap_or("scripted").to_owned();
    let content =
        json!({"task": "text.transform", "input": {"text": "x", "op": "upper"}}).to_string();
    Json(json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 200, "completion_tokens": 20, "total_tokens": 220}
    }))
}

/// Runs the routing benchmark: one fresh fleet per concurrency setting.
///
/// # Errors
///
/// [`Error`] when a process, the scripted server or NATS fails, or results do not arrive in time.
pub async fn run(config: &ClassifyConfig) -> Result<Vec<ClassifyRow>, Error> {
    let calls = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/v1/chat/completions", post(complete))
        .with_state((config.llm_delay, calls.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let llm_url = format!("http://{}/v1", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let mut rows = Vec::new();
    for &concurrency in &config.concurrency {
        let work = TempDir::new("bench-classify")?;
        let nats = NatsServer::start()?;
        let c = concurrency.to_string();
        let settings = [
            ("OPENAI_BASE_URL", llm_url.as_str()),
            ("FLEET_LLM_MODEL", "scripted"),
            ("FLEET_LLM_RETRIES", "0"),
            ("FLEET_CLASSIFY_CACHE_SIZE", "0"),
            ("FLEET_CONCURRENCY", c.as_str()),
            ("FLEET_LLM_CONCURRENCY", c.as_str()),
            ("RUST_LOG", "warn"),
        ];
        let mut procs = FleetProcs::new(&config.bin_dir, work.path(), &nats.url(), &settings, 1)?;
        procs.start_all(Duration::from_secs(30)).await?;

        let (js, mut results) = crate::load::results_client(&nats.url()).await?;
        let before = calls.load(Ordering::Relaxed);
        let start = Instant::now();
        for i in 0..config.requests {
            let id = format!("c{concurrency}-{i}");
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let ack = js
                .publish_with_headers(
                    "fleet.requests",
                    headers,
                    // Words no catalog pattern is sure of (a certain pattern would route
                    // without the LLM), with the scripted answer's `x` in them (grounded).
                    format!("could you do the thing with x, number {i}").into(),
                )
                .await
                .map_err(|e| Error::nats("publish request", e))?;
            ack.await.map_err(|e| Error::nats("store request", e))?;
        }
        let mut seen = HashSet::new();
        let deadline = tokio::time::Instant::now() + config.timeout;
        while seen.len() < config.requests {
            match tokio::time::timeout_at(deadline, results.next()).await {
                Ok(Some(msg)) => {
                    seen.insert(msg.subject.to_string());
                }
                Ok(None) => break,
                Err(_) => {
                    return Err(Error::Timeout(format!(
                        "{} of {} results at concurrency {concurrency}",
                        seen.len(),
                        config.requests
                    )));
                }
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        rows.push(ClassifyRow {
            concurrency,
            completed: seen.len(),
            throughput_rps: seen.len() as f64 / elapsed,
            ideal_rps: concurrency as f64 / config.llm_delay.as_secs_f64(),
            llm_calls: calls.load(Ordering::Relaxed) - before,
        });
        drop(procs);
        drop(nats);
        drop(work);
    }
    Ok(rows)
}

/// The rows as a table.
pub fn table(rows: &[ClassifyRow], delay: Duration) -> String {
    let mut out = format!(
        "LLM routing, scripted LLM answering after {} ms\n{:>12} {:>10} {:>12} {:>12} {:>10}\n",
        delay.as_millis(),
        "concurrency",
        "requests",
        "req/s",
        "ideal req/s",
        "LLM calls"
    );
    for r in rows {
        out.push_str(&format!(
            "{:>12} {:>10} {:>12.1} {:>12.1} {:>10}\n",
            r.concurrency, r.completed, r.throughput_rps, r.ideal_rps, r.llm_calls
        ));
    }
    out
}
