//! The broker's own limit: a bare async-nats relay, requests stream → tasks stream → results
//! stream, with no fleet logic.
//!
//! It uses the fleet's topology under its own prefix: work-queue streams for requests and tasks,
//! a limits stream for results, durable pull consumers with explicit acks, and a KV bucket made
//! the way the fleet makes `fleet-status`. What it does per message is chosen by a
//! [`Variant`], so each of the fleet's round trips can be switched on or off and its cost seen:
//!
//! | hop | full mirror of the fleet (see `dispatcher/src/lib.rs`, `worker/src/handler.rs`) |
//! |---|---|
//! | client | publish the request with `Nats-Msg-Id`, ack awaited |
//! | relay stage 1 | KV create `received`; publish the task with `Nats-Msg-Id`, ack awaited; KV update `queued` (expected revision); ack |
//! | relay stage 2 | KV put `running`; publish the result with expected-last-subject-sequence 0, ack awaited; KV put `succeeded`; ack |
//!
//! The two stages run in the bench process, each on its own NATS connection. `relay-full` and
//! its profiling neighbours use the fleet's own bounded pull loop (`common/src/pull.rs`: one pull
//! request per batch of free permits) at the fleet's concurrency, so they differ from the fleet
//! only in the round trips. `relay-min` is instead the best this broker allows for two hops with
//! explicit acks and awaited publish acks: a continuous pull stream with large batches, up to a
//! thousand handlers in flight, each publish's ack awaited concurrently with the others (see
//! [`Variant::minimal`] and [`Variant::min_candidates`], and BENCHMARKS.md for how it was
//! chosen).

use std::sync::Arc;
use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        self, AckKind, Message,
        consumer::{AckPolicy, PullConsumer, pull},
        context::PublishErrorKind,
        kv,
        message::PublishMessage,
        stream::{self, RetentionPolicy, StorageType},
    },
};
use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};

use crate::Error;

/// How long one pull request waits (as `common::pull::PULL_EXPIRES`).
const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// How a stage pulls messages and runs its handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PullStyle {
    /// As the fleet: one pull request for as many messages as there are free permits; a task
    /// spawned per message.
    Bounded,
    /// A continuous pull stream (`consumer.stream()`) that keeps batches of `batch` messages
    /// outstanding; a task spawned per message, bounded by a semaphore.
    Stream,
    /// The continuous pull stream, with the handlers driven in the stage's own task (a
    /// `FuturesUnordered` of at most `concurrency`): no spawn, no semaphore, and each handler's
    /// publish ack is awaited concurrently with every other's.
    Inline,
}

impl PullStyle {
    /// Its name in the scenarios' names.
    fn label(self) -> &'static str {
        match self {
            Self::Bounded => "bounded",
            Self::Stream => "stream",
            Self::Inline => "inline",
        }
    }
}

/// What the relay does per request.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    /// Its name in the tables.
    pub name: String,
    /// The three status writes of each stage (KV create/update, put/put).
    pub status_writes: bool,
    /// With `status_writes`: only the two the fleet makes today, the duplicate guard (KV
    /// create `queued`) before the task and the final state (KV put) after the result.
    pub lean_status: bool,
    /// `Nats-Msg-Id` on the task and expected-last-subject-sequence 0 on the result.
    pub headers: bool,
    /// Fleet-sized JSON bodies (task, result, status) serialized with serde_json; off: tiny
    /// fixed bodies.
    pub json: bool,
    /// How messages are pulled and handled.
    pub pull: PullStyle,
    /// Messages each stage handles at once (`FLEET_CONCURRENCY` of the fleet, default 16).
    pub concurrency: usize,
    /// Messages per pull request of a continuous stream ([`PullStyle::Stream`],
    /// [`PullStyle::Inline`]).
    pub batch: usize,
    /// The consumers' `max_ack_pending` (None: the server's default, 1000, as the fleet).
    pub max_ack_pending: Option<i64>,
}

// === impl Variant ===

impl Variant {
    /// The fleet's round trips, one to one, with the fleet's pull loop at `concurrency`.
    pub fn full(concurrency: usize) -> Self {
        Self {
            name: "relay-full".into(),
            status_writes: true,
            lean_status: false,
            headers: true,
            json: true,
            pull: PullStyle::Bounded,
            concurrency,
            batch: concurrency,
            max_ack_pending: None,
        }
    }

    /// The fleet's round trips as they are now (the duplicate guard, the task, the result, the
    /// final state; fleet-sized JSON and headers), pulled `pull`-style at `concurrency`.
    pub fn lean(pull: PullStyle, concurrency: usize) -> Self {
        Self {
            name: format!("relay-fleet-{}", pull.label()),
            status_writes: true,
            lean_status: true,
            headers: true,
            json: true,
            pull,
            concurrency,
            batch: concurrency,
            max_ack_pending: None,
        }
    }

    /// One publish and one ack per hop, nothing else, pulled and handled the fleet's way at
    /// `concurrency` (the old `relay-min`; the base of the profiling variants).
    pub fn minimal_bounded(concurrency: usize) -> Self {
        Self {
            name: format!("rmin-bounded-c{concurrency}"),
            status_writes: false,
            lean_status: false,
            headers: false,
            json: false,
            pull: PullStyle::Bounded,
            concurrency,
            batch: concurrency,
            max_ack_pending: None,
        }
    }

    /// `relay-min`: one publish and one ack per hop at the broker's best, the fastest of
    /// [`Variant::min_candidates`] at 64 in flight on the 2-core machine of BENCHMARKS.md (six
    /// rounds side by side): a continuous pull stream in batches of 512, up to 1024 handlers in
    /// flight per stage driven in the stage's own task, publish acks awaited concurrently.
    pub fn minimal() -> Self {
        Self {
            name: "relay-min".into(),
            ..Self::min_with(PullStyle::Inline, 1024, 512)
        }
    }

    /// The ways of running `relay-min` that were measured side by side to choose it.
    pub fn min_candidates() -> Vec<Self> {
        let mut out = vec![
            Self::minimal_bounded(16),
            Self::minimal_bounded(256),
            Self::min_with(PullStyle::Stream, 256, 256),
            Self::min_with(PullStyle::Inline, 64, 64),
            Self::min_with(PullStyle::Inline, 256, 256),
            Self::min_with(PullStyle::Inline, 1024, 512),
        ];
        // The bounded loop holds one pull request per batch of free permits; at 256 it needs
        // the same ack-pending room as the others.
        out[1].max_ack_pending = Some(4096);
        out
    }

    /// One publish and one ack per hop, pulled `pull`-style.
    fn min_with(pull: PullStyle, concurrency: usize, batch: usize) -> Self {
        Self {
            name: format!("rmin-{}-c{concurrency}", pull.label()),
            status_writes: false,
            lean_status: false,
            headers: false,
            json: false,
            pull,
            concurrency,
            batch,
            max_ack_pending: Some(4096.max(4 * concurrency as i64)),
        }
    }
}

/// A running relay; its stages stop on drop.
#[derive(Debug)]
pub struct Relay {
    /// The two stages' pull loops.
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Everything a stage's handler needs.
struct Stage {
    /// The stage's own JetStream context.
    js: jetstream::Context,
    /// The status bucket.
    status: kv::Store,
    /// The subject prefix.
    prefix: String,
    /// What to do.
    variant: Variant,
}

/// Creates the relay's streams, bucket and consumers under `prefix` and starts both stages.
///
/// # Errors
///
/// [`Error::Nats`] when NATS cannot be reached or refuses the set-up.
pub async fn start(nats_url: &str, prefix: &str, variant: Variant) -> Result<Relay, Error> {
    let upper = prefix.to_uppercase().replace('-', "_");
    let setup = connect(nats_url).await?;
    let js = jetstream::new(setup);
    let dup = Duration::from_secs(120);
    for (name, subject, retention) in [
        (
            "REQUESTS",
            format!("{prefix}.requests"),
            RetentionPolicy::WorkQueue,
        ),
        (
            "TASKS",
            format!("{prefix}.tasks.>"),
            RetentionPolicy::WorkQueue,
        ),
        (
            "RESULTS",
            format!("{prefix}.results.>"),
            RetentionPolicy::Limits,
        ),
    ] {
        js.create_stream(stream::Config {
            name: format!("{upper}_{name}"),
            subjects: vec![subject],
            retention,
            storage: StorageType::File,
            duplicate_window: dup,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::nats(format!("create stream {upper}_{name}"), e))?;
    }
    let bucket = format!("{prefix}-status");
    js.create_stream(stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        storage: StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        duplicate_window: dup,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::nats("create status bucket", e))?;

    let mut tasks = Vec::new();
    for (stage, stream, durable, filter) in [
        (1, format!("{upper}_REQUESTS"), "dispatcher", String::new()),
        (
            2,
            format!("{upper}_TASKS"),
            "worker-text_transform",
            format!("{prefix}.tasks.text.transform"),
        ),
    ] {
        let client = connect(nats_url).await?;
        let js = jetstream::new(client);
        let status = js
            .get_key_value(bucket.clone())
            .await
            .map_err(|e| Error::nats("open status bucket", e))?;
        let consumer: PullConsumer = js
            .create_consumer_on_stream(
                pull::Config {
                    durable_name: Some(durable.to_owned()),
                    filter_subject: filter,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_deliver: -1,
                    max_ack_pending: variant.max_ack_pending.unwrap_or_default(),
                    ..Default::default()
                },
                stream,
            )
            .await
            .map_err(|e| Error::nats(format!("create consumer {durable}"), e))?;
        let ctx = Arc::new(Stage {
            js,
            status,
            prefix: prefix.to_owned(),
            variant: variant.clone(),
        });
        tasks.push(tokio::spawn(pull_loop(consumer, ctx, stage)));
    }
    Ok(Relay { tasks })
}

/// A client that never gives up reconnecting.
async fn connect(url: &str) -> Result<async_nats::Client, Error> {
    async_nats::ConnectOptions::new()
        .connect(url)
        .await
        .map_err(|e| Error::nats(format!("connect to {url}"), e))
}

/// The stage's pull loop: the fleet's bounded loop, or a continuous stream with spawned or
/// inline handlers.
async fn pull_loop(consumer: PullConsumer, ctx: Arc<Stage>, stage: u8) {
    let concurrency = ctx.variant.concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    match ctx.variant.pull {
        PullStyle::Bounded => loop {
            let Ok(first) = permits.clone().acquire_owned().await else {
                return;
            };
            let mut held = vec![first];
            while let Ok(p) = permits.clone().try_acquire_owned() {
                held.push(p);
            }
            let Ok(mut batch) = consumer
                .batch()
                .max_messages(held.len())
                .expires(PULL_EXPIRES)
                .messages()
                .await
            else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            while let Some(Ok(msg)) = batch.next().await {
                let permit = held.pop();
                tokio::spawn(handle(ctx.clone(), stage, msg, permit));
            }
        },
        PullStyle::Stream => loop {
            // The stream ends on errors such as missed heartbeats: open it again.
            let Some(mut messages) = open_stream(&consumer, ctx.variant.batch).await else {
                continue;
            };
            while let Some(Ok(msg)) = messages.next().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                tokio::spawn(handle(ctx.clone(), stage, msg, Some(permit)));
            }
        },
        PullStyle::Inline => loop {
            let Some(mut messages) = open_stream(&consumer, ctx.variant.batch).await else {
                continue;
            };
            let mut running = FuturesUnordered::new();
            loop {
                tokio::select! {
                    Some(()) = running.next(), if !running.is_empty() => {}
                    next = messages.next(), if running.len() < concurrency => match next {
                        Some(Ok(msg)) => running.push(handle(ctx.clone(), stage, msg, None)),
                        _ => break,
                    },
                }
            }
            while running.next().await.is_some() {}
        },
    }
}

/// A continuous pull stream in batches of `batch`; None (after a pause) when it cannot be
/// opened.
async fn open_stream(consumer: &PullConsumer, batch: usize) -> Option<pull::Stream> {
    match consumer
        .stream()
        .max_messages_per_batch(batch.max(1))
        .expires(PULL_EXPIRES)
        .messages()
        .await
    {
        Ok(messages) => Some(messages),
        Err(_) => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Handles one message of stage 1 or 2 and acks it (a NAK with a short delay on failure);
/// `permit` is released at the end.
async fn handle(ctx: Arc<Stage>, stage: u8, msg: Message, permit: Option<OwnedSemaphorePermit>) {
    let done = if stage == 1 {
        ctx.dispatch(&msg).await
    } else {
        ctx.work(&msg).await
    };
    let kind = match done {
        Ok(()) => AckKind::Ack,
        Err(e) => {
            eprintln!("relay stage {stage}: {e}; retrying");
            AckKind::Nak(Some(Duration::from_millis(100)))
        }
    };
    let _ = msg.ack_with(kind).await;
    drop(permit);
}

// === impl Stage ===

impl Stage {
    /// Stage 1, the dispatcher's work.
    async fn dispatch(&self, msg: &Message) -> Result<(), Error> {
        let id = request_id(msg)?;
        let v = &self.variant;
        let mut revision = 0;
        if v.status_writes {
            revision = match self
                .status
                .create(
                    &id,
                    self.status_body(
                        &id,
                        if v.lean_status { "queued" } else { "received" },
                        v.json,
                    )?,
                )
                .await
            {
                Ok(revision) => revision,
                // A redelivery after a failed attempt: carry on from the stored record, as the
                // dispatcher does.
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => self
                    .status
                    .entry(&id)
                    .await
                    .map_err(|e| Error::nats("read status", e))?
                    .map_or(0, |entry| entry.revision),
                Err(e) => return Err(Error::nats("create status", e)),
            };
        }
        let body = if v.json {
            let request: Value =
                serde_json::from_slice(&msg.payload).map_err(|e| Error::nats("read request", e))?;
            let task = json!({
                "request_id": id,
                "task": request.get("task"),
                "input": request.get("input"),
                "classified_by": "explicit",
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "received_at": "2025-01-01T00:00:00.000000000Z",
            });
            Bytes::from(serde_json::to_vec(&task).map_err(|e| Error::nats("encode task", e))?)
        } else {
            Bytes::from(id.clone())
        };
        let mut publish = PublishMessage::build()
            .payload(body)
            .headers(HeaderMap::new());
        if v.headers {
            publish = publish.message_id(&id);
        }
        self.js
            .send_publish(format!("{}.tasks.text.transform", self.prefix), publish)
            .await
            .map_err(|e| Error::nats("publish task", e))?
            .await
            .map_err(|e| Error::nats("store task", e))?;
        if v.status_writes && !v.lean_status {
            match self
                .status
                .update(&id, self.status_body(&id, "queued", v.json)?, revision)
                .await
            {
                Ok(_) => {}
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(Error::nats("update status", e)),
            }
        }
        Ok(())
    }

    /// Stage 2, the worker's work.
    async fn work(&self, msg: &Message) -> Result<(), Error> {
        let v = &self.variant;
        let (id, body) = if v.json {
            let task: Value =
                serde_json::from_slice(&msg.payload).map_err(|e| Error::nats("read task", e))?;
            let id = task
                .get("request_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let text = task
                .pointer("/input/text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_uppercase();
            if v.status_writes && !v.lean_status {
                self.status
                    .put(&id, self.status_body(&id, "running", true)?)
                    .await
                    .map_err(|e| Error::nats("put status", e))?;
            }
            let result = json!({
                "request_id": id,
                "status": "succeeded",
                "task": task.get("task"),
                "input": task.get("input"),
                "output": {"text": text},
                "attempts": 1,
                "classified_by": "explicit",
                "trace_id": task.get("trace_id"),
                "worker": "w0",
                "finished_at": "2025-01-01T00:00:00.000000000Z",
            });
            let body = serde_json::to_vec(&result).map_err(|e| Error::nats("encode result", e))?;
            (id, Bytes::from(body))
        } else {
            let id = String::from_utf8_lossy(&msg.payload).into_owned();
            if v.status_writes {
                self.status
                    .put(&id, self.status_body(&id, "running", false)?)
                    .await
                    .map_err(|e| Error::nats("put status", e))?;
            }
            (id, Bytes::from_static(b"X"))
        };
        let mut publish = PublishMessage::build()
            .payload(body)
            .headers(HeaderMap::new());
        if v.headers {
            publish = publish.expected_last_subject_sequence(0);
        }
        let stored = self
            .js
            .send_publish(format!("{}.results.{id}", self.prefix), publish)
            .await
            .map_err(|e| Error::nats("publish result", e))?
            .await;
        match stored {
            Ok(_) => {}
            // Stored by an earlier attempt whose ack was lost.
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {}
            Err(e) => return Err(Error::nats("store result", e)),
        }
        if v.status_writes {
            self.status
                .put(&id, self.status_body(&id, "succeeded", v.json)?)
                .await
                .map_err(|e| Error::nats("put status", e))?;
        }
        Ok(())
    }

    /// A status record the size of the fleet's (or a tiny one).
    fn status_body(&self, id: &str, state: &str, json: bool) -> Result<Bytes, Error> {
        if !json {
            return Ok(Bytes::from(state.to_owned()));
        }
        let record = json!({
            "request_id": id,
            "state": state,
            "task": "text.transform",
            "attempt": 1,
            "worker": "w0",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "classified_by": "explicit",
            "errors": [],
            "request_seq": 1,
            "created_at": "2025-01-01T00:00:00.000000000Z",
            "updated_at": "2025-01-01T00:00:00.000000000Z",
        });
        serde_json::to_vec(&record)
            .map(Bytes::from)
            .map_err(|e| Error::nats("encode status", e))
    }
}

/// The request id: the `Nats-Msg-Id` header (as the fleet: the header wins).
fn request_id(msg: &Message) -> Result<String, Error> {
    msg.headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_owned())
        .ok_or_else(|| Error::nats("read request", "no Nats-Msg-Id header"))
}
