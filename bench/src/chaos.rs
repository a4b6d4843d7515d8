//! `fleet-bench chaos`: many requests while workers are SIGKILLed and restarted, the dispatcher
//! is restarted and nats-server is restarted once; then every request must have exactly one
//! stored result.
//!
//! What is counted at the end, from the streams themselves:
//!
//! - **lost**: a request id with no message on `<prefix>.results.<id>` once the fleet has
//!   settled (stream info with a subjects filter gives the count per subject);
//! - **duplicated stored**: an id with more than one stored result;
//! - **duplicated work**: results whose `attempts` is above 1 (the task was delivered, and may
//!   have run, more than once, as a SIGKILL mid-task must cause), and tasks published beyond one
//!   per request (the tasks stream's last sequence; `Nats-Msg-Id` should make this 0).
//!
//! Lost or duplicated-stored results make [`ChaosReport::passed`] false.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;

use fleet_testkit::{NatsServer, Signal, TempDir};

use crate::{Error, load, proc::FleetProcs};

/// The settings of a chaos run; [`ChaosConfig::default`] is the command's default.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// Where `dispatcher` and `worker` are.
    pub bin_dir: PathBuf,
    /// How many requests to publish.
    pub requests: usize,
    /// Over how long they are published, evenly; the chaos happens in this window.
    pub duration: Duration,
    /// Worker processes (each is killed and restarted over and over).
    pub workers: usize,
    /// Shortest and longest pause between two worker kills.
    pub kill_every: (Duration, Duration),
    /// Shortest and longest time a killed worker stays down.
    pub down_for: (Duration, Duration),
    /// Dispatcher restarts, evenly spread (the first by SIGTERM, the others by SIGKILL).
    pub dispatcher_restarts: usize,
    /// Restart nats-server once, halfway (same port and store).
    pub nats_restart: bool,
    /// Restart nats-server with SIGKILL instead of SIGTERM.
    pub nats_sigkill: bool,
    /// `FLEET_MAX_ATTEMPTS` (high, so kills do not end requests `dead`).
    pub max_attempts: u32,
    /// Seed of the random kill times and victims.
    pub seed: u64,
    /// How long to wait for the last results after the chaos window.
    pub settle_timeout: Duration,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            bin_dir: crate::default_bin_dir(),
            requests: 3000,
            duration: Duration::from_secs(30),
            workers: 2,
            kill_every: (Duration::from_millis(300), Duration::from_millis(1500)),
            down_for: (Duration::from_millis(100), Duration::from_millis(800)),
            dispatcher_restarts: 2,
            nats_restart: true,
            nats_sigkill: false,
            max_attempts: 10,
            seed: 0x5eed_f1ee7,
            settle_timeout: Duration::from_secs(120),
        }
    }
}

/// What a chaos run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosReport {
    /// Requests published (each acked by the requests stream, after retries).
    pub requests: usize,
    /// Publishes that failed and were tried again (NATS down, timeouts).
    pub publish_retries: usize,
    /// Worker SIGKILLs.
    pub worker_kills: usize,
    /// Dispatcher restarts.
    pub dispatcher_restarts: usize,
    /// nats-server restarts.
    pub nats_restarts: usize,
    /// Distinct request ids with a stored result.
    pub results: usize,
    /// Requests without a result.
    pub lost: usize,
    /// Requests with more than one stored result.
    pub duplicated_stored: usize,
    /// Results with `attempts` > 1: delivered (and maybe run) more than once.
    pub duplicated_work: usize,
    /// Deliveries beyond the first, summed over all results.
    pub extra_deliveries: u64,
    /// The highest `attempts` of any result.
    pub max_attempts: u64,
    /// Results whose status is not `succeeded` (`dead` when attempts ran out).
    pub not_succeeded: usize,
    /// Task messages published beyond one per request (0 when `Nats-Msg-Id` dedup held).
    pub extra_tasks: i64,
    /// Seconds spent publishing (the chaos window).
    pub chaos_s: f64,
    /// Seconds from the end of the chaos window until every result was there (or the timeout).
    pub settle_s: f64,
    /// Up to 20 lost ids.
    pub lost_ids: Vec<String>,
    /// Up to 20 ids with duplicated results.
    pub duplicated_ids: Vec<String>,
    /// Where the logs are (kept when the run failed).
    pub logs: String,
}

// === impl ChaosReport ===

impl ChaosReport {
    /// No result lost and none stored twice.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.duplicated_stored == 0
    }

    /// The report as a text table.
    pub fn table(&self) -> String {
        let rows: [(&str, String); 14] = [
            ("requests", self.requests.to_string()),
            ("publish retries", self.publish_retries.to_string()),
            ("worker SIGKILLs", self.worker_kills.to_string()),
            ("dispatcher restarts", self.dispatcher_restarts.to_string()),
            ("nats-server restarts", self.nats_restarts.to_string()),
            ("results stored", self.results.to_string()),
            ("LOST", self.lost.to_string()),
            ("DUPLICATED (stored)", self.duplicated_stored.to_string()),
            (
                "duplicated work (attempts>1)",
                self.duplicated_work.to_string(),
            ),
            ("extra deliveries", self.extra_deliveries.to_string()),
            ("max attempts", self.max_attempts.to_string()),
            ("not succeeded", self.not_succeeded.to_string()),
            ("extra task messages", self.extra_tasks.to_string()),
            (
                "chaos / settle s",
                format!("{:.1} / {:.1}", self.chaos_s, self.settle_s),
            ),
        ];
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("{k:<30} {v:>12}\n"));
        }
        out.push_str(if self.passed() {
            "PASS: every request has exactly one stored result\n"
        } else {
            "FAIL: results lost or stored twice\n"
        });
        out
    }
}

/// A small deterministic random source (xorshift64*), so a run can be repeated with its seed.
struct Rng(u64);

// === impl Rng ===

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn between(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(if span == 0 { 0 } else { self.next() % span })
    }
}

/// The subject prefix (and `FLEET_PREFIX`) of a chaos run.
const PREFIX: &str = "chaos";

/// Runs the chaos scenario and counts what was lost or duplicated.
///
/// # Errors
///
/// When the fleet cannot be started or NATS cannot be read at the end; lost or duplicated
/// results are not errors but figures of the report (see [`ChaosReport::passed`]).
///
/// ```no_run
/// # async fn f() -> Result<(), fleet_bench::Error> {
/// use fleet_bench::chaos::{self, ChaosConfig};
/// let report = chaos::run(&ChaosConfig { requests: 300, ..Default::default() }).await?;
/// assert!(report.passed(), "{}", report.table());
/// # Ok(())
/// # }
/// ```
pub async fn run(config: &ChaosConfig) -> Result<ChaosReport, Error> {
    let mut nats = NatsServer::start()?;
    let mut logs = TempDir::new("bench-chaos")?;
    let max_attempts = config.max_attempts.to_string();
    let settings = [
        ("FLEET_PREFIX", PREFIX),
        ("FLEET_TASKS", "text.transform"),
        ("FLEET_ACK_WAIT", "2s"),
        ("FLEET_BACKOFF_MIN", "50ms"),
        ("FLEET_BACKOFF_MAX", "500ms"),
        ("FLEET_DRAIN_GRACE", "2s"),
        ("FLEET_MAX_ATTEMPTS", max_attempts.as_str()),
        ("RUST_LOG", "info"),
    ];
    let workers = config.workers.max(1);
    let mut fleet = FleetProcs::new(
        &config.bin_dir,
        logs.path(),
        &nats.url(),
        &settings,
        workers,
    )?;
    let ready = Duration::from_secs(30);
    for slot in 0..workers {
        fleet.start_worker(slot)?;
        fleet.wait_worker_ready(slot, ready).await?;
    }
    fleet.start_dispatcher()?;
    fleet.wait_dispatcher_ready(ready).await?;

    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(nats.url())
        .await
        .map_err(|e| Error::nats("connect", e))?;
    let js = jetstream::new(client.clone());
    let mut report = ChaosReport {
        requests: config.requests,
        logs: logs.path().display().to_string(),
        ..Default::default()
    };

    // Publish evenly over the window, each publish retried until the stream acks it.
    let retries = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let js = js.clone();
        let retries = retries.clone();
        let (n, window) = (config.requests, config.duration);
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let in_flight = Arc::new(Semaphore::new(256));
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..n {
                tokio::time::sleep_until(start + window.mul_f64(i as f64 / n.max(1) as f64)).await;
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                let (js, retries) = (js.clone(), retries.clone());
                tasks.spawn(async move {
                    let id = format!("c-{i}");
                    while load::publish_request(&js, PREFIX, &id, load::request_body(&id))
                        .await
                        .is_err()
                    {
                        retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    drop(permit);
                });
            }
            while tasks.join_next().await.is_some() {}
        })
    };

    // The chaos: worker kills at random, dispatcher restarts and one nats-server restart at
    // fixed points of the window.
    let mut rng = Rng(config.seed.max(1));
    let start = Instant::now();
    let mut next_kill = start + rng.between(config.kill_every);
    let mut down: Vec<Option<Instant>> = vec![None; workers];
    let restarts = config.dispatcher_restarts;
    let mut dispatcher_at: Vec<Instant> = (1..=restarts)
        .map(|k| start + config.duration.mul_f64(k as f64 / (restarts + 1) as f64))
        .collect();
    let mut nats_at = config
        .nats_restart
        .then(|| start + config.duration.mul_f64(0.5));
    while start.elapsed() < config.duration || !publisher.is_finished() {
        let now = Instant::now();
        let chaos = start.elapsed() < config.duration;
        if chaos && now >= next_kill {
            let slot = rng.below(workers);
            if fleet.kill_worker(slot) {
                report.worker_kills += 1;
                down[slot] = Some(now + rng.between(config.down_for));
            }
            next_kill = now + rng.between(config.kill_every);
        }
        for (slot, until) in down.iter_mut().enumerate() {
            if until.is_some_and(|t| now >= t || !chaos) {
                fleet.start_worker(slot)?;
                *until = None;
            }
        }
        if dispatcher_at.first().is_some_and(|t| now >= *t) {
            dispatcher_at.remove(0);
            if report.dispatcher_restarts == 0 {
                fleet.terminate_dispatcher(Duration::from_secs(5)).await;
            }
            fleet.start_dispatcher()?;
            report.dispatcher_restarts += 1;
        }
        if nats_at.is_some_and(|t| now >= t) {
            nats_at = None;
            let how = if config.nats_sigkill {
                Signal::Kill
            } else {
                Signal::Term
            };
            tokio::task::block_in_place(|| nats.restart(how))?;
            report.nats_restarts += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = publisher.await;
    for (slot, until) in down.iter_mut().enumerate() {
        if until.take().is_some() || !fleet.worker_running(slot) {
            fleet.start_worker(slot)?;
        }
    }
    report.chaos_s = start.elapsed().as_secs_f64();
    report.publish_retries = retries.load(Ordering::Relaxed);

    // Settle: wait until every request has a result (or the timeout).
    let settled = Instant::now();
    let results_stream = format!("{}_RESULTS", PREFIX.to_uppercase());
    loop {
        let count = match js.get_stream(&results_stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.subjects_count).unwrap_or(0),
            Err(_) => 0,
        };
        if count as usize >= config.requests || settled.elapsed() > config.settle_timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    report.settle_s = settled.elapsed().as_secs_f64();

    count(&js, config.requests, &mut report).await?;
    if !report.passed() {
        logs.keep();
    }
    drop(fleet);
    Ok(report)
}

/// Fills the result figures from the results and tasks streams.
async fn count(js: &jetstream::Context, n: usize, report: &mut ChaosReport) -> Result<(), Error> {
    let upper = PREFIX.to_uppercase();
    let stream = js
        .get_stream(format!("{upper}_RESULTS"))
        .await
        .map_err(|e| Error::nats("open results stream", e))?;
    let results_prefix = format!("{PREFIX}.results.");
    let per_subject: HashMap<String, usize> = stream
        .info_with_subjects(format!("{results_prefix}>"))
        .await
        .map_err(|e| Error::nats("results per subject", e))?
        .try_collect()
        .await
        .map_err(|e| Error::nats("results per subject", e))?;
    report.results = per_subject.len();
    for i in 0..n {
        let id = format!("c-{i}");
        match per_subject.get(&format!("{results_prefix}{id}")) {
            None => {
                report.lost += 1;
                if report.lost_ids.len() < 20 {
                    report.lost_ids.push(id);
                }
            }
            Some(&c) if c > 1 => {
                report.duplicated_stored += 1;
                if report.duplicated_ids.len() < 20 {
                    report.duplicated_ids.push(id);
                }
            }
            Some(_) => {}
        }
    }

    // Read every stored result for its attempts and status.
    let total = stream.cached_info().state.messages;
    let consumer = stream
        .create_consumer(pull::OrderedConfig::default())
        .await
        .map_err(|e| Error::nats("read results", e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| Error::nats("read results", e))?;
    let mut read = 0;
    while read < total {
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        let Ok(Some(Ok(msg))) = next else { break };
        read += 1;
        let Ok(result) = serde_json::from_slice::<Value>(&msg.payload) else {
            report.not_succeeded += 1;
            continue;
        };
        let attempts = result.get("attempts").and_then(Value::as_u64).unwrap_or(0);
        if attempts > 1 {
            report.duplicated_work += 1;
            report.extra_deliveries += attempts - 1;
        }
        report.max_attempts = report.max_attempts.max(attempts);
        if result.get("status").and_then(Value::as_str) != Some("succeeded") {
            report.not_succeeded += 1;
        }
    }

    let mut tasks = js
        .get_stream(format!("{upper}_TASKS"))
        .await
        .map_err(|e| Error::nats("open tasks stream", e))?;
    let last = tasks
        .info()
        .await
        .map_err(|e| Error::nats("tasks stream info", e))?
        .state
        .last_sequence;
    report.extra_tasks = last as i64 - n as i64;
    Ok(())
}
