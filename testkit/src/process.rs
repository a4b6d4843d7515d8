//! Child processes held by RAII guards: the fleet's binaries (and nats-server) run with a clean
//! environment, log to a file, and are killed when the guard drops.
//!
//! Also what is read or done from outside a process: signals (`kill(1)`, so no `unsafe`),
//! resident memory from `/proc`, and readiness (`GET /readyz` answering 200).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// Variables passed through from the caller's environment, if set; everything else is cleared
/// so no LLM key, OTLP endpoint or GitHub token of the machine leaks into a process.
pub const PASS_THROUGH: [&str; 4] = ["PATH", "HOME", "TMPDIR", "RUST_BACKTRACE"];

/// A signal, sent with `kill(1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ask to drain and exit.
    Term,
    /// A crash.
    Kill,
    /// Freeze (the process keeps its connections but does nothing).
    Stop,
    /// Thaw a stopped process.
    Cont,
}

// === impl Signal ===

impl Signal {
    /// The name `kill(1)` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Term => "TERM",
            Self::Kill => "KILL",
            Self::Stop => "STOP",
            Self::Cont => "CONT",
        }
    }
}

/// Sends `signal` to `pid`; returns whether it was delivered.
pub fn signal(pid: u32, signal: Signal) -> bool {
    Command::new("kill")
        .arg(format!("-{}", signal.as_str()))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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

/// A command for `bin` with a clean environment: [`PASS_THROUGH`], `NO_COLOR=1` (logs go to
/// files) and `RUST_LOG` (the caller's, else `info`). Add the process's settings with `envs`.
pub fn clean_command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear();
    for key in PASS_THROUGH {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
    );
    cmd.env("NO_COLOR", "1");
    cmd
}

/// A running child process; SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct ChildProc {
    /// What it is, for messages (`dispatcher`, `worker w1`).
    name: String,
    /// The process.
    child: Child,
    /// Its stdout and stderr (appended to across restarts).
    log: PathBuf,
    /// When it was spawned, for the start-to-ready time.
    started: Instant,
}

// === impl ChildProc ===

impl ChildProc {
    /// Spawns `cmd` with stdin closed and stdout and stderr appended to `log`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the log cannot be opened, [`Error::Spawn`] when the process cannot be
    /// started.
    ///
    /// ```no_run
    /// use fleet_testkit::process::{ChildProc, clean_command};
    /// let mut cmd = clean_command("target/debug/worker".as_ref());
    /// cmd.env("NATS_URL", "nats://127.0.0.1:14222");
    /// let worker = ChildProc::spawn("worker", cmd, "/tmp/worker.log".as_ref())?;
    /// # Ok::<(), fleet_testkit::Error>(())
    /// ```
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self, Error> {
        let out = OpenOptions::new().create(true).append(true).open(log)?;
        let started = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|source| Error::Spawn {
                what: format!("{name} ({})", cmd.get_program().to_string_lossy()),
                source,
            })?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            started,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Time since it was spawned.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// How it ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `signal`; returns whether it was delivered.
    pub fn signal(&self, signal: Signal) -> bool {
        self::signal(self.pid(), signal)
    }

    /// Its resident memory in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }

    /// SIGKILL and reap (a crash: nothing is acked or drained); a stopped process dies too.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `grace` for the exit; SIGKILLs it after that.
    ///
    /// Returns the exit status, or `None` when it had to be killed.
    pub async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        self.signal(Signal::Term);
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`ChildProc::terminate`] for synchronous callers (blocks the thread while it waits).
    pub fn terminate_blocking(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        self.signal(Signal::Term);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Polls `GET http://127.0.0.1:<port>/readyz` every 5 ms until it answers 200; returns the
    /// time since the spawn.
    ///
    /// # Errors
    ///
    /// [`Error::Exited`] when the process dies meanwhile, [`Error::Timeout`] when it is not ready
    /// `timeout` after its spawn.
    pub async fn wait_ready(&mut self, port: u16, timeout: Duration) -> Result<Duration, Error> {
        loop {
            if crate::http::is_ready(port).await {
                return Ok(self.age());
            }
            self.check_running()?;
            if self.age() > timeout {
                return Err(Error::Timeout(format!(
                    "{} not ready after {timeout:?}; see {}",
                    self.name,
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// [`Error::Exited`] if the process has exited.
    ///
    /// # Errors
    ///
    /// When it has.
    pub fn check_running(&mut self) -> Result<(), Error> {
        match self.exited() {
            None => Ok(()),
            Some(status) => Err(Error::Exited {
                what: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
            }),
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.kill();
    }
}
