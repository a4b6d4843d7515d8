//! The fleet's real processes (`dispatcher`, `worker`) as children of the bench.
//!
//! Every process gets a fixed free `FLEET_METRICS_PORT`, kept across restarts, so its readiness
//! (`/readyz`) can be polled; output goes to one log file per process. The guards, signals,
//! readiness and RSS come from `fleet-testkit`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_testkit::process::{ChildProc, Signal, clean_command};

use crate::Error;

/// The fleet's binaries the bench runs.
const FLEET_BINARIES: [&str; 2] = ["dispatcher", "worker"];

/// Checks that `dir` holds the fleet's `dispatcher` and `worker` binaries.
///
/// # Errors
///
/// [`fleet_testkit::Error::MissingBinary`] with the command that builds them.
pub fn check_binaries(dir: &Path) -> Result<(), Error> {
    for name in FLEET_BINARIES {
        fleet_testkit::binary(dir, name)?;
    }
    Ok(())
}

/// One process slot: its fixed metrics port and the process, when running.
#[derive(Debug)]
struct Slot {
    /// `FLEET_METRICS_PORT`, kept across restarts.
    port: u16,
    /// The process.
    proc: Option<ChildProc>,
}

// === impl Slot ===

impl Slot {
    /// An empty slot with a free port.
    fn new() -> Result<Self, Error> {
        Ok(Self {
            port: fleet_testkit::free_port()?,
            proc: None,
        })
    }
}

/// A fleet's dispatcher and workers; all killed on drop.
#[derive(Debug)]
pub struct FleetProcs {
    /// Where `dispatcher` and `worker` are.
    bin_dir: PathBuf,
    /// Where the logs go.
    log_dir: PathBuf,
    /// Settings for every process (`NATS_URL` included).
    env: Vec<(String, String)>,
    /// The dispatcher.
    dispatcher: Slot,
    /// The workers (`FLEET_WORKER_ID=w<slot>`).
    workers: Vec<Slot>,
    /// When set, each process's own `NATS_URL` instead of the shared one: the dispatcher the
    /// first, worker `s` the `s + 1`-th, round the list (see [`FleetProcs::spread_urls`]).
    own_urls: Vec<String>,
}

// === impl FleetProcs ===

impl FleetProcs {
    /// Prepares (does not start) one dispatcher and `workers` worker slots, each with its own
    /// fixed metrics port.
    ///
    /// # Errors
    ///
    /// When a binary is missing or no free port is found.
    pub fn new(
        bin_dir: &Path,
        log_dir: &Path,
        nats_url: &str,
        settings: &[(&str, &str)],
        workers: usize,
    ) -> Result<Self, Error> {
        check_binaries(bin_dir)?;
        let mut env = vec![("NATS_URL".to_owned(), nats_url.to_owned())];
        env.extend(
            settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Ok(Self {
            bin_dir: bin_dir.to_owned(),
            log_dir: log_dir.to_owned(),
            env,
            dispatcher: Slot::new()?,
            workers: (0..workers)
                .map(|_| Slot::new())
                .collect::<Result<_, _>>()?,
            own_urls: Vec::new(),
        })
    }

    /// Gives each process (from its next start on) one of `urls` as its `NATS_URL` instead of
    /// the shared list: the dispatcher the first, worker `s` the `s + 1`-th, round the list. A
    /// client of a cluster learns the other nodes from the server it reaches.
    pub fn spread_urls(&mut self, urls: Vec<String>) {
        self.own_urls = urls;
    }

    /// The `NATS_URL` of process `index` (0: the dispatcher, `s + 1`: worker `s`), when
    /// [`FleetProcs::spread_urls`] gave each its own.
    fn own_url(&self, index: usize) -> Option<&str> {
        if self.own_urls.is_empty() {
            None
        } else {
            Some(self.own_urls[index % self.own_urls.len()].as_str())
        }
    }

    /// Starts every worker, then the dispatcher, each waited for until its `/readyz` answers
    /// (at most `timeout` each). Returns each process's start-to-ready time by name.
    ///
    /// # Errors
    ///
    /// When a process cannot be spawned, dies, or is not ready in time.
    pub async fn start_all(
        &mut self,
        timeout: Duration,
    ) -> Result<BTreeMap<String, Duration>, Error> {
        let mut ready = BTreeMap::new();
        for slot in 0..self.workers.len() {
            self.start_worker(slot)?;
            let t = self.wait_worker_ready(slot, timeout).await?;
            ready.insert(format!("worker w{slot}"), t);
        }
        self.start_dispatcher()?;
        let t = self.wait_dispatcher_ready(timeout).await?;
        ready.insert("dispatcher".to_owned(), t);
        Ok(ready)
    }

    /// Starts (or restarts, killing the old one) the dispatcher.
    ///
    /// # Errors
    ///
    /// When it cannot be spawned.
    pub fn start_dispatcher(&mut self) -> Result<(), Error> {
        self.dispatcher.proc = None;
        let extra: Vec<(&str, &str)> = self
            .own_url(0)
            .map(|u| ("NATS_URL", u))
            .into_iter()
            .collect();
        let proc = self.spawn("dispatcher", "dispatcher", self.dispatcher.port, &extra)?;
        self.dispatcher.proc = Some(proc);
        Ok(())
    }

    /// Starts worker `slot` (`FLEET_WORKER_ID=w<slot>`), killing a running one first.
    ///
    /// # Errors
    ///
    /// When it cannot be spawned.
    pub fn start_worker(&mut self, slot: usize) -> Result<(), Error> {
        let Some(port) = self.workers.get_mut(slot).map(|w| {
            w.proc = None;
            w.port
        }) else {
            return Ok(());
        };
        let id = format!("w{slot}");
        let mut extra = vec![("FLEET_WORKER_ID", id.as_str())];
        extra.extend(self.own_url(slot + 1).map(|u| ("NATS_URL", u)));
        let proc = self.spawn("worker", &format!("worker {id}"), port, &extra)?;
        self.workers[slot].proc = Some(proc);
        Ok(())
    }

    /// Sends SIGTERM to the dispatcher and waits up to `grace` for it to exit (then SIGKILL).
    pub async fn terminate_dispatcher(&mut self, grace: Duration) {
        if let Some(mut proc) = self.dispatcher.proc.take() {
            proc.terminate(grace).await;
        }
    }

    /// SIGKILLs worker `slot` (a crash: nothing is acked or drained). Returns whether it ran.
    pub fn kill_worker(&mut self, slot: usize) -> bool {
        self.workers
            .get_mut(slot)
            .and_then(|w| w.proc.take())
            .is_some()
    }

    /// Sends `signal` to worker `slot` (SIGSTOP freezes it, SIGCONT thaws it). Returns whether
    /// it was delivered.
    pub fn signal_worker(&self, slot: usize, signal: Signal) -> bool {
        self.workers
            .get(slot)
            .and_then(|w| w.proc.as_ref())
            .is_some_and(|p| p.signal(signal))
    }

    /// Is worker `slot` running?
    pub fn worker_running(&self, slot: usize) -> bool {
        self.workers.get(slot).is_some_and(|w| w.proc.is_some())
    }

    /// Waits until the dispatcher's `/readyz` answers 200; returns the time since its spawn.
    ///
    /// # Errors
    ///
    /// When it is not running, dies meanwhile or is not ready after `timeout`.
    pub async fn wait_dispatcher_ready(&mut self, timeout: Duration) -> Result<Duration, Error> {
        wait_ready(&mut self.dispatcher, "dispatcher", timeout).await
    }

    /// Waits until worker `slot`'s `/readyz` answers 200; returns the time since its spawn.
    ///
    /// # Errors
    ///
    /// When it is not running, dies meanwhile or is not ready after `timeout`.
    pub async fn wait_worker_ready(
        &mut self,
        slot: usize,
        timeout: Duration,
    ) -> Result<Duration, Error> {
        match self.workers.get_mut(slot) {
            Some(w) => wait_ready(w, &format!("worker w{slot}"), timeout).await,
            None => Err(Error::NotRunning(format!("worker w{slot}"))),
        }
    }

    /// Names and process ids of the dispatcher and of each running worker.
    pub fn pids(&self) -> Vec<(String, u32)> {
        std::iter::once(&self.dispatcher)
            .chain(&self.workers)
            .filter_map(|s| s.proc.as_ref())
            .map(|p| (p.name().to_owned(), p.pid()))
            .collect()
    }

    /// Spawns `bin` with the fleet's settings plus `extra`, appending to `<name>.log`.
    fn spawn(
        &self,
        bin: &str,
        name: &str,
        port: u16,
        extra: &[(&str, &str)],
    ) -> Result<ChildProc, Error> {
        let mut cmd = clean_command(&self.bin_dir.join(bin));
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.env("FLEET_METRICS_PORT", port.to_string());
        cmd.envs(extra.iter().copied());
        let log = self.log_dir.join(format!("{}.log", name.replace(' ', "-")));
        Ok(ChildProc::spawn(name, cmd, &log)?)
    }
}

/// Polls the `/readyz` of the process in `slot`.
async fn wait_ready(slot: &mut Slot, what: &str, timeout: Duration) -> Result<Duration, Error> {
    let port = slot.port;
    match slot.proc.as_mut() {
        Some(proc) => Ok(proc.wait_ready(port, timeout).await?),
        None => Err(Error::NotRunning(what.to_owned())),
    }
}
