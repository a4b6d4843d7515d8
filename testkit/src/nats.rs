//! A real `nats-server` with JetStream, held by an RAII guard (as nats.rs
//! `nats-server/src/lib.rs`).
//!
//! One binary lookup order for everyone: `NATS_SERVER_BIN`, then `nats-server` on `PATH`, then
//! `/usr/sbin/nats-server` (Debian's package).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{ChildProc, Signal};
use crate::{Error, TempDir};

/// How long a (re)started server may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a SIGTERMed server may take to shut down before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running `nats-server` on `127.0.0.1:<free port>` with its own store directory.
///
/// Killed on drop (its log's warnings are printed first when the thread is panicking), and its
/// directory removed. Never the machine's own server on port 4222.
#[derive(Debug)]
pub struct NatsServer {
    /// The server process (None only between a stop and a start).
    child: Option<ChildProc>,
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
    /// # Errors
    ///
    /// When the binary is missing, cannot be started, or the port never answers.
    ///
    /// ```no_run
    /// let nats = fleet_testkit::NatsServer::start()?;
    /// println!("{}", nats.url());
    /// # Ok::<(), fleet_testkit::Error>(())
    /// ```
    pub fn start() -> Result<Self, Error> {
        Self::start_with(&[], "")
    }

    /// Like [`NatsServer::start`] with extra server arguments (such as `--user u --pass p`);
    /// `userinfo` (`u:p` or a token) goes into [`NatsServer::url`] so clients can connect.
    ///
    /// # Errors
    ///
    /// As [`NatsServer::start`].
    pub fn start_with(args: &[&str], userinfo: &str) -> Result<Self, Error> {
        Self::start_bin(&nats_server_bin(), args, userinfo)
    }

    /// Like [`NatsServer::start_with`] with the binary `bin` (a cluster node runs the current
    /// server, see [`crate::NatsCluster`]).
    ///
    /// # Errors
    ///
    /// As [`NatsServer::start`].
    pub fn start_bin(bin: &Path, args: &[&str], userinfo: &str) -> Result<Self, Error> {
        Self::start_on(bin, crate::free_port()?, args, userinfo)
    }

    /// Like [`NatsServer::start_bin`] on the client port `port`.
    pub(crate) fn start_on(
        bin: &Path,
        port: u16,
        args: &[&str],
        userinfo: &str,
    ) -> Result<Self, Error> {
        let bin = bin.to_owned();
        if !bin.is_file() {
            return Err(Error::MissingBinary {
                name: "nats-server".into(),
                path: bin,
            });
        }
        let dir = TempDir::new("nats")?;
        std::fs::create_dir_all(dir.path().join("store"))?;
        let mut server = Self {
            child: None,
            port,
            dir,
            bin,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            userinfo: if userinfo.is_empty() {
                String::new()
            } else {
                format!("{userinfo}@")
            },
        };
        server.spawn()?;
        Ok(server)
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

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildProc::pid)
    }

    /// Is the server process running (not stopped by [`NatsServer::stop`])?
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts a stopped server again on the same port and store (nothing when it runs).
    ///
    /// # Errors
    ///
    /// When the server cannot be started again.
    pub fn start_again(&mut self) -> Result<(), Error> {
        if self.child.is_none() {
            self.spawn()?;
        }
        Ok(())
    }

    /// Keeps the server's directory (store and log) on drop.
    pub fn keep(&mut self) {
        self.dir.keep();
    }

    /// The directory holding the server's `store/` and `nats.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server (see [`NatsServer::stop`]) and starts it again on the same port and
    /// store.
    ///
    /// # Errors
    ///
    /// When the server cannot be started again.
    pub fn restart(&mut self, how: Signal) -> Result<(), Error> {
        self.stop(how);
        self.spawn()
    }

    /// Stops the server and waits for it to be gone, leaving the store in place: SIGKILL for
    /// [`Signal::Kill`] (a crash), else `how` and a wait of up to 10 s for the exit (SIGKILL
    /// after that).
    pub fn stop(&mut self, how: Signal) {
        if let Some(mut child) = self.child.take() {
            if how == Signal::Kill {
                child.kill();
            } else {
                child.signal(how);
                let deadline = Instant::now() + STOP_GRACE;
                while child.exited().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                child.kill();
            }
        }
    }

    /// SIGKILLs the server, leaving the store in place.
    pub fn kill(&mut self) {
        self.stop(Signal::Kill);
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::tail(&self.log(), lines)
    }

    /// The log's `[WRN]`/`[ERR]`/`[FTL]` lines (at most 30) and its last 5 lines.
    pub fn log_summary(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
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

    /// The server's log file.
    fn log(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// Starts the process and waits for its port.
    fn spawn(&mut self) -> Result<(), Error> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .args(&self.args);
        let child = self
            .child
            .insert(ChildProc::spawn("nats-server", cmd, &self.log())?);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            child.check_running()?;
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "nats-server never listened on {addr}:\n{}",
                    self.log_tail(30)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
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

/// The `nats-server` binary: `NATS_SERVER_BIN`, else `nats-server` on `PATH`, else
/// `/usr/sbin/nats-server`.
pub fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("nats-server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

/// What the server binary says of its version (`nats-server: v2.9.10`), or `unknown`.
pub fn version() -> String {
    version_of(&nats_server_bin())
}

/// What the server binary `bin` says of its version (`nats-server: v2.15.1`), or `unknown`.
pub fn version_of(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
