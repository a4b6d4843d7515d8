//! The running processes of one fleet, their logs and their readiness.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use fleet_testkit::process::{ChildProc, clean_command};

use crate::TempDir;

/// The fleet's processes; all killed on drop (each is a [`ChildProc`]).
#[derive(Debug)]
pub struct Fleet {
    /// Holds the log files.
    dir: TempDir,
    /// `NATS_URL` for every process.
    nats_url: String,
    /// Settings for every process.
    env: BTreeMap<String, String>,
    /// The dispatcher, when running.
    dispatcher: Option<ChildProc>,
    /// Running workers by `FLEET_WORKER_ID`.
    workers: BTreeMap<String, ChildProc>,
    /// Logs of processes that were killed or stopped, for the failure report.
    retired: Vec<PathBuf>,
}

// === impl Fleet ===

impl Fleet {
    /// A fleet with no process running yet, for [`FleetBuilder::start`].
    pub(super) fn new(nats_url: String, env: BTreeMap<String, String>) -> Self {
        Self {
            dir: TempDir::new("test-fleet").expect("create a temporary directory"),
            nats_url,
            env,
            dispatcher: None,
            workers: BTreeMap::new(),
            retired: Vec::new(),
        }
    }

    /// Starts (or restarts) the dispatcher.
    ///
    /// # Panics
    ///
    /// When the binary is missing or cannot be started.
    pub fn start_dispatcher(&mut self) {
        if let Some(mut old) = self.dispatcher.take() {
            old.kill();
            self.retired.push(old.log().to_owned());
        }
        let proc = self.spawn("dispatcher", "dispatcher", &[]);
        self.dispatcher = Some(proc);
    }

    /// Starts a worker with `FLEET_WORKER_ID=id` (log `worker-<id>.log`, appended on restart).
    ///
    /// # Panics
    ///
    /// When the binary is missing, cannot be started, or a worker `id` is already running.
    pub fn start_worker(&mut self, id: &str) {
        assert!(
            !self.workers.contains_key(id),
            "worker {id} is already running"
        );
        let proc = self.spawn(
            "worker",
            &format!("worker-{id}"),
            &[("FLEET_WORKER_ID", id)],
        );
        self.workers.insert(id.to_string(), proc);
    }

    /// Starts a worker like [`Fleet::start_worker`], with `extra` settings of its own on top
    /// of the fleet's (a worker configured unlike the others).
    ///
    /// # Panics
    ///
    /// As [`Fleet::start_worker`].
    pub fn start_worker_with(&mut self, id: &str, extra: &[(&str, &str)]) {
        assert!(
            !self.workers.contains_key(id),
            "worker {id} is already running"
        );
        let mut settings = vec![("FLEET_WORKER_ID", id)];
        settings.extend_from_slice(extra);
        let proc = self.spawn("worker", &format!("worker-{id}"), &settings);
        self.workers.insert(id.to_string(), proc);
    }

    /// The pid of worker `id`.
    ///
    /// # Panics
    ///
    /// When no such worker runs.
    pub fn worker_pid(&self, id: &str) -> u32 {
        self.workers
            .get(id)
            .unwrap_or_else(|| panic!("no worker {id}"))
            .pid()
    }

    /// The ids of the running workers.
    pub fn worker_ids(&self) -> Vec<String> {
        self.workers.keys().cloned().collect()
    }

    /// SIGKILLs worker `id` (a crash: nothing is acked or drained).
    ///
    /// # Panics
    ///
    /// When no such worker runs.
    pub fn kill_worker(&mut self, id: &str) {
        let mut proc = self
            .workers
            .remove(id)
            .unwrap_or_else(|| panic!("no worker {id}"));
        proc.kill();
        self.retired.push(proc.log().to_owned());
    }

    /// Sends SIGTERM to worker `id` and waits up to `timeout` for it to exit.
    ///
    /// Returns the exit status, or `None` if it was still running at the timeout (it is then
    /// killed).
    ///
    /// # Panics
    ///
    /// When no such worker runs.
    pub async fn terminate_worker(&mut self, id: &str, timeout: Duration) -> Option<ExitStatus> {
        let proc = self
            .workers
            .remove(id)
            .unwrap_or_else(|| panic!("no worker {id}"));
        self.terminate(proc, timeout).await
    }

    /// SIGKILLs the dispatcher.
    pub fn kill_dispatcher(&mut self) {
        if let Some(mut proc) = self.dispatcher.take() {
            proc.kill();
            self.retired.push(proc.log().to_owned());
        }
    }

    /// Sends SIGTERM to the dispatcher and waits up to `timeout` for it to exit.
    ///
    /// Returns the exit status, or `None` if it did not exit in time (it is then killed) or was
    /// not running.
    pub async fn terminate_dispatcher(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let proc = self.dispatcher.take()?;
        self.terminate(proc, timeout).await
    }

    /// Waits until the catalog (`fleet-catalog`) lists every built-in task and the consumer
    /// `dispatcher` exists on `FLEET_REQUESTS`.
    ///
    /// # Panics
    ///
    /// When a process exits meanwhile or the fleet is not ready within 30 s.
    pub async fn wait_ready(&mut self) {
        let client = crate::client::Client::connect(&self.nats_url).await;
        self.wait_ready_with(&client).await;
    }

    /// [`Fleet::wait_ready`], looking through `client` (one the test connected itself: over TLS,
    /// say).
    ///
    /// # Panics
    ///
    /// As [`Fleet::wait_ready`].
    pub async fn wait_ready_with(&mut self, client: &crate::client::Client) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut missing: Vec<String>;
        loop {
            self.assert_running();
            missing = Vec::new();
            for task in crate::BUILTIN_TASKS {
                if client.catalog_entry(task).await.is_none() {
                    missing.push(format!("catalog entry {task} in fleet-catalog"));
                }
            }
            if !client.consumer_exists("FLEET_REQUESTS", "dispatcher").await {
                missing.push("consumer `dispatcher` on FLEET_REQUESTS".to_string());
            }
            if missing.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("fleet not ready after 30 s; still missing: {missing:?}");
    }

    /// Panics if a process that should be running has exited.
    pub fn assert_running(&mut self) {
        let mut dead = Vec::new();
        if let Some(proc) = self.dispatcher.as_mut()
            && let Some(status) = proc.exited()
        {
            dead.push(format!("dispatcher exited with {status}"));
        }
        for (id, proc) in self.workers.iter_mut() {
            if let Some(status) = proc.exited() {
                dead.push(format!("worker {id} exited with {status}"));
            }
        }
        if !dead.is_empty() {
            panic!("fleet process died: {}", dead.join("; "));
        }
    }

    /// The port of the `/healthz`, `/readyz`, `/metrics` server of `process` (`"dispatcher"` or
    /// a worker id), read from its log (`FLEET_METRICS_PORT=0` picks a free port and logs it).
    /// Waits up to 10 s for the line.
    pub async fn metrics_port(&self, process: &str) -> Option<u16> {
        let log = if process == "dispatcher" {
            self.dispatcher.as_ref()?.log().to_owned()
        } else {
            self.workers.get(process)?.log().to_owned()
        };
        crate::poll_until(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let port = text
                .lines()
                .filter(|l| l.contains("/metrics"))
                .find_map(port_in_line);
            async move { port }
        })
        .await
    }

    /// All logs of this fleet so far (running and retired processes), concatenated.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for path in self.log_paths() {
            out.push_str(&format!("==== {} ====\n", path.display()));
            out.push_str(&String::from_utf8_lossy(
                &std::fs::read(&path).unwrap_or_default(),
            ));
            out.push('\n');
        }
        out
    }

    /// Prints the last lines of every process's log to stderr.
    pub fn dump_logs(&self) {
        for path in self.log_paths() {
            eprintln!(
                "---- {} (tail) ----\n{}",
                path.display(),
                crate::tail(&path, 40)
            );
        }
    }

    /// The log files, deduplicated (restarts append to the same file).
    fn log_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self
            .dispatcher
            .iter()
            .chain(self.workers.values())
            .map(|p| p.log().to_owned())
            .chain(self.retired.iter().cloned())
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// SIGTERM, then wait for the exit (SIGKILL after `timeout`).
    async fn terminate(&mut self, mut proc: ChildProc, timeout: Duration) -> Option<ExitStatus> {
        let status = proc.terminate(timeout).await;
        self.retired.push(proc.log().to_owned());
        status
    }

    /// Spawns `bin` with the fleet's environment plus `extra`, logging to `<log_name>.log`.
    fn spawn(&self, bin: &str, log_name: &str, extra: &[(&str, &str)]) -> ChildProc {
        let mut cmd = clean_command(&crate::binary(bin));
        cmd.env("NATS_URL", &self.nats_url);
        cmd.envs(&self.env);
        cmd.envs(extra.iter().copied());
        let log = self.dir.path().join(format!("{log_name}.log"));
        ChildProc::spawn(log_name, cmd, &log).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The port of the last `host:port` in a log line (e.g. `addr=0.0.0.0:40101`).
fn port_in_line(line: &str) -> Option<u16> {
    line.split(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == '}')
        .filter_map(|word| word.rsplit_once(':'))
        .filter_map(|(_, port)| port.parse::<u16>().ok())
        .next_back()
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // The processes are killed when their guards drop, right after this.
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}
