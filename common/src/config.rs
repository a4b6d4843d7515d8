//! Settings shared by every binary, and the NATS connection built from them.
//!
//! Each group is a `clap::Args` struct that the binaries pull into their own `Config` with
//! `#[command(flatten)]`. Every field has a flag and an environment variable of the same meaning
//! (see `SPEC.md`); secrets are [`SecretString`] so that they never reach a log or a `Debug` dump.
//! `--help` shows the values of environment variables, so secrets and URLs (which may carry
//! `user:password@`) hide theirs (`hide_env_values`).

use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

mod context;
mod manage;
mod nats;

pub use context::selected_context;
pub use manage::ManageArgs;
pub use nats::{NatsArgs, redact_url};

/// Default NATS server list.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default subject, stream and bucket prefix.
pub const DEFAULT_PREFIX: &str = "fleet";
/// Default time results (and so id deduplication) are kept.
pub const DEFAULT_RESULT_TTL: &str = "24h";
/// Default port for `/metrics`, `/healthz` and `/readyz`.
pub const DEFAULT_METRICS_PORT: u16 = 9464;
/// Default model name for LLM calls.
pub const DEFAULT_LLM_MODEL: &str = "gpt-4o-mini";
/// Default Azure OpenAI API version.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";
/// Default retries of one LLM call.
pub const DEFAULT_LLM_RETRIES: usize = 2;
/// Default timeout of one LLM call.
pub const DEFAULT_LLM_TIMEOUT: &str = "30s";

/// Parses a duration such as `500ms`, `30s` or `24h`.
///
/// # Errors
///
/// Returns a message naming the accepted forms when the text is not a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like 500ms, 30s or 24h ({e})"))
}

fn parse_secret(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s.to_owned()))
}

/// Checks a fleet prefix: letters, digits, `-` and `_`.
///
/// # Errors
///
/// Returns a message saying which characters are allowed.
pub fn parse_prefix(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a fleet prefix: use 1-32 letters, digits, `-` or `_`"
        ))
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with trace and request ids as fields.
    Json,
}

/// Where spans go: the OpenTelemetry standard variables.
#[derive(Debug, Clone, Args)]
pub struct OtlpArgs {
    /// OTLP collector endpoint (such as http://localhost:4317); unset, no spans are exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", hide_env_values = true)]
    pub otlp_endpoint: Option<String>,

    /// OTLP protocol: `grpc` or `http/protobuf`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "grpc")]
    pub otlp_protocol: String,

    /// Service name on the spans (default: fleet-dispatcher, fleet-worker or fleet-cli).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,
}

// === impl OtlpArgs ===

impl OtlpArgs {
    /// Whether spans are exported.
    pub fn exports(&self) -> bool {
        self.otlp_endpoint.as_deref().is_some_and(|e| !e.is_empty())
    }
}

/// How a process reports on itself: logs, traces, metrics and health.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log format (`text` or `json`); RUST_LOG filters the lines.
    #[arg(long, env = "FLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Port of /metrics, /healthz and /readyz; 0 picks a free port and logs it.
    #[arg(long, env = "FLEET_METRICS_PORT", default_value_t = DEFAULT_METRICS_PORT)]
    pub metrics_port: u16,

    /// Where spans go.
    #[command(flatten)]
    pub otlp: OtlpArgs,
}

/// Which OpenAI-compatible server answers LLM calls, if any.
#[derive(Debug, Clone, Args)]
pub struct LlmArgs {
    /// OpenAI API key (a local server needs none).
    #[arg(long, env = "OPENAI_API_KEY", value_parser = parse_secret, hide_env_values = true)]
    pub openai_api_key: Option<SecretString>,

    /// Base URL of any OpenAI-compatible server (vLLM, Ollama, llama.cpp: http://host:port/v1).
    #[arg(long, env = "OPENAI_BASE_URL", hide_env_values = true)]
    pub openai_base_url: Option<String>,

    /// Azure OpenAI endpoint (https://NAME.openai.azure.com); used instead of OpenAI when set.
    #[arg(long, env = "AZURE_OPENAI_ENDPOINT", hide_env_values = true)]
    pub azure_openai_endpoint: Option<String>,

    /// Azure OpenAI API key.
    #[arg(long, env = "AZURE_OPENAI_API_KEY", value_parser = parse_secret, hide_env_values = true)]
    pub azure_openai_api_key: Option<SecretString>,

    /// Azure OpenAI deployment name (default: the model name).
    #[arg(long, env = "AZURE_OPENAI_DEPLOYMENT")]
    pub azure_openai_deployment: Option<String>,

    /// Azure OpenAI API version.
    #[arg(long, env = "AZURE_OPENAI_API_VERSION", default_value = DEFAULT_AZURE_API_VERSION)]
    pub azure_openai_api_version: String,

    /// Model name sent to the server.
    #[arg(long, env = "FLEET_LLM_MODEL", default_value = DEFAULT_LLM_MODEL)]
    pub llm_model: String,

    /// Timeout of one LLM call.
    #[arg(long, env = "FLEET_LLM_TIMEOUT", default_value = DEFAULT_LLM_TIMEOUT, value_parser = parse_duration)]
    pub llm_timeout: Duration,

    /// Retries of an LLM call on 429, 5xx and connection errors (exponential, honouring
    /// Retry-After).
    #[arg(long, env = "FLEET_LLM_RETRIES", default_value_t = DEFAULT_LLM_RETRIES)]
    pub llm_retries: usize,
}

// === impl LlmArgs ===

impl LlmArgs {
    /// Whether an LLM is configured at all.
    pub fn is_configured(&self) -> bool {
        self.openai_api_key.is_some()
            || self.openai_base_url.is_some()
            || self.azure_openai_endpoint.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(parse_prefix("fleet-a_1").is_ok());
        assert!(parse_prefix("fleet.a").is_err());
        assert!(parse_prefix("").is_err());
    }
}
