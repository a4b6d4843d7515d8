//! The settings of a chaos run.

use std::path::PathBuf;
use std::time::Duration;

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
    /// Worker freezes (SIGSTOP, then SIGCONT after `stop_for`), evenly spread.
    pub worker_stops: usize,
    /// How long a frozen worker stays frozen: longer than `ack_wait`, so its tasks are
    /// redelivered to another worker while it still holds them.
    pub stop_for: Duration,
    /// `FLEET_ACK_WAIT` of the fleet.
    pub ack_wait: Duration,
    /// Dispatcher restarts, evenly spread (the first by SIGTERM, the others by SIGKILL).
    pub dispatcher_restarts: usize,
    /// Restart nats-server once, halfway (same port and store); one server only.
    pub nats_restart: bool,
    /// Restart nats-server (or stop cluster nodes) with SIGKILL only, instead of SIGTERM (one
    /// server) or SIGKILL and SIGTERM in turn (a cluster).
    pub nats_sigkill: bool,
    /// Run on a three-node NATS cluster of the current nats-server (`NATS_SERVER_CURRENT_BIN`)
    /// with R3 streams (`FLEET_STREAM_REPLICAS=3`), every process given all three URLs.
    pub cluster: bool,
    /// A cluster: node kills, evenly spread over the window, each aimed at the leader of one of
    /// the fleet's streams or consumers (in turn), each once every node is healthy.
    pub node_kills: usize,
    /// A cluster: how long a killed node stays down.
    pub node_down: Duration,
    /// A cluster: give each process one node's URL (in turn) instead of all three, so it
    /// finds the other nodes from the server's INFO.
    pub one_url_each: bool,
    /// `FLEET_MAX_ATTEMPTS` (high, so kills do not end requests `dead`).
    pub max_attempts: u32,
    /// How long the fake GitHub takes to answer the repo endpoint (so tasks are in flight when
    /// a worker is killed or frozen).
    pub task_delay: Duration,
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
            worker_stops: 3,
            stop_for: Duration::from_secs(3),
            ack_wait: Duration::from_secs(2),
            dispatcher_restarts: 2,
            nats_restart: true,
            nats_sigkill: false,
            cluster: false,
            node_kills: 4,
            node_down: Duration::from_secs(2),
            one_url_each: false,
            max_attempts: 10,
            task_delay: Duration::from_millis(100),
            seed: 0x5eed_f1ee7,
            settle_timeout: Duration::from_secs(120),
        }
    }
}
