//! The NATS side of a chaos run: one `nats-server` restarted once halfway, or a three-node
//! cluster (R3 streams) whose nodes are killed and started again through the window, each
//! time the leader of one of the fleet's streams or consumers.
//!
//! In a cluster one node at a time is down, and the next is killed only once every node is
//! healthy again (`/healthz`: JetStream current with its peers) and the last target has a
//! leader again (`/healthz` can say healthy before that), so an R3 stream always has a quorum:
//! the chaos tests failover (new leaders, clients moving to another node, publishes whose ack
//! was lost), not the loss of a majority, which only stalls a cluster.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use fleet_testkit::{NatsCluster, NatsServer, Signal};

use super::{ChaosConfig, ChaosReport, run::PREFIX};
use crate::Error;

/// Nodes of the chaos cluster (R3 streams need three).
pub(super) const CLUSTER_NODES: usize = 3;

/// How long the cluster may take to be healthy (at start, and after the window).
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long finding a leader may take before a node is picked without it.
const LEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the nodes' health is asked while a kill waits for it.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// The NATS the fleet runs on.
#[derive(Debug)]
pub(super) enum Broker {
    /// One server (the binary of `NATS_SERVER_BIN`, `PATH` or `/usr/sbin`).
    Single(NatsServer),
    /// A cluster of the current server (`NATS_SERVER_CURRENT_BIN`).
    Cluster(NatsCluster),
}

// === impl Broker ===

impl Broker {
    /// Starts a cluster when `config.cluster` says so, else one server.
    ///
    /// # Errors
    ///
    /// When a server cannot be started, a cluster has no current server or is not healthy in
    /// time.
    pub(super) async fn start(config: &ChaosConfig) -> Result<Self, Error> {
        Ok(if config.cluster {
            Self::Cluster(NatsCluster::start(CLUSTER_NODES, HEALTHY_TIMEOUT).await?)
        } else {
            Self::Single(NatsServer::start()?)
        })
    }

    /// The clients' `NATS_URL`: every node's URL, comma-separated.
    pub(super) fn urls(&self) -> String {
        match self {
            Self::Single(server) => server.url(),
            Self::Cluster(cluster) => cluster.urls(),
        }
    }

    /// How many nodes there are.
    pub(super) fn nodes(&self) -> usize {
        match self {
            Self::Single(_) => 1,
            Self::Cluster(cluster) => cluster.len(),
        }
    }

    /// The `FLEET_STREAM_REPLICAS` the fleet runs with: 3 on a cluster of three.
    pub(super) fn replicas(&self) -> usize {
        self.nodes().min(3)
    }

    /// Waits until every node is healthy (a single server: at once).
    ///
    /// # Errors
    ///
    /// When a cluster node is not healthy in time.
    pub(super) async fn wait_healthy(&self) -> Result<(), Error> {
        if let Self::Cluster(cluster) = self {
            cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Keeps the servers' stores and logs on drop; returns where they are.
    pub(super) fn keep(&mut self) -> Vec<PathBuf> {
        match self {
            Self::Single(server) => {
                server.keep();
                vec![server.dir().to_owned()]
            }
            Self::Cluster(cluster) => {
                cluster.keep();
                cluster.dirs()
            }
        }
    }
}

/// The task that waits for a new leader: the leader and the seconds since the kill.
type LeaderWatch = tokio::task::JoinHandle<Option<(String, f64)>>;

/// What the chaos does to NATS and when.
#[derive(Debug)]
pub(super) struct NatsChaos {
    /// When the window started (events are timed from it).
    start: Instant,
    /// One server: when it is restarted.
    restart_at: Option<Instant>,
    /// A cluster: when the remaining node kills are due (each waits for a healthy cluster).
    kills_at: Vec<Instant>,
    /// A cluster: the node that is down and when it starts again.
    down: Option<(usize, Instant)>,
    /// A cluster: the node started again and when, until it is healthy.
    recovering: Option<(usize, Instant)>,
    /// A cluster: the target whose leader was killed, and the task that waits until another
    /// node leads it (the new leader and the seconds since the kill).
    leaderless: Option<(Target, LeaderWatch)>,
    /// How long a killed node stays down.
    down_for: Duration,
    /// Kills so far (they pick the target and alternate SIGKILL and SIGTERM).
    kills: usize,
    /// Stop nodes with SIGKILL only.
    sigkill_only: bool,
    /// When the nodes' health may be asked again.
    next_probe: Instant,
}

// === impl NatsChaos ===

impl NatsChaos {
    /// The schedule of a window that starts at `start`: one restart halfway for one server;
    /// `config.node_kills` kills spread evenly for a cluster.
    pub(super) fn new(config: &ChaosConfig, broker: &Broker, start: Instant) -> Self {
        let at = |fraction: f64| start + config.duration.mul_f64(fraction);
        let (restart_at, kills_at) = match broker {
            Broker::Single(_) => (config.nats_restart.then(|| at(0.5)), Vec::new()),
            Broker::Cluster(_) => {
                let n = config.node_kills;
                let kills = (1..=n).map(|k| at((k as f64 - 0.5) / n as f64)).collect();
                (None, kills)
            }
        };
        Self {
            start,
            restart_at,
            kills_at,
            down: None,
            recovering: None,
            leaderless: None,
            down_for: config.node_down,
            kills: 0,
            sigkill_only: config.nats_sigkill,
            next_probe: start,
        }
    }

    /// Does what is due now: the one restart, or starting a killed node again, or the next
    /// node kill once every node is healthy.
    ///
    /// # Errors
    ///
    /// When a server cannot be started again.
    pub(super) async fn tick(
        &mut self,
        broker: &mut Broker,
        js: &jetstream::Context,
        report: &mut ChaosReport,
    ) -> Result<(), Error> {
        let now = Instant::now();
        match broker {
            Broker::Single(server) => {
                if self.restart_at.is_some_and(|t| now >= t) {
                    self.restart_at = None;
                    let how = if self.sigkill_only {
                        Signal::Kill
                    } else {
                        Signal::Term
                    };
                    tokio::task::block_in_place(|| server.restart(how))?;
                    report.nats_restarts += 1;
                    self.event(
                        report,
                        format!("nats-server restarted (SIG{})", how.as_str()),
                    );
                }
            }
            Broker::Cluster(cluster) => {
                if let Some((node, at)) = self.down
                    && now >= at
                {
                    self.down = None;
                    tokio::task::block_in_place(|| cluster.start_again(node))?;
                    self.recovering = Some((node, Instant::now()));
                    report.nats_restarts += 1;
                    let name = cluster.name(node).unwrap_or("?").to_owned();
                    self.event(report, format!("{name} started again"));
                }
                if self
                    .leaderless
                    .as_ref()
                    .is_some_and(|(_, watch)| watch.is_finished())
                    && let Some((target, watch)) = self.leaderless.take()
                    && let Ok(Some((leader, took))) = watch.await
                {
                    let what = target.describe();
                    self.event(
                        report,
                        format!("{leader} leads {what}, {took:.1}s after the kill"),
                    );
                }
                if let Some((node, since)) = self.recovering
                    && now >= self.next_probe
                {
                    self.next_probe = now + PROBE_EVERY;
                    if cluster.is_healthy(node).await {
                        self.recovering = None;
                        let name = cluster.name(node).unwrap_or("?").to_owned();
                        let took = since.elapsed().as_secs_f64();
                        self.event(report, format!("{name} healthy {took:.1}s after its start"));
                    }
                }
                if self.down.is_none()
                    && self.recovering.is_none()
                    && self.leaderless.is_none()
                    && self.kills_at.first().is_some_and(|t| now >= *t)
                    && now >= self.next_probe
                {
                    self.next_probe = now + PROBE_EVERY;
                    if all_healthy(cluster).await {
                        self.kills_at.remove(0);
                        self.kill_one(cluster, js, report).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Kills the leader of the next target (any node when no leader is known).
    async fn kill_one(
        &mut self,
        cluster: &mut NatsCluster,
        js: &jetstream::Context,
        report: &mut ChaosReport,
    ) {
        let target = Target::nth(self.kills);
        let what = target.describe();
        let leader = leader_of(js, &target).await;
        let known = leader.as_deref().and_then(|name| cluster.index_of(name));
        let node = known.unwrap_or(self.kills % cluster.len());
        let how = if self.sigkill_only || self.kills.is_multiple_of(2) {
            Signal::Kill
        } else {
            Signal::Term
        };
        tokio::task::block_in_place(|| cluster.stop(node, how));
        self.down = Some((node, Instant::now() + self.down_for));
        self.kills += 1;
        report.node_kills += 1;
        let name = cluster.name(node).unwrap_or("?").to_owned();
        let role = if known.is_some() {
            report.leader_kills += 1;
            let watch = tokio::spawn(new_leader(
                js.clone(),
                target.clone(),
                name.clone(),
                self.down_for,
            ));
            self.leaderless = Some((target, watch));
            format!("leader of {what}")
        } else {
            format!("no leader known for {what}")
        };
        self.event(
            report,
            format!("{name} stopped by SIG{} ({role})", how.as_str()),
        );
    }

    /// Ends the chaos: starts a node that is down.
    ///
    /// # Errors
    ///
    /// When it cannot be started.
    pub(super) fn end(
        &mut self,
        broker: &mut Broker,
        report: &mut ChaosReport,
    ) -> Result<(), Error> {
        self.kills_at.clear();
        self.restart_at = None;
        if let (Broker::Cluster(cluster), Some((node, _))) = (broker, self.down.take()) {
            tokio::task::block_in_place(|| cluster.start_again(node))?;
            report.nats_restarts += 1;
            let name = cluster.name(node).unwrap_or("?").to_owned();
            self.event(report, format!("{name} started again (end of the window)"));
        }
        Ok(())
    }

    /// Notes `what` in the report, timed from the window's start.
    fn event(&self, report: &mut ChaosReport, what: String) {
        let at = self.start.elapsed().as_secs_f64();
        report.nats_events.push(format!("{at:.1}s {what}"));
    }
}

/// A stream, or a consumer of it, whose leader a kill aims at.
#[derive(Debug, Clone)]
struct Target {
    /// The stream.
    stream: String,
    /// The consumer, when the target is one.
    consumer: Option<&'static str>,
}

// === impl Target ===

impl Target {
    /// The target of the `k`-th kill, in turn: the results (the one-result rule), the workers'
    /// consumer, the status bucket, the tasks, the dispatchers' consumer, the requests.
    fn nth(k: usize) -> Self {
        let upper = PREFIX.to_uppercase();
        let targets: [(String, Option<&'static str>); 6] = [
            (format!("{upper}_RESULTS"), None),
            (format!("{upper}_TASKS"), Some("worker-github_repo_info")),
            (format!("KV_{PREFIX}-status"), None),
            (format!("{upper}_TASKS"), None),
            (format!("{upper}_REQUESTS"), Some("dispatcher")),
            (format!("{upper}_REQUESTS"), None),
        ];
        let (stream, consumer) = targets[k % targets.len()].clone();
        Self { stream, consumer }
    }

    /// `stream NAME` or `consumer STREAM/NAME`.
    fn describe(&self) -> String {
        match self.consumer {
            Some(c) => format!("consumer {}/{c}", self.stream),
            None => format!("stream {}", self.stream),
        }
    }
}

/// The server name of the target's leader, from `$JS.API.STREAM.INFO` /
/// `$JS.API.CONSUMER.INFO` (`cluster.leader`).
async fn leader_of(js: &jetstream::Context, target: &Target) -> Option<String> {
    let ask = async {
        let mut stream = js.get_stream(&target.stream).await.ok()?;
        match target.consumer {
            None => {
                let info = stream.info().await.ok()?;
                info.cluster.as_ref()?.leader.clone()
            }
            Some(name) => {
                let mut consumer: jetstream::consumer::Consumer<pull::Config> =
                    stream.get_consumer(name).await.ok()?;
                let info = consumer.info().await.ok()?;
                info.cluster.as_ref()?.leader.clone()
            }
        }
    };
    tokio::time::timeout(LEADER_TIMEOUT, ask)
        .await
        .ok()
        .flatten()
}

/// Waits until `target` has a leader again: a node other than `killed`, or `killed` itself
/// once it is back (after `down_for`); returns it and the seconds since the kill (`None` after
/// [`HEALTHY_TIMEOUT`]).
async fn new_leader(
    js: jetstream::Context,
    target: Target,
    killed: String,
    down_for: Duration,
) -> Option<(String, f64)> {
    let since = Instant::now();
    while since.elapsed() < HEALTHY_TIMEOUT {
        if let Some(leader) = leader_of(&js, &target).await
            && (leader != killed || since.elapsed() > down_for)
        {
            return Some((leader, since.elapsed().as_secs_f64()));
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    None
}

/// Is every node running and healthy?
async fn all_healthy(cluster: &NatsCluster) -> bool {
    for node in 0..cluster.len() {
        if !cluster.is_healthy(node).await {
            return false;
        }
    }
    true
}
