//! Benchmarks and chaos runs of the fleet, against real processes on a `nats-server` of their
//! own.
//!
//! - [`bench`] measures the fleet (real `dispatcher` and `worker` processes, default settings)
//!   against the broker's best for the same two hops (`relay-min`, a bare async-nats relay,
//!   [`relay`]). Throughput and latency of both come from the same run, so their ratio is fair;
//!   start-up times and memory come along.
//! - [`chaos`] publishes thousands of requests while workers are SIGKILLed and restarted or
//!   frozen past their ack wait, the dispatcher restarts and nats-server restarts (or, with
//!   `--cluster`, nodes of a three-node cluster with R3 streams are killed, the streams'
//!   leaders among them), then checks per request id: exactly one stored result, the final
//!   status equal to it, at most one dead letter; and counts the tasks that ran twice (a fake
//!   GitHub counts its hits per repo).
//!
//! Both drive the fleet only through its contract (subjects, JSON, `/readyz`), like the e2e
//! tests. The binary `fleet-bench` runs them (`fleet-bench bench`, `fleet-bench chaos`); the
//! integration tests run the binary with a short chaos and read its JSON summary.
//!
//! # Layout
//!
//! - [`bench`]: the bench scenarios, report and table.
//! - [`chaos`]: the chaos run (config, run, counting, report).
//! - [`classify`]: dispatcher throughput with a scripted LLM that answers after a delay.
//! - [`delays`]: how late delayed requests (`not_before`) start.
//! - [`priority`]: how many queued requests start before a high one; low work's share.
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
pub mod delays;
pub mod error;
pub mod load;
pub mod priority;
pub mod proc;
pub mod relay;

pub use crate::error::Error;

/// Where the fleet's binaries are by default: the directory of the running executable (so
/// `target/release/fleet-bench` finds `target/release/dispatcher`).
pub use fleet_testkit::bin_dir as default_bin_dir;
