//! End-to-end tests: real nats-server, real fleet binaries, fake GitHub, a scripted
//! OpenAI-compatible server and an OTLP receiver.
//!
//! One module per scenario. Build the binaries first: `cargo build --workspace --bins`.

mod auth;
mod bad_input;
mod chaos;
mod cli;
mod cluster;
mod control;
mod dead_letter;
mod duplicates;
mod eval;
mod explicit;
mod github;
mod health;
mod keda;
mod lifecycle;
mod llm_routing;
mod local_model;
mod max_concurrency;
mod metrics;
mod permanent_failure;
mod poison;
mod priority;
mod prometheus;
mod python_worker;
mod retries;
mod roles;
mod secrets;
mod seed;
mod server_restart;
mod sigkill;
mod sigterm;
mod startup;
mod telemetry;
mod timing;
mod tls;
