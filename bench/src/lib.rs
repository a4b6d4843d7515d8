//! Benchmarks and chaos runs of the fleet, against real processes on a `nats-server` of their
//! own.
//!
//! - [`bench`] measures the fleet (real `dispatcher` and `worker` processes) against the
//!   broker's own limit: bare async-nats relays that make the same JetStream round trips per
//!   request with no fleet logic ([`relay`]). Throughput and latency of both come from the same
//!   run, so their ratio is fair; start-up times and memory come along.
//! - [`chaos`] publishes thousands of requests while workers are SIGKILLed and restarted, the
//!   dispatcher restarts and nats-server restarts, then checks that every request has exactly
//!   one stored result, and counts duplicated work.
//!
//! Both drive the fleet only through its contract (subjects, JSON, `/readyz`), like the e2e
//! tests. The binary `fleet-bench` runs them (`fleet-bench bench`, `fleet-bench chaos`); the
//! integration tests can call [`chaos::run`] with a small [`chaos::ChaosConfig`].
//!
//! # Layout
//!
//! - [`bench`]: the bench scenarios, report and table.
//! - [`chaos`]: the chaos run, its config and report.
//! - [`classify`]: dispatcher throughput with a scripted LLM that answers after a delay.
//! - [`relay`]: the bare JetStream relay and its variants.
//! - [`load`]: the load generator (burst and fixed concurrency, latencies).
//! - [`proc`]: the fleet's processes, `/readyz` polling, RSS.
//! - [`nats`]: the `nats-server` guard.
//! - [`workdir`]: temporary directories for stores and logs.
//! - [`error`]: the error type.

pub mod bench;
pub mod chaos;
pub mod classify;
pub mod error;
pub mod load;
pub mod nats;
pub mod proc;
pub mod relay;
pub mod workdir;

use std::path::PathBuf;

pub use crate::error::Error;

/// Where the fleet's binaries are by default: the directory of the running executable (so
/// `target/release/fleet-bench` finds `target/release/dispatcher`), or its parent when the
/// executable sits in `deps/` (a test binary).
pub fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(PathBuf::from).unwrap_or(dir)
    } else {
        dir
    }
}
