//! Integration-test harness for the fleet.
//!
//! The end-to-end tests (`tests/e2e/`) drive the fleet only through its contract
//! (`/work/shared/SPEC.md`): they publish requests on `fleet.requests`, read results from the
//! `FLEET_RESULTS` stream, states from the `fleet-status` bucket, dead letters from `FLEET_DLQ`,
//! and run the `fleet` CLI. Messages are handled as [`serde_json::Value`], never as the fleet
//! crates' own types, so the tests keep the contract honest.
//!
//! Everything a test needs is an RAII guard that cleans up on drop; the guards shared with the
//! benchmarks live in `fleet-testkit`, and this crate gives them the tests' face (panics
//! instead of errors) and adds what only tests need:
//!
//! - [`NatsServer`]: a real `nats-server` with JetStream on a free port and its own store dir.
//! - [`FakeGithub`]: a scriptable imitation of the GitHub REST API on `127.0.0.1:0`.
//! - [`FakeOpenAi`]: a scripted OpenAI-compatible server on `127.0.0.1:0`.
//! - [`OtlpReceiver`]: an OTLP/gRPC trace receiver on `127.0.0.1:0`.
//! - [`Fleet`]: the real `dispatcher` and `worker` binaries as child processes.
//! - [`Client`]: publish requests and read results, states and dead letters.
//! - [`cli`]: run the `fleet` binary.
//!
//! # Layout
//!
//! - `nats.rs`: the `nats-server` guard (the kit's, panicking on failure).
//! - `github.rs`: the fake GitHub API (the kit's, panicking on failure).
//! - `openai.rs`: the scripted OpenAI-compatible server.
//! - `otlp.rs`: the OTLP trace receiver.
//! - `metrics.rs`: scraping and reading Prometheus `/metrics`.
//! - `fleet/`: the fleet's processes (builder, processes, logs, readiness).
//! - `client.rs`: the NATS-side view a user of the fleet has.
//! - `watch.rs`: the states a request goes through.
//! - `dlq.rs`: dead letters.
//! - `cli.rs`: running the `fleet` CLI.
//! - `http.rs`: a minimal HTTP GET (the kit's, panicking on failure).
//! - `env.rs`: one test's whole world ([`TestEnv`]) and shared assertions.
//!
//! # Running
//!
//! The binaries under test must be built first:
//!
//! ```text
//! cargo build --workspace --bins
//! cargo nextest run -p fleet-tests
//! ```
//!
//! `NATS_SERVER_BIN` points at a `nats-server` binary (default: `nats-server` on `PATH`, else
//! `/usr/sbin/nats-server`). `RUST_LOG`, when set, is passed on to the fleet's processes.
//! `FLEET_TEST_KEEP=1` keeps every temporary directory (logs, stores).

pub mod cli;
pub mod client;
pub mod dlq;
pub mod env;
pub mod fleet;
pub mod github;
pub mod http;
pub mod local_model;
pub mod metrics;
pub mod nats;
pub mod openai;
pub mod otlp;
pub mod python_worker;
pub mod watch;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use cli::{CliOutput, run_cli, stats_by_task};
pub use client::Client;
pub use dlq::DeadLetter;
pub use env::{TestEnv, assert_outcome};
pub use fleet::{Fleet, FleetBuilder};
pub use fleet_testkit::{TempDir, tail};
pub use github::{FakeGithub, Repo};
pub use http::{HttpResponse, http_get};
pub use local_model::{LOCAL_MODEL, LocalModel};
pub use metrics::Scrape;
pub use nats::NatsServer;
pub use openai::{DefaultRoute, FakeOpenAi, LlmCall, Reply};
pub use otlp::{CollectedSpan, OtlpReceiver};
pub use python_worker::{PYTHON_TASK, PythonWorker};
pub use watch::StatusWatch;

/// The tasks every worker runs by default, as named in the SPEC.
pub const BUILTIN_TASKS: [&str; 4] = ["github.repo_info", "text.transform", "chat", "note.append"];

/// Generous default for waiting on an outcome (tests assert outcomes, not speed).
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `check` every 50 ms until it returns `Some`, or gives up after `timeout`.
///
/// Returns `None` on timeout so the caller can fail with a message that says what it waited for.
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The directory holding the debug binaries (`target/debug`), found from the test executable,
/// which sits in `target/debug/deps`.
pub fn target_dir() -> PathBuf {
    fleet_testkit::bin_dir()
}

/// The path of one of the workspace's binaries (`dispatcher`, `worker`, `fleet`,
/// `fleet-bench`).
///
/// # Panics
///
/// When the binary has not been built, with a message saying how to build it.
pub fn binary(name: &str) -> PathBuf {
    fleet_testkit::binary(&target_dir(), name)
        .unwrap_or_else(|e| panic!("{e}; run `cargo build --workspace --bins` first"))
}

/// Is `id` a valid request id (1–64 chars of `[A-Za-z0-9_-]`)?
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod selftest;
