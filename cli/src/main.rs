//! `fleet`: the fleet's command-line client.
//!
//! Submits requests, follows them to their result, and inspects status, the catalog and the
//! dead-letter queue. Exit codes: 0 succeeded, 1 failed / rejected / dead (or not found),
//! 2 usage, 3 timed out waiting, 4 cannot reach NATS.
//!
//! # Layout
//!
//! - `commands` - the command line.
//! - `submit` - `submit`, `watch` and the wait loop.
//! - `inspect` - `status`, `catalog`, `trace`.
//! - `dlq` - `dlq list`, `dlq replay`, `dlq purge`.
//! - `stats` - each task's queue.
//! - `control` - `list`, `cancel`, `approve`, `deny`.
//! - `setup` - creating the streams, buckets and consumers (admin).
//! - `eval` - routing accuracy on labelled requests.
//! - `output` - printing results and states.
//! - `progress` - the spinner while waiting, on a terminal only.

mod commands;
mod control;
mod dlq;
mod eval;
mod inspect;
mod output;
mod progress;
mod setup;
mod stats;
mod submit;

use crate::commands::Cli;

/// Exit code: the request succeeded (or the command did its job).
pub(crate) const EXIT_OK: i32 = 0;
/// Exit code: failed, rejected, dead, or not found.
pub(crate) const EXIT_FAILED: i32 = 1;
/// Exit code: bad usage.
pub(crate) const EXIT_USAGE: i32 = 2;
/// Exit code: timed out waiting.
pub(crate) const EXIT_TIMEOUT: i32 = 3;
/// Exit code: NATS cannot be reached (or the fleet is not on it).
pub(crate) const EXIT_NO_NATS: i32 = 4;

#[tokio::main]
async fn main() {
    // `fleet dlq list | head` ends quietly, as Unix tools do, instead of panicking.
    sigpipe::reset();
    let cli = Cli::from_args();
    let code = {
        // Dropped before exit, so the submit span is flushed.
        let _telemetry = match fleet_common::telemetry::init(
            "fleet-cli",
            &cli.otlp,
            fleet_common::config::LogFormat::Text,
            "warn",
        ) {
            Ok(guard) => Some(guard),
            Err(e) => {
                eprintln!("fleet: {e}");
                None
            }
        };
        commands::run(cli).await
    };
    std::process::exit(code);
}
