//! The Python worker of `examples/python-worker` (nats-py), joining a running fleet: its
//! dependency installed once with pip into `target/python-worker-lib` (PyPI's nats-py, pure
//! Python), the worker started on the test's server, killed on drop.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use fleet_testkit::process::ChildProc;

use crate::TempDir;

/// The task the Python worker runs.
pub const PYTHON_TASK: &str = "text.wordcount";

/// A running Python worker (the `python3 worker.py` process, killed on drop).
pub struct PythonWorker {
    /// The process, its output in a log file.
    proc: ChildProc,
    /// Keeps the log directory alive.
    _dir: TempDir,
}

// === impl PythonWorker ===

impl PythonWorker {
    /// Installs nats-py (first time only) and starts the worker on `nats_url`; waits until it
    /// says it is ready (its catalog entry is published and its consumer bound).
    ///
    /// # Panics
    ///
    /// When pip or the worker fails, or the worker is not ready within two minutes.
    pub async fn start(nats_url: &str) -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let example = root.join("examples/python-worker");
        let lib = install(&root.join("target/python-worker-lib"), &example);
        let dir = TempDir::new("test-pyworker").expect("create a temporary directory");
        let mut cmd = Command::new(python());
        cmd.arg(example.join("worker.py"))
            .env("NATS_URL", nats_url)
            .env("PYTHONPATH", &lib)
            .env("PYTHONUNBUFFERED", "1")
            .env("FLEET_WORKER_ID", "py-test");
        let proc = ChildProc::spawn("python worker", cmd, &dir.path().join("worker.log"))
            .expect("start python3 worker.py");
        let worker = Self { proc, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !worker.log_tail().contains("worker.py: ready") {
            assert!(
                Instant::now() < deadline,
                "the Python worker is not ready after 2 minutes:\n{}",
                worker.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        worker
    }

    /// The worker's output so far.
    pub fn log_tail(&self) -> String {
        std::fs::read_to_string(self.proc.log()).unwrap_or_default()
    }
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Installs the example's requirements into `lib` once (a stamp file says it is complete;
/// tests running at once install into their own folder and the first rename wins).
fn install(lib: &Path, example: &Path) -> PathBuf {
    let stamp = lib.join(".fleet-installed");
    if stamp.exists() {
        return lib.to_path_buf();
    }
    let tmp = lib.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let status = Command::new(python())
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(["--no-deps", "--target"])
        .arg(&tmp)
        .arg("-r")
        .arg(example.join("requirements.txt"))
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .status()
        .expect("run pip");
    assert!(status.success(), "pip could not install nats-py");
    std::fs::write(tmp.join(".fleet-installed"), "").expect("write the stamp");
    if std::fs::rename(&tmp, lib).is_err() {
        // Another test installed it meanwhile.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    lib.to_path_buf()
}
