//! A real `nats-server` with JetStream, held by an RAII guard (as nats.rs `nats-server/src/lib.rs`).

use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tempdir::TempDir;

/// A running `nats-server` on `127.0.0.1:<free port>` with its own store directory.
///
/// Killed on drop, and its directory removed. Never the machine's server on port 4222.
#[derive(Debug)]
pub struct NatsServer {
    /// The server process (None only between a kill and a start).
    child: Option<Child>,
    /// The client port, kept across restarts so clients reconnect to the same address.
    port: u16,
    /// Holds `store/` (JetStream data, kept across restarts) and `nats.log`.
    dir: TempDir,
    /// The `nats-server` binary.
    bin: PathBuf,
    /// Extra command-line arguments (authentication, say).
    args: Vec<String>,
    /// `user:password@` or `token@` for [`NatsServer::url`], when the server wants it.
    userinfo: String,
}

// === impl NatsServer ===

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// When the binary cannot be found or started, or the port never answers.
    pub fn start() -> Self {
        Self::start_with(&[], "")
    }

    /// Like [`NatsServer::start`] with extra server arguments (such as `--user u --pass p`);
    /// `userinfo` (`u:p` or a token) goes into [`NatsServer::url`] so the harness can connect.
    ///
    /// # Panics
    ///
    /// As [`NatsServer::start`].
    pub fn start_with(args: &[&str], userinfo: &str) -> Self {
        let dir = TempDir::new("nats");
        std::fs::create_dir_all(dir.path().join("store")).expect("create the JetStream store dir");
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
            bin: nats_server_bin(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            userinfo: if userinfo.is_empty() {
                String::new()
            } else {
                format!("{userinfo}@")
            },
        };
        server.spawn();
        server
    }

    /// The client URL, `nats://[userinfo@]127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://{}127.0.0.1:{}", self.userinfo, self.port)
    }

    /// The client URL without credentials.
    pub fn plain_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL, like a crash) and starts it again on the same port and store.
    ///
    /// # Panics
    ///
    /// When the server cannot be started again.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills the server and waits for it to be gone, leaving the store in place.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::tail(&self.dir.path().join("nats.log"), lines)
    }

    /// The log's `[WRN]`/`[ERR]` lines (at most 30) and its last 5 lines.
    pub fn log_summary(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let notable: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains("[WRN]") || l.contains("[ERR]") || l.contains("[FTL]"))
            .collect();
        let notable = &notable[notable.len().saturating_sub(30)..];
        let last = &lines[lines.len().saturating_sub(5)..];
        format!("{}\n...\n{}", notable.join("\n"), last.join("\n"))
    }

    /// Starts the process and waits for its port.
    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("open the nats-server log");
        let log_err: File = log.try_clone().expect("clone the log handle");
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);

        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "nats-server exited with {status} before listening:\n{}",
                    self.log_tail(30)
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server never listened on {addr}:\n{}",
                self.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- nats-server log (warnings, errors, last lines) ----\n{}",
                self.log_summary()
            );
        }
        self.kill();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
///
/// # Panics
///
/// When no port can be bound.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("local address").port();
    assert_ne!(port, 4222, "never use the machine's own nats-server port");
    port
}

/// `NATS_SERVER_BIN`, else `nats-server` on `PATH`, else `/usr/sbin/nats-server`.
fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("/usr/sbin/nats-server")
}
