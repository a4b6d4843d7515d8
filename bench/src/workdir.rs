//! A temporary directory for logs and JetStream stores, removed on drop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes names unique within one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `<tmp>/fleet-bench-<label>-<pid>-<n>`; kept when `FLEET_BENCH_KEEP` is set, to read logs.
#[derive(Debug)]
pub struct WorkDir {
    /// The directory.
    path: PathBuf,
    /// Keep it on drop.
    keep: bool,
}

// === impl WorkDir ===

impl WorkDir {
    /// Creates a fresh directory.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created.
    pub fn new(label: &str) -> std::io::Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("fleet-bench-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Self {
            path,
            keep: std::env::var_os("FLEET_BENCH_KEEP").is_some(),
        })
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

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("keeping {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
