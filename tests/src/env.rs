//! One test's whole world: a server, the fake GitHub, the fleet and a client, plus the
//! assertions every scenario shares.

use serde_json::Value;

use crate::cli::{CliOutput, run_cli};
use crate::client::Client;
use crate::fleet::{Fleet, FleetBuilder};
use crate::github::FakeGithub;
use crate::nats::NatsServer;

/// A ready fleet on its own `nats-server`, with the fake GitHub behind it.
///
/// Fields drop in order: the fleet's processes go before the server they talk to.
#[derive(Debug)]
pub struct TestEnv {
    /// The fleet's processes.
    pub fleet: Fleet,
    /// A client connected to the server.
    pub client: Client,
    /// The fake GitHub API the workers use.
    pub github: FakeGithub,
    /// The server.
    pub nats: NatsServer,
}

// === impl TestEnv ===

impl TestEnv {
    /// Starts everything with the fast settings and one worker `w1`, and waits until ready.
    pub async fn start() -> Self {
        Self::start_with(|builder| builder).await
    }

    /// Like [`TestEnv::start`], with the fleet configured by `configure` (settings, workers).
    ///
    /// # Panics
    ///
    /// When any part cannot be started or the fleet is not ready in time.
    pub async fn start_with(configure: impl FnOnce(FleetBuilder) -> FleetBuilder) -> Self {
        let nats = NatsServer::start();
        let github = FakeGithub::start().await;
        let fleet = configure(Fleet::builder(&nats).github(&github))
            .start()
            .await;
        let client = Client::connect(&nats.url()).await;
        Self {
            fleet,
            client,
            github,
            nats,
        }
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        self.nats.url()
    }

    /// Runs `fleet <args>` against this server.
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        run_cli(&self.url(), args).await
    }

    /// The row of `task` in `fleet stats --json`.
    ///
    /// # Panics
    ///
    /// When the command fails or has no row for `task`.
    pub async fn stats_row(&self, task: &str) -> Value {
        let rows = crate::cli::stats_by_task(&self.url()).await;
        rows.get(task)
            .cloned()
            .unwrap_or_else(|| panic!("a {task} row: {rows:#}"))
    }
}

/// Asserts that `result` has `status` and, unless it succeeded, an error of `kind` with a
/// non-empty message. Returns the error message (empty for a success).
///
/// # Panics
///
/// When the result does not match, printing it whole.
pub fn assert_outcome(result: &Value, status: &str, kind: Option<&str>) -> String {
    assert_eq!(
        result["status"], status,
        "expected status {status}, got result {result:#}"
    );
    match kind {
        None => String::new(),
        Some(kind) => {
            assert_eq!(
                result["error"]["kind"], kind,
                "expected error kind {kind}, got result {result:#}"
            );
            let message = result["error"]["message"].as_str().unwrap_or_default();
            assert!(
                !message.trim().is_empty(),
                "error message should be a sentence, got result {result:#}"
            );
            message.to_string()
        }
    }
}
