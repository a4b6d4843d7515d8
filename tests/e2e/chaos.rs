//! A short chaos run (the long one is `fleet-bench chaos`): the `fleet-bench` binary runs it as
//! a child process, the way a person would, and the test reads its exit code and its JSON
//! summary (the last line of its output). Explicit `github.repo_info` requests (one fake repo
//! each) flow while workers are SIGKILLed and restarted or frozen past their ack wait, the
//! dispatcher is restarted and nats-server restarts once; at the end every request has exactly
//! one stored result, its final status in the bucket equals the result's, and no id has more
//! than one dead letter.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

/// How long the whole run may take (the bench settles for at most 60 s after an 8 s window).
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// Requests in the short run.
const REQUESTS: u64 = 300;

#[tokio::test(flavor = "multi_thread")]
async fn chaos_loses_and_duplicates_nothing() {
    let bench = fleet_tests::binary("fleet-bench");
    let requests = REQUESTS.to_string();
    let mut command = tokio::process::Command::new(&bench);
    command
        .arg("--bin-dir")
        .arg(fleet_tests::target_dir())
        .args(["chaos", "--requests", &requests, "--duration", "8s"])
        .args(SHORT_RUN_FAULTS);
    let run = run_bench(command, RUN_LIMIT).await;
    eprintln!("{}", run.stdout);
    run.assert_promises_kept(REQUESTS);
    assert!(run.figure("worker_kills") > 0, "workers were killed");
    assert_eq!(run.figure("worker_stops"), 1, "a worker was frozen");
    assert!(
        run.status.success(),
        "fleet-bench chaos exited with {}:\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
}

/// The process faults of the short runs besides their worker kills: a dispatcher restart and
/// a worker frozen past the ack wait, then up to a minute for the results to settle.
pub(crate) const SHORT_RUN_FAULTS: [&str; 6] = [
    "--dispatcher-restarts",
    "1",
    "--worker-stops",
    "1",
    "--settle",
    "60s",
];

/// What a `fleet-bench` child process left: its exit status, its output and its JSON summary.
pub(crate) struct BenchRun {
    pub(crate) status: std::process::ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// The last line of its output that is JSON.
    pub(crate) summary: Value,
}

// === impl BenchRun ===

impl BenchRun {
    /// The summary's figure `name`.
    ///
    /// # Panics
    ///
    /// When the summary has no such number.
    pub(crate) fn figure(&self, name: &str) -> u64 {
        self.summary[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no figure `{name}` in {:#}", self.summary))
    }

    /// Asserts what every chaos run promises for its `requests`: each has exactly one stored
    /// result, none is lost or stored twice, every final status equals its result, and no id
    /// has more than one dead letter.
    pub(crate) fn assert_promises_kept(&self, requests: u64) {
        let summary = &self.summary;
        assert_eq!(self.figure("requests"), requests, "{summary:#}");
        assert_eq!(
            self.figure("results"),
            requests,
            "every request has a result: {summary:#}"
        );
        assert_eq!(self.figure("lost"), 0, "results lost: {summary:#}");
        assert_eq!(
            self.figure("stored_twice"),
            0,
            "results stored twice: {summary:#}"
        );
        assert_eq!(
            self.figure("status_mismatch"),
            0,
            "status ≠ result: {summary:#}"
        );
        assert!(
            self.figure("max_dead_letters_per_id") <= 1,
            "more than one dead letter for an id: {summary:#}"
        );
    }
}

/// Runs `command` (a `fleet-bench` invocation) within `limit` and reads its JSON summary.
pub(crate) async fn run_bench(mut command: tokio::process::Command, limit: Duration) -> BenchRun {
    let run = command.stdin(Stdio::null()).kill_on_drop(true).output();
    let out = tokio::time::timeout(limit, run)
        .await
        .expect("fleet-bench finishes in time")
        .expect("fleet-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no JSON summary in the output:\n{stdout}\n{stderr}"));
    BenchRun {
        status: out.status,
        stdout,
        stderr,
        summary,
    }
}
