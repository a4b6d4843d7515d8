//! The fleet's real processes (`dispatcher`, `worker`) as children, and what is measured of a
//! process: its resident memory and the time until its `/readyz` answers 200.
//!
//! Every process gets a fixed free `FLEET_METRICS_PORT`, kept across restarts, so its readiness
//! can be polled; output goes to one log file per process.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Error;

/// Variables passed through from the bench's environment, if set.
const PASS_THROUGH: [&str; 3] = ["PATH", "HOME", "TMPDIR"];

/// A port that was free a moment ago on 127.0.0.1 (never 4222).
///
/// # Errors
///
/// When no port can be bound.
pub fn free_port() -> Result<u16, Error> {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port != 4222 {
            return Ok(port);
        }
    }
}

/// Sends a signal (`TERM`, `KILL`) to `pid` with `kill(1)`; returns whether it was delivered.
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The resident set size of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Does `GET /readyz` on `127.0.0.1:port` answer 200?
pub async fn is_ready(port: u16) -> bool {
    let probe = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(
            head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"),
        )
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), probe).await,
        Ok(Ok(true))
    )
}

/// Checks that `dir` holds the fleet's `dispatcher` and `worker` binaries.
///
/// # Errors
///
/// [`Error::MissingBinary`] with the command that builds them.
pub fn check_binaries(dir: &Path) -> Result<(), Error> {
    for name in ["dispatcher", "worker"] {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(Error::MissingBinary {
                name: name.into(),
                path,
            });
        }
    }
    Ok(())
}

/// One child process.
#[derive(Debug)]
pub struct Proc {
    /// The process.
    child: Child,
    /// When it was spawned, for the start-to-ready time.
    started: Instant,
    /// Its `FLEET_METRICS_PORT`.
    port: u16,
}

// === impl Proc ===

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }

    /// Has it exited?
    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    /// The dispatcher's metrics port and the process, when running.
    dispatcher: (u16, Option<Proc>),
    /// Each worker slot's metrics port and process, when running.
    workers: Vec<(u16, Option<Proc>)>,
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
        let mut env = vec![
            ("NATS_URL".to_owned(), nats_url.to_owned()),
            ("NO_COLOR".to_owned(), "1".to_owned()),
        ];
        env.extend(
            settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut slots = Vec::with_capacity(workers);
        for _ in 0..workers {
            slots.push((free_port()?, None));
        }
        Ok(Self {
            bin_dir: bin_dir.to_owned(),
            log_dir: log_dir.to_owned(),
            env,
            dispatcher: (free_port()?, None),
            workers: slots,
        })
    }

    /// The number of worker slots.
    pub fn worker_slots(&self) -> usize {
        self.workers.len()
    }

    /// Starts (or restarts, killing the old one) the dispatcher.
    ///
    /// # Errors
    ///
    /// When it cannot be spawned.
    pub fn start_dispatcher(&mut self) -> Result<(), Error> {
        if let Some(mut old) = self.dispatcher.1.take() {
            old.kill();
        }
        let proc = self.spawn("dispatcher", "dispatcher", self.dispatcher.0, &[])?;
        self.dispatcher.1 = Some(proc);
        Ok(())
    }

    /// Starts worker `slot` (`FLEET_WORKER_ID=w<slot>`), killing a running one first.
    ///
    /// # Errors
    ///
    /// When it cannot be spawned.
    pub fn start_worker(&mut self, slot: usize) -> Result<(), Error> {
        let Some((port, running)) = self.workers.get_mut(slot) else {
            return Ok(());
        };
        let port = *port;
        if let Some(mut old) = running.take() {
            old.kill();
        }
        let id = format!("w{slot}");
        let proc = self.spawn(
            "worker",
            &format!("worker-{id}"),
            port,
            &[("FLEET_WORKER_ID", &id)],
        )?;
        self.workers[slot].1 = Some(proc);
        Ok(())
    }

    /// Sends SIGTERM to the dispatcher and waits up to `grace` for it to exit (then SIGKILL).
    pub async fn terminate_dispatcher(&mut self, grace: Duration) {
        if let Some(mut proc) = self.dispatcher.1.take() {
            signal(proc.pid(), "TERM");
            let deadline = Instant::now() + grace;
            while !proc.exited() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            proc.kill();
        }
    }

    /// SIGKILLs worker `slot` (a crash: nothing is acked or drained). Returns whether it ran.
    pub fn kill_worker(&mut self, slot: usize) -> bool {
        match self.workers.get_mut(slot).and_then(|w| w.1.take()) {
            Some(mut proc) => {
                proc.kill();
                true
            }
            None => false,
        }
    }

    /// Is worker `slot` running?
    pub fn worker_running(&self, slot: usize) -> bool {
        self.workers.get(slot).is_some_and(|w| w.1.is_some())
    }

    /// Waits until the dispatcher's `/readyz` answers 200; returns the time since its spawn.
    ///
    /// # Errors
    ///
    /// [`Error::Exited`] when it dies meanwhile, [`Error::Timeout`] after `timeout`.
    pub async fn wait_dispatcher_ready(&mut self, timeout: Duration) -> Result<Duration, Error> {
        let log = self.log_dir.join("dispatcher.log");
        wait_ready(self.dispatcher.1.as_mut(), "dispatcher", log, timeout).await
    }

    /// Waits until worker `slot`'s `/readyz` answers 200; returns the time since its spawn.
    ///
    /// # Errors
    ///
    /// [`Error::Exited`] when it dies meanwhile, [`Error::Timeout`] after `timeout`.
    pub async fn wait_worker_ready(
        &mut self,
        slot: usize,
        timeout: Duration,
    ) -> Result<Duration, Error> {
        let log = self.log_dir.join(format!("worker-w{slot}.log"));
        let proc = self.workers.get_mut(slot).and_then(|w| w.1.as_mut());
        wait_ready(proc, &format!("worker w{slot}"), log, timeout).await
    }

    /// Process ids of the dispatcher and of each running worker.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        if let Some(p) = &self.dispatcher.1 {
            out.push(("dispatcher".to_owned(), p.pid()));
        }
        for (slot, (_, p)) in self.workers.iter().enumerate() {
            if let Some(p) = p {
                out.push((format!("worker w{slot}"), p.pid()));
            }
        }
        out
    }

    /// Spawns `bin` with the fleet's settings plus `extra`, appending to `<log_name>.log`.
    fn spawn(
        &self,
        bin: &str,
        log_name: &str,
        port: u16,
        extra: &[(&str, &str)],
    ) -> Result<Proc, Error> {
        let path = self.bin_dir.join(bin);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("{log_name}.log")))?;
        let mut cmd = Command::new(&path);
        cmd.env_clear();
        for key in PASS_THROUGH {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.env("FLEET_METRICS_PORT", port.to_string());
        cmd.envs(extra.iter().copied());
        let started = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|source| Error::Spawn {
                what: path.display().to_string(),
                source,
            })?;
        Ok(Proc {
            child,
            started,
            port,
        })
    }
}

impl Drop for FleetProcs {
    fn drop(&mut self) {
        if let Some(proc) = self.dispatcher.1.as_mut() {
            proc.kill();
        }
        for (_, proc) in &mut self.workers {
            if let Some(proc) = proc.as_mut() {
                proc.kill();
            }
        }
    }
}

/// Polls `proc`'s `/readyz` every 5 ms until it answers 200.
async fn wait_ready(
    proc: Option<&mut Proc>,
    what: &str,
    log: PathBuf,
    timeout: Duration,
) -> Result<Duration, Error> {
    let Some(proc) = proc else {
        return Err(Error::Exited(what.to_owned(), log));
    };
    loop {
        if is_ready(proc.port).await {
            return Ok(proc.started.elapsed());
        }
        if proc.exited() {
            return Err(Error::Exited(what.to_owned(), log));
        }
        if proc.started.elapsed() > timeout {
            return Err(Error::Timeout(format!(
                "{what} not ready after {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
