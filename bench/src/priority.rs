//! Priority under a backlog: how many queued requests start before a `high` one that arrives
//! behind them, and whether `low` work keeps a share of the workers under a `high` backlog.
//!
//! Each round runs on a fresh nats-server and fleet (dispatcher + `--workers` workers, default
//! settings) whose task is `github.repo_info` against a fake GitHub that answers after
//! `--task-delay` (a slow external API: the workers' slots fill up, which is when priority
//! matters). A task starts when its call reaches the fake, so the fake's clock gives the order
//! tasks started in.
//!
//! - `behind`: `--backlog` requests of one priority are queued while no worker runs, then one
//!   probe request; then the workers start. Reported: how many backlog requests started before
//!   the probe. Rounds: low backlog + high probe, normal backlog + high probe, and the control,
//!   normal backlog + normal probe (first in, first out: it starts last).
//! - `mid-drain`: the same low backlog, the workers already working it off; the high probe is
//!   published once `--backlog / 5` results are in. Reported: backlog requests that started
//!   after the probe was published and before it started.
//! - `starvation`: `--backlog` high and `--backlog / 10` low requests queued, then the workers
//!   start. Reported: where the first low started, and how many lows started while high work
//!   was still waiting.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use async_nats::{HeaderMap, jetstream};
use fleet_testkit::{FakeGithub, NatsServer, Repo, TempDir};
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use serde_json::json;

use crate::{Error, proc::FleetProcs};

/// The owner of every benchmark repo (`prio/<id>`).
const OWNER: &str = "prio";

/// Settings of the priority benchmark.
#[derive(Debug, Clone)]
pub struct PriorityConfig {
    /// Where `dispatcher` and `worker` are.
    pub bin_dir: PathBuf,
    /// Requests queued ahead of the probe.
    pub backlog: usize,
    /// Worker processes.
    pub workers: usize,
    /// How long each task's GitHub call takes.
    pub task_delay: Duration,
    /// How long one round may take.
    pub timeout: Duration,
}

/// One round's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// What was measured.
    pub name: String,
    /// Requests queued ahead of the probe (or, for starvation, high requests).
    pub backlog: usize,
    /// Backlog requests that started before the probe (starvation: before the first low).
    pub started_before: usize,
    /// For `mid-drain`: backlog requests started between the probe's publish and its start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_after_publish: Option<usize>,
    /// For starvation: low requests, how many of them started while high work waited, and
    /// how many tasks (high and low) had started when the last low one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lows: Option<(usize, usize, usize)>,
    /// Probe: from the workers' start (`mid-drain`: from its publish) to its result,
    /// milliseconds.
    pub probe_ms: f64,
    /// Every request's results, per second, from the workers' start to the last result.
    pub per_second: f64,
}

/// The rounds, as a table.
pub fn table(rounds: &[Round], config: &PriorityConfig) -> String {
    let mut out = format!(
        "priority: {} workers (FLEET_CONCURRENCY default), github.repo_info answering after {:?}\n",
        config.workers, config.task_delay
    );
    out.push_str(&format!(
        "{:<34} {:>8} {:>15} {:>12} {:>10}\n",
        "round", "backlog", "started before", "probe ms", "results/s"
    ));
    for r in rounds {
        let mut before = r.started_before.to_string();
        if let Some(n) = r.started_after_publish {
            before = format!("{before} ({n} after)");
        }
        out.push_str(&format!(
            "{:<34} {:>8} {:>15} {:>12.0} {:>10.0}\n",
            r.name, r.backlog, before, r.probe_ms, r.per_second
        ));
        if let Some((lows, early, last)) = r.lows {
            out.push_str(&format!(
                "{:<34} {lows} low requests: {early} started while high work still waited; the last low was start {last} of {}\n",
                "",
                r.backlog + lows
            ));
        }
    }
    out
}

/// Runs every round.
///
/// # Errors
///
/// [`Error`] when a process or NATS fails, or a round does not finish in time.
pub async fn run(config: &PriorityConfig) -> Result<Vec<Round>, Error> {
    let n = config.backlog.max(1);
    let mut rounds = Vec::new();
    for (name, backlog, probe) in [
        ("behind: low backlog, high probe", "low", "high"),
        ("behind: normal backlog, high probe", "normal", "high"),
        ("control: normal backlog, normal", "normal", "normal"),
    ] {
        let mut bench = Bench::start(config).await?;
        let ids = bench.queue("b", n, backlog).await?;
        let probe = bench.queue("probe", 1, probe).await?;
        let started = Instant::now();
        bench.start_workers().await?;
        bench.wait_results(n + 1, config.timeout).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let order = bench.start_order(&ids, &probe);
        let probe_ms = bench.result_ms(&probe[0], started);
        rounds.push(Round {
            name: name.to_owned(),
            backlog: n,
            started_before: order.iter().take_while(|id| **id != probe[0]).count(),
            started_after_publish: None,
            lows: None,
            probe_ms,
            per_second: (n + 1) as f64 / elapsed,
        });
    }

    // The probe arrives while the workers work the backlog off.
    let mut bench = Bench::start(config).await?;
    let ids = bench.queue("b", n, "low").await?;
    let started = Instant::now();
    bench.start_workers().await?;
    bench.wait_results(n / 5, config.timeout).await?;
    let published = Instant::now();
    let probe = bench.queue("probe", 1, "high").await?;
    bench.wait_results(n + 1, config.timeout).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let order = bench.start_order(&ids, &probe);
    let before = order.iter().take_while(|id| **id != probe[0]).count();
    let started_before_publish = ids
        .iter()
        .filter(|id| bench.started(id).is_some_and(|t| t < published))
        .count();
    rounds.push(Round {
        name: "mid-drain: low backlog, high probe".into(),
        backlog: n,
        started_before: before,
        started_after_publish: Some(before.saturating_sub(started_before_publish)),
        lows: None,
        probe_ms: bench.result_ms(&probe[0], published),
        per_second: (n + 1) as f64 / elapsed,
    });

    // Starvation: a high backlog with some low work behind it.
    let mut bench = Bench::start(config).await?;
    let highs = bench.queue("h", n, "high").await?;
    let lows = bench.queue("l", (n / 10).max(1), "low").await?;
    let started = Instant::now();
    bench.start_workers().await?;
    bench
        .wait_results(highs.len() + lows.len(), config.timeout)
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let last_high = highs.iter().filter_map(|id| bench.started(id)).max();
    let first_low = lows.iter().filter_map(|id| bench.started(id)).min();
    let early = lows
        .iter()
        .filter(|id| {
            bench
                .started(id)
                .zip(last_high)
                .is_some_and(|(t, last)| t < last)
        })
        .count();
    let before_first_low = highs
        .iter()
        .filter(|id| {
            bench
                .started(id)
                .zip(first_low)
                .is_some_and(|(t, first)| t < first)
        })
        .count();
    let last_low = lows.iter().filter_map(|id| bench.started(id)).max();
    let up_to_last_low = highs
        .iter()
        .chain(&lows)
        .filter(|id| {
            bench
                .started(id)
                .zip(last_low)
                .is_some_and(|(t, last)| t <= last)
        })
        .count();
    rounds.push(Round {
        name: "starvation: high backlog, lows".into(),
        backlog: n,
        started_before: before_first_low,
        started_after_publish: None,
        lows: Some((lows.len(), early, up_to_last_low)),
        probe_ms: f64::NAN,
        per_second: (highs.len() + lows.len()) as f64 / elapsed,
    });
    Ok(rounds)
}

/// One round's world: a server, the fake GitHub, the fleet, a client.
struct Bench {
    /// The fleet (workers stopped until [`Bench::start_workers`]).
    procs: FleetProcs,
    /// Worker processes.
    workers: usize,
    /// The fake GitHub, whose clock says when each task started.
    github: FakeGithub,
    /// The client.
    js: jetstream::Context,
    /// Results as they arrive, by request id.
    results: HashMap<String, Instant>,
    /// The results subscription.
    subscription: async_nats::Subscriber,
    /// Tasks stored so far.
    queued: usize,
    /// Kept until the round ends (dropped after the processes).
    _work: TempDir,
    /// The server.
    _nats: NatsServer,
}

// === impl Bench ===

impl Bench {
    /// A fresh server and fleet whose workers have published the catalog and stopped, and
    /// whose dispatcher runs.
    async fn start(config: &PriorityConfig) -> Result<Self, Error> {
        let work = TempDir::new("bench-priority")?;
        let nats = NatsServer::start()?;
        let github = FakeGithub::start().await?;
        github.set_default(Repo::new().stars(1).delay(config.task_delay));
        let url = github.url();
        let settings = [
            ("RUST_LOG", "warn"),
            ("FLEET_TASKS", "github.repo_info"),
            ("GITHUB_API_URL", url.as_str()),
        ];
        let workers = config.workers.max(1);
        let mut procs = FleetProcs::new(
            &config.bin_dir,
            work.path(),
            &nats.url(),
            &settings,
            workers,
        )?;
        // The workers make the consumers and the catalog, then stop: the backlog is queued with
        // nobody taking it.
        procs.start_all(Duration::from_secs(30)).await?;
        for slot in 0..workers {
            procs.kill_worker(slot);
        }
        let client = async_nats::connect(nats.url())
            .await
            .map_err(|e| Error::nats("connect", e))?;
        let subscription = client
            .subscribe("fleet.results.*")
            .await
            .map_err(|e| Error::nats("subscribe to results", e))?;
        client.flush().await.map_err(|e| Error::nats("flush", e))?;
        Ok(Self {
            procs,
            workers,
            github,
            js: jetstream::new(client),
            results: HashMap::new(),
            subscription,
            queued: 0,
            _work: work,
            _nats: nats,
        })
    }

    /// Publishes `count` requests `<prefix>-<i>` of `priority` and waits until their tasks are
    /// stored (routed by the dispatcher); returns their ids.
    async fn queue(
        &mut self,
        prefix: &str,
        count: usize,
        priority: &str,
    ) -> Result<Vec<String>, Error> {
        let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
        let mut acks = Vec::with_capacity(ids.len());
        for id in &ids {
            let body = json!({
                "id": id,
                "task": "github.repo_info",
                "input": {"owner": OWNER, "repo": id},
                "priority": priority,
            });
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            acks.push(
                self.js
                    .publish_with_headers("fleet.requests", headers, body.to_string().into())
                    .await
                    .map_err(|e| Error::nats("publish request", e))?,
            );
        }
        for ack in acks {
            ack.await.map_err(|e| Error::nats("store request", e))?;
        }
        self.queued += count;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut stream = self
                .js
                .get_stream("FLEET_TASKS")
                .await
                .map_err(|e| Error::nats("tasks stream", e))?;
            let info = stream
                .info()
                .await
                .map_err(|e| Error::nats("tasks stream info", e))?;
            // Stored, or already done (a running worker took it and stored its result).
            self.drain_results();
            if info.state.messages as usize + self.results.len() >= self.queued {
                return Ok(ids);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "{} of {} tasks queued",
                    info.state.messages, self.queued
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes the results that have arrived, without waiting.
    fn drain_results(&mut self) {
        while let Some(Some(msg)) = self.subscription.next().now_or_never() {
            if let Some(id) = msg.subject.as_str().strip_prefix("fleet.results.") {
                self.results.insert(id.to_owned(), Instant::now());
            }
        }
    }

    /// Starts the workers again.
    async fn start_workers(&mut self) -> Result<(), Error> {
        for slot in 0..self.workers {
            self.procs.start_worker(slot)?;
        }
        for slot in 0..self.workers {
            self.procs
                .wait_worker_ready(slot, Duration::from_secs(30))
                .await?;
        }
        Ok(())
    }

    /// Waits until `target` results have arrived in all.
    async fn wait_results(&mut self, target: usize, timeout: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.results.len() < target {
            match tokio::time::timeout_at(deadline, self.subscription.next()).await {
                Ok(Some(msg)) => {
                    if let Some(id) = msg.subject.as_str().strip_prefix("fleet.results.") {
                        self.results.insert(id.to_owned(), Instant::now());
                    }
                }
                Ok(None) | Err(_) => {
                    return Err(Error::Timeout(format!(
                        "{} of {target} results",
                        self.results.len()
                    )));
                }
            }
        }
        Ok(())
    }

    /// When `id`'s task first reached the fake GitHub.
    fn started(&self, id: &str) -> Option<Instant> {
        self.github
            .request_times(&format!("{OWNER}/{id}"))
            .into_iter()
            .min()
    }

    /// The ids of `a` and `b` in the order their tasks started.
    fn start_order(&self, a: &[String], b: &[String]) -> Vec<String> {
        let mut starts: Vec<(Instant, &String)> = a
            .iter()
            .chain(b)
            .filter_map(|id| self.started(id).map(|t| (t, id)))
            .collect();
        starts.sort();
        starts.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// Milliseconds from `since` to `id`'s result.
    fn result_ms(&self, id: &str, since: Instant) -> f64 {
        self.results
            .get(id)
            .map_or(f64::NAN, |t| t.duration_since(since).as_secs_f64() * 1000.0)
    }
}
