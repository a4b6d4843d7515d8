//! Configuring a fleet before it starts.

use std::collections::BTreeMap;

use super::Fleet;
use crate::github::FakeGithub;
use crate::nats::NatsServer;
use crate::openai::FakeOpenAi;
use crate::otlp::OtlpReceiver;

/// The fast settings for tests (see the design notes), before the test's own overrides.
pub const FAST_SETTINGS: [(&str, &str); 6] = [
    ("FLEET_ACK_WAIT", "2s"),
    ("FLEET_BACKOFF_MIN", "50ms"),
    ("FLEET_BACKOFF_MAX", "200ms"),
    ("FLEET_MAX_ATTEMPTS", "3"),
    ("FLEET_DRAIN_GRACE", "5s"),
    ("FLEET_METRICS_PORT", "0"),
];

/// Configures a [`Fleet`] before starting it.
#[derive(Debug)]
pub struct FleetBuilder {
    /// The server everyone connects to.
    nats_url: String,
    /// Settings for every process (fast settings, then overrides).
    env: BTreeMap<String, String>,
    /// `FLEET_WORKER_ID` of each worker to start.
    workers: Vec<String>,
}

// === impl FleetBuilder ===

impl FleetBuilder {
    /// Sets an environment variable for every process (overriding a fast setting).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    /// Points `GITHUB_API_URL` at the fake.
    pub fn github(self, github: &FakeGithub) -> Self {
        let url = github.url();
        self.env("GITHUB_API_URL", &url)
    }

    /// Points `OPENAI_BASE_URL` at the scripted OpenAI server (dispatcher and workers: LLM
    /// routing and the `chat` task).
    pub fn openai(self, openai: &FakeOpenAi) -> Self {
        let url = openai.url();
        self.env("OPENAI_BASE_URL", &url)
    }

    /// Exports every process's spans to `receiver` over OTLP/gRPC.
    pub fn otlp(self, receiver: &OtlpReceiver) -> Self {
        let endpoint = receiver.endpoint();
        self.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    }

    /// The workers to start, by `FLEET_WORKER_ID` (default: one worker `w1`).
    pub fn workers(mut self, ids: &[&str]) -> Self {
        self.workers = ids.iter().map(|id| id.to_string()).collect();
        self
    }

    /// Starts the dispatcher and the workers and waits until the fleet is ready
    /// (see [`Fleet::wait_ready`]).
    ///
    /// # Panics
    ///
    /// When a binary is missing, a process dies, or the fleet is not ready in time.
    pub async fn start(self) -> Fleet {
        let mut fleet = Fleet::new(self.nats_url, self.env);
        for id in &self.workers {
            fleet.start_worker(id);
        }
        fleet.start_dispatcher();
        fleet.wait_ready().await;
        fleet
    }

    /// Starts the workers and the dispatcher without waiting for anything (a fleet whose
    /// workers come later: `workers(&[])`, then [`Fleet::start_worker`]).
    ///
    /// # Panics
    ///
    /// When a binary is missing or cannot be started.
    pub fn start_unready(self) -> Fleet {
        let mut fleet = Fleet::new(self.nats_url, self.env);
        for id in &self.workers {
            fleet.start_worker(id);
        }
        fleet.start_dispatcher();
        fleet
    }
}

// === impl Fleet ===

impl Fleet {
    /// A builder with the fast settings and one worker `w1`.
    pub fn builder(nats: &NatsServer) -> FleetBuilder {
        FleetBuilder {
            nats_url: nats.url(),
            env: FAST_SETTINGS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            workers: vec!["w1".to_string()],
        }
    }
}
