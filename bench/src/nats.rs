//! A `nats-server` of the bench's own: JetStream on a free port of 127.0.0.1, its own store.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, proc, workdir::WorkDir};

/// A running `nats-server`, killed on drop. Never the machine's own server on port 4222.
#[derive(Debug)]
pub struct NatsServer {
    /// The process (None only during a restart).
    child: Option<Child>,
    /// The client port, kept across restarts so clients reconnect to the same address.
    port: u16,
    /// Holds `store/` (kept across restarts) and `nats.log`.
    dir: WorkDir,
    /// The binary.
    bin: PathBuf,
}

// === impl NatsServer ===

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// When the binary is missing or the server does not listen within 15 s.
    pub async fn start() -> Result<Self, Error> {
        let dir = WorkDir::new("nats")?;
        std::fs::create_dir_all(dir.path().join("store"))?;
        let bin = nats_server_bin();
        if !bin.is_file() {
            return Err(Error::MissingBinary {
                name: "nats-server".into(),
                path: bin,
            });
        }
        let mut server = Self {
            child: None,
            port: proc::free_port()?,
            dir,
            bin,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server (SIGKILL when `kill`, else SIGTERM and a wait for its exit) and starts it
    /// again on the same port and store.
    ///
    /// # Errors
    ///
    /// When the server cannot be started again.
    pub async fn restart(&mut self, kill: bool) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            if kill {
                let _ = child.kill();
            } else {
                proc::signal(child.id(), "TERM");
                let deadline = Instant::now() + Duration::from_secs(10);
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        self.spawn().await
    }

    /// Starts the process and waits for its port.
    async fn spawn(&mut self) -> Result<(), Error> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))?;
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| Error::Spawn {
                what: "nats-server".into(),
                source,
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "nats-server never listened on port {}",
                    self.port
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The version the server binary reports (`nats-server: v2.9.10`).
pub fn version() -> String {
    Command::new(nats_server_bin())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// `NATS_SERVER_BIN`, else `/usr/sbin/nats-server`, else `nats-server` on `PATH`.
fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let system = PathBuf::from("/usr/sbin/nats-server");
    if system.is_file() {
        return system;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("nats-server"))
                .find(|p| p.is_file())
        })
        .unwrap_or(system)
}
