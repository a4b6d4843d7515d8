//! What a chaos run found, its verdict and its table.

use serde::Serialize;

/// How many ids each example list keeps.
pub(super) const EXAMPLES: usize = 20;

/// What a chaos run found (the JSON summary's fields).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosReport {
    /// Requests published (each acked by the requests stream, after retries).
    pub requests: usize,
    /// Publishes that failed and were tried again (NATS down, timeouts).
    pub publish_retries: usize,
    /// Worker SIGKILLs.
    pub worker_kills: usize,
    /// Worker freezes (SIGSTOP past the ack wait, then SIGCONT).
    pub worker_stops: usize,
    /// Dispatcher restarts.
    pub dispatcher_restarts: usize,
    /// NATS nodes (1: one server; 3: a cluster).
    pub nats_nodes: usize,
    /// `FLEET_STREAM_REPLICAS` of the fleet.
    pub stream_replicas: usize,
    /// The `NATS_URL` each process got: `all` nodes' URLs, or `one each`.
    pub fleet_urls: String,
    /// nats-server restarts (a cluster: nodes started again after a kill).
    pub nats_restarts: usize,
    /// A cluster: nodes stopped (SIGKILL or SIGTERM).
    pub node_kills: usize,
    /// A cluster: of those, nodes that were the leader of the stream or consumer aimed at.
    pub leader_kills: usize,
    /// What was done to NATS and when (seconds from the window's start).
    pub nats_events: Vec<String>,
    /// Distinct request ids with a stored result.
    pub results: usize,
    /// Requests without a stored result.
    pub lost: usize,
    /// Requests with more than one stored result.
    pub stored_twice: usize,
    /// Requests whose final `state` in the status bucket is not their result's `status`
    /// (a missing status record counts).
    pub status_mismatch: usize,
    /// Requests whose task ran more than once (the fake GitHub's repo endpoint was hit more
    /// than once for its repo).
    pub ran_twice: usize,
    /// The most runs of any one request's task.
    pub max_runs: usize,
    /// Results with `attempts` > 1: delivered (and maybe run) more than once.
    pub redelivered: usize,
    /// Results whose `attempts` is below the runs the fake GitHub saw (the SPEC: `attempts` is
    /// how many times the task ran).
    pub attempts_below_runs: usize,
    /// The highest `attempts` of any result.
    pub max_attempts: u64,
    /// Results whose status is not `succeeded`.
    pub not_succeeded: usize,
    /// Dead letters in the DLQ stream.
    pub dead_letters: usize,
    /// Request ids with more than one dead letter.
    pub several_dead_letters: usize,
    /// The most dead letters of any one request id.
    pub max_dead_letters_per_id: usize,
    /// Task messages published beyond one per request (0 when `Nats-Msg-Id` dedup held).
    pub extra_tasks: i64,
    /// Seconds spent publishing (the chaos window).
    pub chaos_s: f64,
    /// Seconds from the end of the chaos window until every result was there (or the timeout).
    pub settle_s: f64,
    /// Up to 20 lost ids.
    pub lost_ids: Vec<String>,
    /// Up to 20 ids stored twice.
    pub stored_twice_ids: Vec<String>,
    /// Up to 20 `id: state=… result=…` for the status mismatches.
    pub status_mismatches: Vec<String>,
    /// Up to 20 ids with more than one dead letter.
    pub several_dead_letters_ids: Vec<String>,
    /// Up to 20 `id (runs)` of tasks that ran more than once.
    pub ran_twice_ids: Vec<String>,
    /// Up to 20 `id: attempts=… runs=…` where `attempts` is below the runs.
    pub attempts_below_runs_ids: Vec<String>,
    /// Where the logs are (kept when the run failed).
    pub logs: String,
}

// === impl ChaosReport ===

impl ChaosReport {
    /// No result lost or stored twice, every final status equal to the result, at most one
    /// dead letter per id.
    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    /// What failed, in words (empty when the run passed).
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.lost > 0 {
            out.push(format!("{} lost", self.lost));
        }
        if self.stored_twice > 0 {
            out.push(format!("{} stored twice", self.stored_twice));
        }
        if self.status_mismatch > 0 {
            out.push(format!("{} status ≠ result", self.status_mismatch));
        }
        if self.max_dead_letters_per_id > 1 {
            out.push(format!(
                "{} ids with more than one dead letter",
                self.several_dead_letters
            ));
        }
        out
    }

    /// The report as a text table, with the verdict and examples of what failed.
    pub fn table(&self) -> String {
        let rows: Vec<(&str, String)> = vec![
            ("requests", self.requests.to_string()),
            ("publish retries", self.publish_retries.to_string()),
            ("worker SIGKILLs", self.worker_kills.to_string()),
            (
                "worker SIGSTOPs past ack wait",
                self.worker_stops.to_string(),
            ),
            ("dispatcher restarts", self.dispatcher_restarts.to_string()),
            (
                "NATS nodes / stream replicas",
                format!("{} / {}", self.nats_nodes, self.stream_replicas),
            ),
            ("fleet's NATS_URL", self.fleet_urls.clone()),
            ("nats-server restarts", self.nats_restarts.to_string()),
            (
                "node kills (of a leader)",
                format!("{} ({})", self.node_kills, self.leader_kills),
            ),
            ("results stored", self.results.to_string()),
            ("LOST", self.lost.to_string()),
            ("STORED TWICE", self.stored_twice.to_string()),
            ("STATUS ≠ RESULT", self.status_mismatch.to_string()),
            (
                "MAX DEAD LETTERS PER ID",
                self.max_dead_letters_per_id.to_string(),
            ),
            ("dead letters", self.dead_letters.to_string()),
            ("ran twice (GitHub hits > 1)", self.ran_twice.to_string()),
            ("max runs of one task", self.max_runs.to_string()),
            ("redelivered (attempts > 1)", self.redelivered.to_string()),
            ("attempts < runs seen", self.attempts_below_runs.to_string()),
            ("max attempts", self.max_attempts.to_string()),
            ("not succeeded", self.not_succeeded.to_string()),
            ("extra task messages", self.extra_tasks.to_string()),
            ("chaos window s", format!("{:.1}", self.chaos_s)),
            ("settle s", format!("{:.1}", self.settle_s)),
            ("logs", self.logs.clone()),
        ];
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("{k:<30} {v:>12}\n"));
        }
        for event in &self.nats_events {
            out.push_str(&format!("nats: {event}\n"));
        }
        for (what, ids) in [
            ("lost", &self.lost_ids),
            ("stored twice", &self.stored_twice_ids),
            ("status ≠ result", &self.status_mismatches),
            ("several dead letters", &self.several_dead_letters_ids),
            ("ran twice (expected under chaos)", &self.ran_twice_ids),
            ("attempts < runs", &self.attempts_below_runs_ids),
        ] {
            if !ids.is_empty() {
                out.push_str(&format!("{what}: {}\n", ids.join(", ")));
            }
        }
        let failures = self.failures();
        if failures.is_empty() {
            out.push_str(
                "PASS: every request has exactly one stored result, its final status equals it, \
                 at most one dead letter per id\n",
            );
        } else {
            out.push_str(&format!("FAIL: {}\n", failures.join(", ")));
        }
        out
    }
}
