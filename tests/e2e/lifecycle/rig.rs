//! A real nats-server, the fleet's streams on it, and handlers built as the binaries build them.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, Message, consumer::PullConsumer};
use clap::Parser;
use fleet_common::{
    catalog::{Catalog, SharedCatalog},
    lifecycle::{Arrival, Receipt},
    messages::{ClassifiedBy, StatusRecord, TaskMessage, TaskResult},
    topology::Fleet,
};
use fleet_tests::{FakeGithub, NatsServer};
use fleet_worker::{handler::Handler, metrics::Metrics, retry::RetryPolicy};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The task the worker tests run: real HTTP against the fake GitHub, scripted per repo.
pub(crate) const TASK: &str = "github.repo_info";

/// One test's world.
pub(crate) struct Rig {
    /// The server (dropped last).
    pub(crate) nats: NatsServer,
    /// The fake GitHub the task calls.
    pub(crate) github: FakeGithub,
    /// The fleet on it, as every process opens it.
    pub(crate) fleet: Fleet,
    /// Raw JetStream, for what a test does behind the fleet's back.
    pub(crate) js: jetstream::Context,
}

// === impl Rig ===

impl Rig {
    pub(crate) async fn start() -> Self {
        let nats = NatsServer::start();
        let github = FakeGithub::start().await;
        let fleet = open(&nats.url()).await;
        let client = async_nats::connect(nats.url()).await.expect("connect");
        Self {
            js: jetstream::new(client),
            nats,
            github,
            fleet,
        }
    }

    /// A worker handler as `worker` builds it, with `max_attempts`, `ack_wait` and tiny backoff.
    pub(crate) fn worker(&self, id: &str, max_attempts: u32, ack_wait: Duration) -> Worker {
        self.worker_with_timeout(id, max_attempts, ack_wait, Duration::from_secs(300))
    }

    /// [`Rig::worker`] with `FLEET_TASK_TIMEOUT` set.
    pub(crate) fn worker_with_timeout(
        &self,
        id: &str,
        max_attempts: u32,
        ack_wait: Duration,
        task_timeout: Duration,
    ) -> Worker {
        let config = fleet_worker::Config::try_parse_from([
            "worker",
            "--nats-url",
            &self.nats.url(),
            "--github-api-url",
            &self.github.url(),
        ])
        .expect("worker config");
        let registry = fleet_worker::tasks::builtin(&config, reqwest::Client::new());
        let hard_stop = CancellationToken::new();
        let finishing = TaskTracker::new();
        let handler = Arc::new(Handler {
            fleet: self.fleet.clone(),
            checks: registry.catalog(),
            timeouts: registry.timeouts(task_timeout),
            registry,
            retry: RetryPolicy {
                min: Duration::from_millis(10),
                max: Duration::from_millis(20),
            },
            max_attempts,
            ack_wait,
            worker_id: id.to_owned(),
            metrics: Metrics::default(),
            hard_stop: hard_stop.clone(),
            finishing: finishing.clone(),
            cancels: Default::default(),
        });
        Worker {
            handler,
            hard_stop,
            finishing,
        }
    }

    /// The consumer every worker of [`TASK`] shares.
    pub(crate) async fn task_consumer(&self, ack_wait: Duration) -> PullConsumer {
        fleet_worker::bind_consumer(&self.fleet, TASK, ack_wait)
            .await
            .expect("task consumer")
    }

    /// Queues a `github.repo_info` task for `owner/repo` under `id`, as the dispatcher does.
    pub(crate) async fn queue(&self, id: &str, repo: &str, seq: u64) {
        let (owner, name) = repo.split_once('/').expect("owner/repo");
        let receipt = self
            .fleet
            .receive(Arrival {
                id,
                request_seq: seq,
                trace_id: None,
                route: Some((TASK, ClassifiedBy::Explicit)),
            })
            .await
            .expect("receive");
        let Receipt::Proceed(ticket) = receipt else {
            panic!("a new id proceeds: {receipt:?}");
        };
        let task = TaskMessage {
            request_id: id.to_owned(),
            task: TASK.to_owned(),
            input: json!({"owner": owner, "repo": name}),
            classified_by: ClassifiedBy::Explicit,
            metadata: None,
            trace_id: None,
            received_at: Some(ticket.received_at().to_owned()),
            llm: None,
            routing: None,
            priority: Default::default(),
            deadline: None,
            approved_by: None,
        };
        self.fleet.queue(ticket, &task).await.expect("queue");
    }

    /// The status record's JSON, read raw from the bucket.
    pub(crate) async fn status(&self, id: &str) -> Option<Value> {
        let kv = self.js.get_key_value("fleet-status").await.expect("bucket");
        let bytes = kv.get(id).await.expect("read status")?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The stored result, read through the fleet.
    pub(crate) async fn result(&self, id: &str) -> Option<TaskResult> {
        self.fleet.result(id).await.expect("read result")
    }

    /// How many results are stored under `id`.
    pub(crate) async fn result_count(&self, id: &str) -> u64 {
        let stream = self.js.get_stream("FLEET_RESULTS").await.expect("results");
        let info = stream
            .info_with_subjects(format!("fleet.results.{id}"))
            .await
            .expect("info");
        let mut total = 0;
        let mut info = info;
        while let Some(Ok((_, n))) = info.next().await {
            total += n as u64;
        }
        total
    }

    /// A catalog holding every built-in task, as the workers would publish it.
    pub(crate) fn catalog(&self) -> SharedCatalog {
        let config = fleet_worker::Config::try_parse_from(["worker"]).expect("worker config");
        let registry = fleet_worker::tasks::builtin(&config, reqwest::Client::new());
        let mut catalog = Catalog::default();
        for name in registry.names() {
            if let Some(task) = registry.get(&name) {
                catalog.insert(task.spec()).expect("valid spec");
            }
        }
        Arc::new(std::sync::RwLock::new(Arc::new(catalog)))
    }

    /// A status record read as the fleet's type.
    pub(crate) async fn record(&self, id: &str) -> Option<StatusRecord> {
        self.fleet.status_of(id).await.expect("read status")
    }
}

/// A worker handler with its stop token and its tracker of final-state writes.
pub(crate) struct Worker {
    pub(crate) handler: Arc<Handler>,
    pub(crate) hard_stop: CancellationToken,
    pub(crate) finishing: TaskTracker,
}

// === impl Worker ===

impl Worker {
    /// Handles one delivery and waits until its final state and acknowledgement are out.
    pub(crate) async fn deliver(&self, msg: Message) {
        self.handler.clone().handle(msg).await;
        self.settled().await;
    }

    /// Waits for the final-state writes spawned so far.
    pub(crate) async fn settled(&self) {
        self.finishing.close();
        self.finishing.wait().await;
        self.finishing.reopen();
    }
}

/// Opens the fleet on `url` as a process does (creating streams and buckets).
pub(crate) async fn open(url: &str) -> Fleet {
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        nats: fleet_common::config::NatsArgs,
    }
    let args = Args::try_parse_from(["test", "--nats-url", url]).expect("nats args");
    let client = args
        .nats
        .connect("lifecycle-test", false)
        .await
        .expect("connect");
    Fleet::setup(client, &args.nats)
        .await
        .expect("fleet set-up")
}

/// The next message of `consumer` within `wait`, if one comes.
pub(crate) async fn next(consumer: &PullConsumer, wait: Duration) -> Option<Message> {
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(wait)
        .messages()
        .await
        .expect("pull");
    batch.next().await.and_then(Result::ok)
}

/// A message that must come within 10 s.
pub(crate) async fn one(consumer: &PullConsumer) -> Message {
    next(consumer, Duration::from_secs(10))
        .await
        .expect("a message within 10 s")
}
