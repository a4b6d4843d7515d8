//! Running the `fleet` CLI (`target/debug/fleet`) as a user would.

use std::time::Duration;

use serde_json::Value;

/// How long one CLI run may take before it is killed.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// What a CLI run printed and how it exited.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The exit code (`None` when killed by a signal or the timeout).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

// === impl CliOutput ===

impl CliOutput {
    /// Standard output parsed as one JSON value.
    ///
    /// # Panics
    ///
    /// When it is not exactly one JSON value.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("`fleet` stdout is not one JSON value ({e}):\n{self}"))
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `fleet <args>` with `NATS_URL=nats_url` (and a clean environment otherwise), killing it
/// after 30 s.
///
/// # Panics
///
/// When the binary is missing or cannot be started.
pub async fn run_cli(nats_url: &str, args: &[&str]) -> CliOutput {
    let path = crate::binary("fleet");
    let mut cmd = tokio::process::Command::new(&path);
    cmd.env_clear();
    for key in ["PATH", "HOME", "TMPDIR"] {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.env("NATS_URL", nats_url)
        .env("RUST_LOG", "warn")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = cmd.output();
    match tokio::time::timeout(CLI_TIMEOUT, child).await {
        Ok(Ok(output)) => CliOutput {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("cannot run {}: {e}", path.display()),
        Err(_) => CliOutput {
            code: None,
            stdout: String::new(),
            stderr: format!(
                "`fleet {}` did not finish within {CLI_TIMEOUT:?}",
                args.join(" ")
            ),
        },
    }
}

/// `fleet stats --json` against `nats_url`, as an object of task → row.
///
/// # Panics
///
/// When the command fails.
pub async fn stats_by_task(nats_url: &str) -> serde_json::Value {
    let out = run_cli(nats_url, &["stats", "--json"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    let mut by_task = serde_json::Map::new();
    for row in out.json().as_array().cloned().unwrap_or_default() {
        if let Some(task) = row["task"].as_str() {
            by_task.insert(task.to_owned(), row.clone());
        }
    }
    serde_json::Value::Object(by_task)
}
