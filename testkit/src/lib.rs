//! What the integration tests (`tests/`) and the benchmarks (`bench/`) share, so neither
//! repeats the other and `tests` never depends on `bench`.
//!
//! Everything that runs is held by an RAII guard that cleans up on drop:
//!
//! - [`NatsServer`]: a real `nats-server` with JetStream on a free port and its own store dir,
//!   found in one order (`NATS_SERVER_BIN`, `nats-server` on `PATH`, `/usr/sbin/nats-server`).
//! - [`NatsCluster`]: several of those as one JetStream cluster (routes between them, R3
//!   streams), of a current server only (`NATS_SERVER_CURRENT_BIN`); nodes stop and start again
//!   in place.
//! - [`ChildProc`]: a child process (the fleet's `dispatcher` and `worker`, or any binary) with
//!   a clean environment and a log file, killed on drop; readiness by polling `/readyz`.
//! - [`TempDir`]: a self-removing temporary directory.
//! - [`FakeGithub`]: a scriptable imitation of the GitHub REST API on `127.0.0.1:0`, counting
//!   requests per repo.
//!
//! Functions return [`Error`]; the test harness turns errors into panics, the bench into exit
//! codes.
//!
//! # Layout
//!
//! - `nats.rs`: the `nats-server` guard and its binary lookup.
//! - `cluster.rs`: the cluster guard and the current server's lookup.
//! - `process.rs`: child-process guards, signals, RSS, readiness.
//! - `http.rs`: a minimal HTTP GET and the `/readyz` probe.
//! - `github.rs`: the fake GitHub API.
//! - `tempdir.rs`: temporary directories.
//! - `error.rs`: the error type.

pub mod cluster;
pub mod error;
pub mod github;
pub mod http;
pub mod nats;
pub mod process;
pub mod tempdir;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

pub use cluster::NatsCluster;
pub use error::Error;
pub use github::{FakeGithub, Repo, Seen};
pub use http::HttpResponse;
pub use nats::NatsServer;
pub use process::{ChildProc, Signal};
pub use tempdir::TempDir;

/// A port that was free a moment ago on 127.0.0.1 (never 4222, the machine's own server).
///
/// # Errors
///
/// When no port can be bound.
pub fn free_port() -> std::io::Result<u16> {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port != 4222 {
            return Ok(port);
        }
    }
}

/// The directory of the fleet's binaries as seen from the running executable: its own
/// directory (`target/release/fleet-bench` → `target/release`), or the parent when it sits in
/// `deps/` (a test binary: `target/debug/deps/e2e-…` → `target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(PathBuf::from).unwrap_or(dir)
    } else {
        dir
    }
}

/// `dir/name`, if that file exists.
///
/// # Errors
///
/// [`Error::MissingBinary`], saying how to build it.
pub fn binary(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinary {
            name: name.to_owned(),
            path,
        })
    }
}

/// The last `lines` lines of the file at `path` (or a note saying it could not be read).
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}
