//! The kit's error type.

use std::path::PathBuf;

/// What can go wrong while setting up or watching a test's or a benchmark's world.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary is not where it was looked for.
    #[error(
        "{name} is missing at {}: build the fleet with `cargo build [--release] --workspace --bins`, or install nats-server (NATS_SERVER_BIN points at one)",
        path.display()
    )]
    MissingBinary {
        /// The binary's name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// No current nats-server for a cluster (see [`crate::cluster::current_nats_server_bin`]).
    #[error(
        "a NATS cluster needs a current nats-server (2.10 or later; 2.9 before 2.9.21 mishandles \
         Nats-Expected-Last-Subject-Sequence in clusters): {0}. Install one and point at it with \
         `export NATS_SERVER_CURRENT_BIN=\"$(scripts/ensure-nats.sh --current)\"` (scripts/test.sh does)"
    )]
    NoCurrentServer(String),
    /// A process could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// The process.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A process that should run has exited.
    #[error("{what} exited ({status}); see its log {}", log.display())]
    Exited {
        /// The process.
        what: String,
        /// How it ended.
        status: String,
        /// Its log file.
        log: PathBuf,
    },
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// An HTTP exchange failed or its answer was not HTTP.
    #[error("GET {url}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Local file, socket or process I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
