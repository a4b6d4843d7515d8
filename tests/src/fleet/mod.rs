//! The fleet's real processes (`dispatcher`, `worker`) as children of the test.
//!
//! Each process gets a clean environment: `NATS_URL`, the fast test settings from the design
//! notes, and whatever the test adds. No LLM, no OTLP endpoint and no GitHub token leak in from
//! the machine, so nothing leaves 127.0.0.1. Output goes to one log file per process; the tails
//! are printed when a test panics.
//!
//! # Layout
//!
//! - `builder.rs`: the settings and workers to start with ([`FleetBuilder`]).
//! - `processes.rs`: the running processes ([`Fleet`]).

mod builder;
mod processes;

pub use builder::{FAST_SETTINGS, FleetBuilder};
pub use processes::Fleet;
