//! The dispatcher's settings.

use std::time::Duration;

use clap::Parser;
use fleet_common::config::{LlmArgs, NatsArgs, TelemetryArgs, parse_duration};

/// Default number of requests handled at once.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Default largest request accepted, in bytes.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Default redelivery deadline of a request.
pub const DEFAULT_ACK_WAIT: &str = "30s";
/// Default time SIGTERM waits for requests in flight.
pub const DEFAULT_DRAIN_GRACE: &str = "20s";

/// The fleet's routing service: reads requests, picks a task, publishes it.
#[derive(Debug, Clone, Parser)]
#[command(name = "dispatcher", version, about)]
pub struct Config {
    /// How to reach NATS.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Logs, traces, metrics.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    /// The LLM that routes natural-language requests; without one the built-in rules route.
    #[command(flatten)]
    pub llm: LlmArgs,

    /// Requests handled at once by this dispatcher.
    #[arg(long, env = "FLEET_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,

    /// Largest request accepted, in bytes; larger ones are rejected as too_large.
    #[arg(long, env = "FLEET_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,

    /// Redelivery deadline of a request the dispatcher took but did not finish.
    #[arg(long, env = "FLEET_ACK_WAIT", default_value = DEFAULT_ACK_WAIT, value_parser = parse_duration)]
    pub ack_wait: Duration,

    /// How long SIGTERM waits for requests in flight.
    #[arg(long, env = "FLEET_DRAIN_GRACE", default_value = DEFAULT_DRAIN_GRACE, value_parser = parse_duration)]
    pub drain_grace: Duration,
}
