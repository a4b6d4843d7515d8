//! The error type of every bench and chaos step.

use std::path::PathBuf;

/// What can stop a bench or chaos run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A fleet binary or `nats-server` is not where it was looked for.
    #[error(
        "{name} is missing at {}: build the fleet with `cargo build --release --workspace --bins` or pass --bin-dir",
        path.display()
    )]
    MissingBinary {
        /// The binary's name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A process could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// The process.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A NATS or JetStream call failed.
    #[error("{op}: {message}")]
    Nats {
        /// What was being done.
        op: String,
        /// The client's error, as text (async-nats errors are generic over their kind).
        message: String,
    },
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A process that should run has exited.
    #[error("{0} exited unexpectedly; see its log in {1}")]
    Exited(String, PathBuf),
    /// Local file or process I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

// === impl Error ===

impl Error {
    /// Wraps any NATS error with what was being done.
    pub(crate) fn nats(op: impl Into<String>, e: impl std::fmt::Display) -> Self {
        Self::Nats {
            op: op.into(),
            message: e.to_string(),
        }
    }
}
