//! The error type of every bench and chaos step.

/// What can stop a bench or chaos run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Setting up or watching a server or process failed (a binary missing, a process died, not
    /// ready in time).
    #[error(transparent)]
    Kit(#[from] fleet_testkit::Error),
    /// A process was asked for that is not running.
    #[error("{0} is not running")]
    NotRunning(String),
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
