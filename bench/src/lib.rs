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
//! - [`proc`]: the fleet's processes (slots with fixed metrics ports).
//! - [`error`]: the error type.
//!
//! The `nats-server` guard, temporary directories, process guards, readiness and RSS come from
//! `fleet-testkit`, shared with the integration tests.

pub mod bench;
pub mod chaos;
pub mod classify;
pub mod error;
pub mod load;
pub mod proc;
pub mod relay;

pub use crate::error::Error;

/// Where the fleet's binaries are by default: the directory of the running executable (so
/// `target/release/fleet-bench` finds `target/release/dispatcher`).
pub use fleet_testkit::bin_dir as default_bin_dir;
