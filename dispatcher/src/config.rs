//! The dispatcher's settings.

use std::time::Duration;

use clap::Parser;
use fleet_common::config::{LlmArgs, ManageArgs, NatsArgs, TelemetryArgs, parse_duration};

use crate::classifier::{CacheSize, ResponseFormatMode};

/// Default number of requests handled at once.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Default largest request accepted, in bytes.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Default redelivery deadline of a request.
pub const DEFAULT_ACK_WAIT: &str = "30s";
/// Default LLM classifications in flight.
pub const DEFAULT_LLM_CONCURRENCY: usize = 64;
/// Default number of cached classifications.
pub const DEFAULT_CLASSIFY_CACHE_SIZE: u64 = 10_000;
/// Default bytes the classification cache holds (with 64 KiB requests, 10,000 entries alone
/// could take about 1.3 GB: the text is in the key and often in the input).
pub const DEFAULT_CLASSIFY_CACHE_BYTES: &str = "16MiB";
/// Default life of a cached classification.
pub const DEFAULT_CLASSIFY_CACHE_TTL: &str = "10m";
/// Default failed LLM calls in a row that open the circuit.
pub const DEFAULT_LLM_BREAKER_THRESHOLD: u32 = 5;
/// Default time the LLM circuit stays open.
pub const DEFAULT_LLM_BREAKER_COOLDOWN: &str = "30s";
/// Default time SIGTERM waits for requests in flight.
pub const DEFAULT_DRAIN_GRACE: &str = "20s";

/// The fleet's routing service: reads requests, picks a task, publishes it.
#[derive(Debug, Clone, Parser)]
#[command(name = "dispatcher", version, about)]
pub struct Config {
    /// How to reach NATS.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Whether this dispatcher creates the streams, buckets and its consumers, or only uses the
    /// ones `fleet setup` made.
    #[command(flatten)]
    pub streams: ManageArgs,

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

    /// How the LLM is asked for its answer's shape: auto (json_schema, falling back to
    /// json_object when the server refuses it), json_schema, or json_object.
    #[arg(long, env = "FLEET_LLM_RESPONSE_FORMAT", value_enum, default_value_t = ResponseFormatMode::Auto)]
    pub llm_response_format: ResponseFormatMode,

    /// LLM classifications in flight at once.
    #[arg(long, env = "FLEET_LLM_CONCURRENCY", default_value_t = DEFAULT_LLM_CONCURRENCY)]
    pub llm_concurrency: usize,

    /// How much the classification cache holds: entries (`FLEET_CLASSIFY_CACHE_SIZE`) and
    /// bytes (`FLEET_CLASSIFY_CACHE_BYTES`).
    #[command(flatten)]
    pub classify_cache_size: CacheSize,

    /// How long a cached classification is used.
    #[arg(long, env = "FLEET_CLASSIFY_CACHE_TTL", default_value = DEFAULT_CLASSIFY_CACHE_TTL, value_parser = parse_duration)]
    pub classify_cache_ttl: Duration,

    /// Failed LLM calls in a row that open the circuit (the rules route meanwhile).
    #[arg(long, env = "FLEET_LLM_BREAKER_THRESHOLD", default_value_t = DEFAULT_LLM_BREAKER_THRESHOLD)]
    pub llm_breaker_threshold: u32,

    /// How long the LLM circuit stays open before one trial call.
    #[arg(long, env = "FLEET_LLM_BREAKER_COOLDOWN", default_value = DEFAULT_LLM_BREAKER_COOLDOWN, value_parser = parse_duration)]
    pub llm_breaker_cooldown: Duration,

    /// How long SIGTERM waits for requests in flight.
    #[arg(long, env = "FLEET_DRAIN_GRACE", default_value = DEFAULT_DRAIN_GRACE, value_parser = parse_duration)]
    pub drain_grace: Duration,
}
