//! A NATS cluster of real `nats-server` nodes with JetStream, each held by a [`NatsServer`]
//! guard, for R3 streams.
//!
//! Clustered JetStream needs a current server: nats-server before 2.9.21 mishandled
//! `Nats-Expected-Last-Subject-Sequence` in clusters, the header the fleet's one-result rule
//! rests on, and Debian ships 2.9.10. So the cluster never falls back to `NATS_SERVER_BIN` or
//! `PATH`: its binary is [`CURRENT_BIN_VAR`] (`NATS_SERVER_CURRENT_BIN`, which `scripts/test.sh`
//! sets from `scripts/ensure-nats.sh --current`), and it must say 2.10 or later.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::Signal;
use crate::{Error, NatsServer, http};

/// The variable naming the current nats-server binary the cluster runs.
pub const CURRENT_BIN_VAR: &str = "NATS_SERVER_CURRENT_BIN";

/// The oldest server the cluster accepts (major, minor).
const MIN_VERSION: (u32, u32) = (2, 10);

/// The cluster's name (`--cluster_name`).
const CLUSTER_NAME: &str = "fleet-test";

/// How long one `/healthz` probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The current nats-server binary: `$NATS_SERVER_CURRENT_BIN`, checked to exist and to be
/// 2.10 or later.
///
/// # Errors
///
/// [`Error::NoCurrentServer`], saying how to get one, when the variable is unset, the file is
/// missing or its version is older.
pub fn current_nats_server_bin() -> Result<PathBuf, Error> {
    let bin = std::env::var_os(CURRENT_BIN_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| Error::NoCurrentServer(format!("{CURRENT_BIN_VAR} is not set")))?;
    if !bin.is_file() {
        return Err(Error::NoCurrentServer(format!(
            "{CURRENT_BIN_VAR}={} is not a file",
            bin.display()
        )));
    }
    let said = crate::nats::version_of(&bin);
    match parse_version(&said) {
        Some(v) if v >= MIN_VERSION => Ok(bin),
        _ => Err(Error::NoCurrentServer(format!(
            "{CURRENT_BIN_VAR}={} says `{said}`, the cluster needs {}.{} or later",
            bin.display(),
            MIN_VERSION.0,
            MIN_VERSION.1
        ))),
    }
}

/// `(major, minor)` of `nats-server: v2.15.1`.
fn parse_version(said: &str) -> Option<(u32, u32)> {
    let v = said.rsplit('v').next()?;
    let mut parts = v.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// One node: its server guard, its name and its monitoring port.
#[derive(Debug)]
struct Node {
    /// The server (stopped and started again in place).
    server: NatsServer,
    /// `--server_name`, stable across restarts (JetStream knows its peers by it).
    name: String,
    /// `-m`: the monitoring port (`/healthz`, `/jsz`).
    monitor_port: u16,
}

/// A cluster of `nats-server` nodes on 127.0.0.1 with JetStream, routes between all of them,
/// free client, route and monitoring ports and a store directory each; every node killed on
/// drop. Nodes are `n0`, `n1`, …; a stopped node starts again on the same ports and store.
#[derive(Debug)]
pub struct NatsCluster {
    /// The nodes, by index.
    nodes: Vec<Node>,
}

// === impl NatsCluster ===

impl NatsCluster {
    /// Starts `size` nodes of the current server ([`current_nats_server_bin`]) and waits until
    /// every one is healthy (JetStream up, a meta leader elected; at most `timeout`).
    ///
    /// # Errors
    ///
    /// [`Error::NoCurrentServer`] without a current server; otherwise when a node cannot be
    /// started or the cluster is not healthy in time.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), fleet_testkit::Error> {
    /// use std::time::Duration;
    /// let cluster = fleet_testkit::NatsCluster::start(3, Duration::from_secs(30)).await?;
    /// println!("NATS_URL={}", cluster.urls());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(size: usize, timeout: Duration) -> Result<Self, Error> {
        let bin = current_nats_server_bin()?;
        Self::start_bin(&bin, size, timeout).await
    }

    /// Like [`NatsCluster::start`] with the binary `bin`.
    ///
    /// # Errors
    ///
    /// As [`NatsCluster::start`].
    pub async fn start_bin(bin: &Path, size: usize, timeout: Duration) -> Result<Self, Error> {
        let size = size.max(1);
        // Every port chosen before any node starts: each node's routes name the others.
        let ports = distinct_ports(3 * size)?;
        let (client, rest) = ports.split_at(size);
        let (route, monitor) = rest.split_at(size);
        let mut nodes = Vec::with_capacity(size);
        for i in 0..size {
            let name = format!("n{i}");
            let routes = (0..size)
                .filter(|&j| j != i)
                .map(|j| format!("nats://127.0.0.1:{}", route[j]))
                .collect::<Vec<_>>()
                .join(",");
            let listen = format!("nats://127.0.0.1:{}", route[i]);
            let monitor_port = monitor[i].to_string();
            let args = [
                "--server_name",
                &name,
                "--cluster_name",
                CLUSTER_NAME,
                "--cluster",
                &listen,
                "--routes",
                &routes,
                "-m",
                &monitor_port,
            ];
            let server =
                tokio::task::block_in_place(|| NatsServer::start_on(bin, client[i], &args, ""))?;
            nodes.push(Node {
                server,
                name,
                monitor_port: monitor[i],
            });
        }
        let cluster = Self { nodes };
        cluster.wait_healthy(timeout).await?;
        Ok(cluster)
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's client URL, comma-separated: the `NATS_URL` of a client of the cluster.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.server.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s client URL.
    pub fn url(&self, i: usize) -> Option<String> {
        self.nodes.get(i).map(|n| n.server.url())
    }

    /// Node `i`'s server name (`n<i>`).
    pub fn name(&self, i: usize) -> Option<&str> {
        self.nodes.get(i).map(|n| n.name.as_str())
    }

    /// The index of the node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Node `i`'s monitoring port (`/healthz`, `/jsz`, `/varz`).
    pub fn monitor_port(&self, i: usize) -> Option<u16> {
        self.nodes.get(i).map(|n| n.monitor_port)
    }

    /// Is node `i` running?
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.server.is_running())
    }

    /// Stops node `i` (see [`NatsServer::stop`]: SIGKILL for [`Signal::Kill`], else `how`
    /// and a wait for the exit), leaving its store in place. Blocks while it shuts down.
    pub fn stop(&mut self, i: usize, how: Signal) {
        if let Some(node) = self.nodes.get_mut(i) {
            node.server.stop(how);
        }
    }

    /// Starts stopped node `i` again on its ports and store and waits until it listens
    /// (blocking); it rejoins the cluster and catches up by itself.
    ///
    /// # Errors
    ///
    /// When it cannot be started.
    pub fn start_again(&mut self, i: usize) -> Result<(), Error> {
        match self.nodes.get_mut(i) {
            Some(node) => node.server.start_again(),
            None => Ok(()),
        }
    }

    /// Does node `i` answer 200 on `/healthz` (running, JetStream current with its peers)?
    pub async fn is_healthy(&self, i: usize) -> bool {
        let Some(port) = self.monitor_port(i).filter(|_| self.is_running(i)) else {
            return false;
        };
        let url = format!("http://127.0.0.1:{port}/healthz");
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, http::get(&url)).await,
            Ok(Ok(http::HttpResponse { status: 200, .. }))
        )
    }

    /// Waits until every node runs and is healthy.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] after `timeout`, naming the nodes that are not.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut unhealthy = Vec::new();
            for i in 0..self.nodes.len() {
                if !self.is_healthy(i).await {
                    unhealthy.push(self.nodes[i].name.clone());
                }
            }
            if unhealthy.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "NATS cluster nodes {} not healthy after {timeout:?}:\n{}",
                    unhealthy.join(", "),
                    self.log_summary()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Keeps every node's directory (store and log) on drop.
    pub fn keep(&mut self) {
        for node in &mut self.nodes {
            node.server.keep();
        }
    }

    /// Every node's directory (its `store/` and `nats.log`).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.nodes
            .iter()
            .map(|n| n.server.dir().to_owned())
            .collect()
    }

    /// Each node's log summary ([`NatsServer::log_summary`]), headed by its name.
    pub fn log_summary(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("---- {} ----\n{}", n.name, n.server.log_summary()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `n` free ports, all different.
fn distinct_ports(n: usize) -> Result<Vec<u16>, Error> {
    let mut ports: Vec<u16> = Vec::with_capacity(n);
    while ports.len() < n {
        let port = crate::free_port()?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn reads_the_version_line() {
        assert_eq!(parse_version("nats-server: v2.15.1"), Some((2, 15)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9)));
        assert_eq!(parse_version("unknown"), None);
    }
}
