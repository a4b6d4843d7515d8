//! The chaos run: a fake GitHub, NATS (one server or a three-node cluster) and the fleet's
//! processes, requests published evenly over the window, and meanwhile worker SIGKILLs, worker
//! freezes past the ack wait, dispatcher restarts, and a nats-server restart or cluster node
//! kills (`nodes.rs`).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use std::time::{Duration, Instant};

use async_nats::{ServerAddr, jetstream};
use bytes::Bytes;
use fleet_testkit::{FakeGithub, Repo, Signal, TempDir};
use tokio::sync::Semaphore;

use super::nodes::{Broker, NatsChaos};
use super::{ChaosConfig, ChaosReport, count::count};
use crate::{Error, load, proc::FleetProcs};

/// The subject prefix (and `FLEET_PREFIX`) of a chaos run.
pub(super) const PREFIX: &str = "chaos";

/// The GitHub owner of every chaos request's repo (the repo is the request id).
pub(super) const REPO_OWNER: &str = "chaos";

/// The id of request `i`.
pub(super) fn request_id(i: usize) -> String {
    format!("c-{i}")
}

/// The body of request `id`: explicit `github.repo_info` for the repo `chaos/<id>`, so each
/// request's runs are counted apart.
fn request_body(id: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"id":"{id}","task":"github.repo_info","input":{{"owner":"{REPO_OWNER}","repo":"{id}"}}}}"#
    ))
}

/// Runs the chaos scenario and counts, per request id, what the fleet kept and broke.
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
/// println!("{}", report.table());
/// # Ok(())
/// # }
/// ```
pub async fn run(config: &ChaosConfig) -> Result<ChaosReport, Error> {
    let github = FakeGithub::start().await?;
    github.set_default(Repo::new().delay(config.task_delay));
    let mut nats = Broker::start(config).await?;
    let replicas = nats.replicas().to_string();
    let mut logs = TempDir::new("bench-chaos")?;
    let max_attempts = config.max_attempts.to_string();
    let ack_wait = format!("{}ms", config.ack_wait.as_millis());
    let github_url = github.url();
    let settings = [
        ("FLEET_PREFIX", PREFIX),
        ("FLEET_TASKS", "github.repo_info"),
        ("GITHUB_API_URL", github_url.as_str()),
        ("FLEET_ACK_WAIT", ack_wait.as_str()),
        ("FLEET_BACKOFF_MIN", "50ms"),
        ("FLEET_BACKOFF_MAX", "500ms"),
        ("FLEET_DRAIN_GRACE", "2s"),
        ("FLEET_MAX_ATTEMPTS", max_attempts.as_str()),
        ("FLEET_STREAM_REPLICAS", replicas.as_str()),
        ("RUST_LOG", "info"),
    ];
    let workers = config.workers.max(1);
    let mut fleet = FleetProcs::new(
        &config.bin_dir,
        logs.path(),
        &nats.urls(),
        &settings,
        workers,
    )?;
    let one_url_each = config.cluster && config.one_url_each;
    if one_url_each {
        fleet.spread_urls(nats.urls().split(',').map(str::to_owned).collect());
    }
    if let Err(e) = fleet.start_all(Duration::from_secs(30)).await {
        // The error names a process's log: keep it (and the servers') to be read.
        logs.keep();
        nats.keep();
        return Err(e);
    }

    let servers = nats
        .urls()
        .split(',')
        .map(str::parse::<ServerAddr>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::nats("server URLs", e))?;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .map_err(|e| Error::nats("connect", e))?;
    let js = jetstream::new(client.clone());
    let mut report = ChaosReport {
        requests: config.requests,
        nats_nodes: nats.nodes(),
        stream_replicas: nats.replicas(),
        fleet_urls: if one_url_each { "one each" } else { "all" }.to_owned(),
        logs: logs.path().display().to_string(),
        ..Default::default()
    };

    let retries = Arc::new(AtomicUsize::new(0));
    let publisher = tokio::spawn(publish(
        js.clone(),
        config.requests,
        config.duration,
        retries.clone(),
    ));

    // The chaos, until the window is over and every request is published.
    let start = Instant::now();
    let mut chaos = Chaos::new(config, start, workers);
    let mut nats_chaos = NatsChaos::new(config, &nats, start);
    while start.elapsed() < config.duration || !publisher.is_finished() {
        if start.elapsed() < config.duration {
            nats_chaos.tick(&mut nats, &js, &mut report).await?;
        } else {
            nats_chaos.end(&mut nats, &mut report)?;
        }
        chaos.tick(config, &mut fleet, &mut report).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = publisher.await;
    nats_chaos.end(&mut nats, &mut report)?;
    chaos.end(&mut fleet)?;
    report.chaos_s = start.elapsed().as_secs_f64();
    report.publish_retries = retries.load(Ordering::Relaxed);

    // Settle: wait until every node is healthy again and every request has a result (or the
    // timeout).
    let settled = Instant::now();
    if let Err(e) = nats.wait_healthy().await {
        report.nats_events.push(format!("after the window: {e}"));
    }
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

    count(&js, &github, config.requests, &mut report).await?;
    if !report.passed() {
        logs.keep();
        for dir in nats.keep() {
            report.logs.push_str(&format!(" {}", dir.display()));
        }
    }
    drop(fleet);
    Ok(report)
}

/// Publishes `n` requests evenly over `window`, each retried until the stream acks it (at
/// most 256 waiting for their acks at once).
async fn publish(js: jetstream::Context, n: usize, window: Duration, retries: Arc<AtomicUsize>) {
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
            let id = request_id(i);
            while load::publish_request(&js, PREFIX, &id, request_body(&id))
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
}

/// The chaos schedule and what it has done to each worker slot.
struct Chaos {
    /// Random kill times and victims.
    rng: Rng,
    /// When the window ends.
    end: Instant,
    /// When the next worker SIGKILL is due.
    next_kill: Instant,
    /// Per worker slot: killed, to be restarted at this time.
    down: Vec<Option<Instant>>,
    /// Per worker slot: frozen (SIGSTOP), to be thawed (SIGCONT) at this time.
    frozen: Vec<Option<Instant>>,
    /// When the remaining worker freezes are due.
    stops_at: Vec<Instant>,
    /// When the remaining dispatcher restarts are due.
    dispatcher_at: Vec<Instant>,
}

// === impl Chaos ===

impl Chaos {
    /// The schedule of a run that starts at `start`: worker kills at random, freezes and
    /// dispatcher restarts at fixed points of the window (NATS's is [`NatsChaos`]).
    fn new(config: &ChaosConfig, start: Instant, workers: usize) -> Self {
        let mut rng = Rng(config.seed.max(1));
        let at = |fraction: f64| start + config.duration.mul_f64(fraction);
        let restarts = config.dispatcher_restarts;
        let stops = config.worker_stops;
        Self {
            next_kill: start + rng.between(config.kill_every),
            rng,
            end: at(1.0),
            down: vec![None; workers],
            frozen: vec![None; workers],
            // Off the dispatcher and nats-server restarts' points (k / (n + 1), 1/2).
            stops_at: (1..=stops)
                .map(|k| at((k as f64 - 0.7) / stops as f64))
                .collect(),
            dispatcher_at: (1..=restarts)
                .map(|k| at(k as f64 / (restarts + 1) as f64))
                .collect(),
        }
    }

    /// Does whatever is due now.
    async fn tick(
        &mut self,
        config: &ChaosConfig,
        fleet: &mut FleetProcs,
        report: &mut ChaosReport,
    ) -> Result<(), Error> {
        let now = Instant::now();
        if now >= self.end {
            return self.end(fleet);
        }
        if now >= self.next_kill {
            if let Some(slot) = self.pick_victim(fleet)
                && fleet.kill_worker(slot)
            {
                report.worker_kills += 1;
                self.down[slot] = Some(now + self.rng.between(config.down_for));
            }
            self.next_kill = now + self.rng.between(config.kill_every);
        }
        if self.stops_at.first().is_some_and(|t| now >= *t) {
            self.stops_at.remove(0);
            if let Some(slot) = self.pick_victim(fleet)
                && fleet.signal_worker(slot, Signal::Stop)
            {
                report.worker_stops += 1;
                self.frozen[slot] = Some(now + config.stop_for);
            }
        }
        for slot in 0..self.down.len() {
            if self.down[slot].is_some_and(|t| now >= t) {
                self.down[slot] = None;
                fleet.start_worker(slot)?;
            }
            if self.frozen[slot].is_some_and(|t| now >= t) {
                self.frozen[slot] = None;
                fleet.signal_worker(slot, Signal::Cont);
            }
        }
        if self.dispatcher_at.first().is_some_and(|t| now >= *t) {
            self.dispatcher_at.remove(0);
            if report.dispatcher_restarts == 0 {
                fleet.terminate_dispatcher(Duration::from_secs(5)).await;
            }
            fleet.start_dispatcher()?;
            report.dispatcher_restarts += 1;
        }
        Ok(())
    }

    /// Ends the chaos: thaws every frozen worker and starts every one that is down.
    fn end(&mut self, fleet: &mut FleetProcs) -> Result<(), Error> {
        self.stops_at.clear();
        for slot in 0..self.down.len() {
            if self.frozen[slot].take().is_some() {
                fleet.signal_worker(slot, Signal::Cont);
            }
            if self.down[slot].take().is_some() || !fleet.worker_running(slot) {
                fleet.start_worker(slot)?;
            }
        }
        Ok(())
    }

    /// A running, unfrozen worker slot at random, if there is one.
    fn pick_victim(&mut self, fleet: &FleetProcs) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.down.len())
            .filter(|&s| fleet.worker_running(s) && self.frozen[s].is_none())
            .collect();
        let pick = self.rng.below(candidates.len());
        candidates.get(pick).copied()
    }
}

/// A small deterministic random source (xorshift64*), so a run can be repeated with its seed.
struct Rng(u64);

// === impl Rng ===

impl Rng {
    /// The next 64 random bits.
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A duration in `lo..hi`.
    fn between(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(if span == 0 { 0 } else { self.next() % span })
    }
}
