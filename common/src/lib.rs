//! The fleet's shared contract: what every process agrees on.
//!
//! The dispatcher, the workers and the `fleet` client all speak through NATS JetStream. This crate
//! holds what they must agree on so that none of them can drift: the names of subjects, streams
//! and buckets, the JSON messages, the task catalog, the settings shared by every binary,
//! telemetry set-up, health endpoints and graceful shutdown.
//!
//! # Layout
//!
//! - [`config`] - settings shared by every binary (`NatsArgs`, `TelemetryArgs`, `LlmArgs`) and
//!   the NATS connection built from them.
//! - [`topology`] - subjects, streams, buckets and consumers for a prefix, and their idempotent
//!   creation ([`topology::Fleet`]).
//! - [`messages`] - requests, task messages, results, status records and error kinds.
//! - [`catalog`] - task specifications, schema validation and the `fleet-catalog` bucket.
//! - [`patterns`] - routing patterns, the catalog's phrasings that certainly mean a task.
//! - [`priority`] - a request's priority and where each priority's tasks wait.
//! - [`lifecycle`] - the request's life: its states, its one result, its dead letters.
//! - [`pull`] - a bounded pull loop over a durable consumer, shared by dispatcher and workers.
//! - [`llm`] - the OpenAI-compatible client (OpenAI, Azure OpenAI, local servers).
//! - [`telemetry`] - tracing, OpenTelemetry export and trace propagation in NATS headers.
//! - [`http`] - what is read from HTTP answers (`Retry-After`).
//! - [`health`] - `/healthz`, `/readyz` and `/metrics`.
//! - [`shutdown`] - SIGTERM/SIGINT handling.
//! - [`error`] - the crate's error type.

pub mod catalog;
pub mod config;
pub mod error;
pub mod health;
pub mod http;
pub mod lifecycle;
pub mod llm;
pub mod messages;
pub mod patterns;
pub mod priority;
pub mod pull;
pub mod shutdown;
pub mod telemetry;
pub mod topology;

pub use error::Error;
