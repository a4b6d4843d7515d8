//! The test's face of the kit's `nats-server` guard ([`fleet_testkit::NatsServer`]): the same
//! server, with start-up failures as panics (a test cannot go on without its server) and a
//! restart that is a crash (SIGKILL), as the scenarios want it.

use std::ops::{Deref, DerefMut};

use fleet_testkit::Signal;

/// A running `nats-server` on `127.0.0.1:<free port>` with its own store directory; killed on
/// drop. Everything but starting and restarting comes from [`fleet_testkit::NatsServer`].
#[derive(Debug)]
pub struct NatsServer(fleet_testkit::NatsServer);

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
    /// `userinfo` (`u:p` or a token) goes into the URL so the harness can connect.
    ///
    /// # Panics
    ///
    /// As [`NatsServer::start`].
    pub fn start_with(args: &[&str], userinfo: &str) -> Self {
        match fleet_testkit::NatsServer::start_with(args, userinfo) {
            Ok(server) => Self(server),
            Err(e) => panic!("cannot start nats-server: {e}"),
        }
    }

    /// Kills the server (SIGKILL, like a crash) and starts it again on the same port and store.
    ///
    /// # Panics
    ///
    /// When the server cannot be started again.
    pub fn restart(&mut self) {
        if let Err(e) = self.0.restart(Signal::Kill) {
            panic!("cannot restart nats-server: {e}");
        }
    }
}

impl Deref for NatsServer {
    type Target = fleet_testkit::NatsServer;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for NatsServer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// A port that was free a moment ago on 127.0.0.1 (never 4222).
///
/// # Panics
///
/// When no port can be bound.
pub fn free_port() -> u16 {
    fleet_testkit::free_port().expect("bind a free port on 127.0.0.1")
}
