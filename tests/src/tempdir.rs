//! A temporary directory removed on drop (the harness needs no more than this from `tempfile`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes names unique within one test process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system temp dir, deleted with its contents on drop.
#[derive(Debug)]
pub struct TempDir {
    /// Where the directory is.
    path: PathBuf,
    /// Keep the directory after the test (set `FLEET_TEST_KEEP=1`) to inspect logs and stores.
    keep: bool,
}

// === impl TempDir ===

impl TempDir {
    /// Creates `<tmp>/fleet-test-<label>-<pid>-<n>`.
    ///
    /// # Panics
    ///
    /// When the directory cannot be created.
    pub fn new(label: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "fleet-test-{label}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        let keep = std::env::var_os("FLEET_TEST_KEEP").is_some();
        Self { path, keep }
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
