//! The error type of the shared library.

use thiserror::Error;

/// Errors raised while talking to NATS or reading shared data.
///
/// Messages never contain credentials: they name the operation and the server's answer.
#[derive(Debug, Error)]
pub enum Error {
    /// The connection to NATS could not be made.
    #[error("cannot connect to NATS at {url}: {source}{hint}")]
    Connect {
        /// The server list that was tried (credentials are never part of it).
        url: String,
        /// What to check, in parentheses after the error, or empty.
        hint: &'static str,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// A credentials file could not be read.
    #[error("cannot read NATS credentials file {path}: {source}")]
    Credentials {
        /// The file that was given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JetStream call (stream, consumer, bucket, publish) failed.
    #[error("JetStream {op} failed: {message}")]
    JetStream {
        /// What was being done, such as `create stream FLEET_TASKS`.
        op: String,
        /// The server's or client's error text.
        message: String,
    },
    /// Stored data could not be decoded.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A setting has a value the fleet cannot use.
    #[error("invalid setting: {0}")]
    Config(String),
    /// Telemetry could not be set up.
    #[error("telemetry set-up failed: {0}")]
    Telemetry(String),
    /// The health server could not bind its port.
    #[error("cannot serve health and metrics on port {port}: {source}")]
    Health {
        /// The port that was asked for.
        port: u16,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
}

// === impl Error ===

impl Error {
    /// Wraps any JetStream error with the operation it belongs to.
    pub fn js(op: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::JetStream {
            op: op.into(),
            message: err.to_string(),
        }
    }
}
