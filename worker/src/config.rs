//! The worker's settings.

use std::time::Duration;

use clap::Parser;
use fleet_common::config::{LlmArgs, ManageArgs, NatsArgs, TelemetryArgs, parse_duration};
use secrecy::SecretString;

/// Default number of tasks in flight per worker.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Default redelivery deadline; in-progress acks extend it while a task runs.
pub const DEFAULT_ACK_WAIT: &str = "30s";
/// Default number of deliveries before the dead-letter queue.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default shortest retry delay.
pub const DEFAULT_BACKOFF_MIN: &str = "1s";
/// Default longest retry delay.
pub const DEFAULT_BACKOFF_MAX: &str = "60s";
/// Default time SIGTERM waits for tasks in flight.
pub const DEFAULT_DRAIN_GRACE: &str = "20s";
/// Default timeout of one outbound HTTP call of a task.
pub const DEFAULT_HTTP_TIMEOUT: &str = "10s";
/// Default `FLEET_TASK_TIMEOUT`.
pub const DEFAULT_TASK_TIMEOUT: &str = "5m";
/// Default GitHub REST API base URL.
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

/// A fleet member: runs tasks from JetStream and stores exactly one result per request.
#[derive(Debug, Clone, Parser)]
#[command(name = "worker", version, about)]
pub struct Config {
    /// How to reach NATS.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Whether this worker creates the streams, buckets and its consumers, or only uses the
    /// ones `fleet setup` made.
    #[command(flatten)]
    pub streams: ManageArgs,

    /// Logs, traces, metrics.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    /// The LLM the `chat` task answers with.
    #[command(flatten)]
    pub llm: LlmArgs,

    /// Tasks this worker runs, comma-separated (default: all built-in tasks).
    #[arg(long, env = "FLEET_TASKS", value_delimiter = ',')]
    pub tasks: Vec<String>,

    /// Tasks in flight in this worker, across all its tasks.
    #[arg(long, env = "FLEET_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,

    /// Redelivery deadline of a task; in-progress acks extend it while the task runs.
    #[arg(long, env = "FLEET_ACK_WAIT", default_value = DEFAULT_ACK_WAIT, value_parser = parse_duration)]
    pub ack_wait: Duration,

    /// Deliveries of a task before it goes to the dead-letter queue.
    #[arg(long, env = "FLEET_MAX_ATTEMPTS", default_value_t = DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: u32,

    /// Shortest retry delay (exponential with jitter from here).
    #[arg(long, env = "FLEET_BACKOFF_MIN", default_value = DEFAULT_BACKOFF_MIN, value_parser = parse_duration)]
    pub backoff_min: Duration,

    /// Longest retry delay.
    #[arg(long, env = "FLEET_BACKOFF_MAX", default_value = DEFAULT_BACKOFF_MAX, value_parser = parse_duration)]
    pub backoff_max: Duration,

    /// How long SIGTERM waits for tasks in flight before giving them back (NAK).
    #[arg(long, env = "FLEET_DRAIN_GRACE", default_value = DEFAULT_DRAIN_GRACE, value_parser = parse_duration)]
    pub drain_grace: Duration,

    /// This worker's name in status records and results (default: hostname-pid).
    #[arg(long, env = "FLEET_WORKER_ID")]
    pub worker_id: Option<String>,

    /// How long one attempt of a task may run where its catalog entry sets no `timeout`; past
    /// it the attempt is a retryable failure.
    #[arg(long, env = "FLEET_TASK_TIMEOUT", default_value = DEFAULT_TASK_TIMEOUT, value_parser = parse_duration)]
    pub task_timeout: Duration,

    /// Fleet-wide limits that override the tasks' own catalog `max_concurrency`, as
    /// `task=N` pairs, comma-separated (`github.repo_info=4`). Give every worker the same.
    #[arg(long, env = "FLEET_TASK_MAX_CONCURRENCY", value_delimiter = ',', value_parser = parse_limit)]
    pub task_max_concurrency: Vec<(String, u32)>,

    /// Timeout of one outbound HTTP call of a task.
    #[arg(long, env = "FLEET_HTTP_TIMEOUT", default_value = DEFAULT_HTTP_TIMEOUT, value_parser = parse_duration)]
    pub http_timeout: Duration,

    /// GitHub REST API base URL (GitHub Enterprise: https://HOST/api/v3).
    #[arg(long, env = "GITHUB_API_URL", default_value = DEFAULT_GITHUB_API_URL)]
    pub github_api_url: String,

    /// Where `note.append` writes its notes (default: `fleet-notes` in the temporary directory).
    #[arg(long, env = "FLEET_NOTES_DIR")]
    pub notes_dir: Option<std::path::PathBuf>,

    /// GitHub token; raises the API rate limit and reaches private repositories.
    #[arg(long, env = "GITHUB_TOKEN", value_parser = |s: &str| Ok::<_, String>(SecretString::from(s.to_owned())), hide_env_values = true)]
    pub github_token: Option<SecretString>,
}

/// Reads one `task=N` pair of `FLEET_TASK_MAX_CONCURRENCY` (N at least 1).
fn parse_limit(pair: &str) -> Result<(String, u32), String> {
    let (task, n) = pair
        .split_once('=')
        .ok_or_else(|| format!("`{pair}` is not `task=N`"))?;
    match n.trim().parse::<u32>() {
        Ok(n) if n > 0 && !task.trim().is_empty() => Ok((task.trim().to_owned(), n)),
        _ => Err(format!("`{pair}` is not `task=N` with N at least 1")),
    }
}

// === impl Config ===

impl Config {
    /// The fleet-wide limit `FLEET_TASK_MAX_CONCURRENCY` sets for `task`, if any.
    pub fn max_concurrency_of(&self, task: &str) -> Option<u32> {
        self.task_max_concurrency
            .iter()
            .rev()
            .find(|(t, _)| t == task)
            .map(|(_, n)| *n)
    }

    /// Where `note.append` writes: the setting, or `fleet-notes` in the temporary directory.
    pub fn notes_dir(&self) -> std::path::PathBuf {
        self.notes_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("fleet-notes"))
    }

    /// The worker's id: the setting, or hostname-pid.
    pub fn worker_id(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "worker".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn limits_are_task_equals_n() {
        assert_eq!(
            parse_limit("github.repo_info=4"),
            Ok(("github.repo_info".into(), 4))
        );
        assert!(parse_limit("chat").is_err());
        assert!(parse_limit("chat=0").is_err());
        assert!(parse_limit("=3").is_err());
        assert!(parse_limit("chat=many").is_err());
    }
}
