//! The dispatcher's error type.

use thiserror::Error;

/// Why the dispatcher could not start or keep running.
#[derive(Debug, Error)]
pub enum Error {
    /// NATS, JetStream, telemetry or the health server failed.
    #[error(transparent)]
    Fleet(#[from] fleet_common::Error),
    /// A setting the server cannot honour.
    #[error("{0}")]
    Setting(String),
}
