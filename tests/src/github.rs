//! The fake GitHub API of the tests: the kit's [`fleet_testkit::FakeGithub`] (scripted repos,
//! requests counted per repo), started with failures as panics.

use std::ops::Deref;

pub use fleet_testkit::{Repo, Seen};

/// A scriptable imitation of the GitHub REST API on `127.0.0.1:0`; stops on drop. Scripting
/// and counting come from [`fleet_testkit::FakeGithub`].
#[derive(Debug)]
pub struct FakeGithub(fleet_testkit::FakeGithub);

// === impl FakeGithub ===

impl FakeGithub {
    /// Binds `127.0.0.1:0` and serves in the background.
    ///
    /// # Panics
    ///
    /// When the listener cannot be bound.
    pub async fn start() -> Self {
        match fleet_testkit::FakeGithub::start().await {
            Ok(github) => Self(github),
            Err(e) => panic!("cannot start the fake GitHub API: {e}"),
        }
    }
}

impl Deref for FakeGithub {
    type Target = fleet_testkit::FakeGithub;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
