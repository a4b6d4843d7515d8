//! A temporary directory removed on drop (no more than the kit needs from `tempfile`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes names unique within one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Set any of these to keep every directory (logs, JetStream stores) for a look afterwards.
pub const KEEP_VARS: [&str; 2] = ["FLEET_TEST_KEEP", "FLEET_BENCH_KEEP"];

/// A fresh directory `<tmp>/fleet-<label>-<pid>-<n>-<nanos>`, deleted with its contents on drop.
#[derive(Debug)]
pub struct TempDir {
    /// Where the directory is.
    path: PathBuf,
    /// Keep it on drop (one of [`KEEP_VARS`] is set, or [`TempDir::keep`] was called).
    keep: bool,
}

// === impl TempDir ===

impl TempDir {
    /// Creates the directory.
    ///
    /// # Errors
    ///
    /// When it cannot be created.
    ///
    /// ```no_run
    /// let dir = fleet_testkit::TempDir::new("logs")?;
    /// std::fs::write(dir.path().join("a.log"), "hello")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(label: &str) -> std::io::Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("fleet-{label}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        let keep = KEEP_VARS.iter().any(|v| std::env::var_os(v).is_some());
        Ok(Self { path, keep })
    }

    /// Keeps the directory on drop (to read the logs of a failed run).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("keeping {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
