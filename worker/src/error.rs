//! The worker's errors: a task's failure carries its retry decision.

use std::time::Duration;

use fleet_common::messages::ErrorKind;
use thiserror::Error;

/// How a task failed, and so what happens next.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum TaskError {
    /// A passing failure (network, 5xx, 429, timeout): NAK and try again after a delay.
    #[error("{message}")]
    Retry {
        /// What went wrong.
        message: String,
        /// How long the other side asked us to wait (`Retry-After`), when it said.
        after: Option<Duration>,
    },
    /// A permanent failure (bad input, 404): TERM and a `failed` result.
    #[error("{message}")]
    Abort {
        /// The error kind for the result.
        kind: ErrorKind,
        /// What went wrong, as a sentence a person can act on.
        message: String,
    },
}

// === impl TaskError ===

impl TaskError {
    /// A retryable failure.
    pub fn retry(message: impl Into<String>) -> Self {
        TaskError::Retry {
            message: message.into(),
            after: None,
        }
    }

    /// A permanent failure of kind `task_error`.
    pub fn abort(message: impl Into<String>) -> Self {
        TaskError::Abort {
            kind: ErrorKind::TaskError,
            message: message.into(),
        }
    }

    /// The error kind recorded for an attempt.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TaskError::Retry { .. } => ErrorKind::TaskError,
            TaskError::Abort { kind, .. } => *kind,
        }
    }
}

/// Why the worker could not start or keep running.
#[derive(Debug, Error)]
pub enum Error {
    /// NATS, JetStream, telemetry or the health server failed.
    #[error(transparent)]
    Fleet(#[from] fleet_common::Error),
    /// `FLEET_TASKS` names a task this worker does not have.
    #[error("unknown task `{0}` in FLEET_TASKS; this worker runs: {1}")]
    UnknownTask(String, String),
}
