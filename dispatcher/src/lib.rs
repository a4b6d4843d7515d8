//! The dispatcher: reads requests from `<prefix>.requests`, picks a task, publishes it.
//!
//! Several dispatchers share one durable pull consumer, so they split the requests between
//! them; each handles up to `FLEET_CONCURRENCY` requests at once. A request is acknowledged only
//! after its task (or its `rejected` result) is stored, so a crash anywhere leads to a
//! redelivery, and the status record, keyed by the request id and stamped with the request's
//! stream sequence, tells a redelivery (carry on) from a duplicate id (drop it).
//!
//! # Layout
//!
//! - [`config`] - settings.
//! - [`intake`] - reading a request (text or JSON), its id, and rejections.
//! - [`control`] - cancel, approve and deny over plain NATS.
//! - [`classifier`] - the `Classify` trait and the built-in rules.
//! - [`publisher`] - publishing tasks and `rejected` results.
//! - [`settler`] - the final state of results stored by workers in other languages.
//! - [`metrics`] - Prometheus counters.
//! - [`error`] - the error type.

pub mod classifier;
pub mod config;
pub mod control;
pub mod error;
pub mod intake;
pub mod metrics;
pub mod publisher;
pub mod settler;

use std::{
    future::Future,
    sync::{Arc, RwLock},
    time::Duration,
};

use async_nats::jetstream::{AckKind, Message, consumer};
use fleet_common::{
    catalog::{self, Catalog, SharedCatalog, snapshot},
    health::{self, Readiness},
    lifecycle::{
        Arrival, Receipt, Ticket,
        timing::{self, Times},
    },
    llm::Llm,
    messages::{ClassifiedBy, MSG_ID_HEADER, State, TaskMessage},
    pull, telemetry,
    topology::Fleet,
};
use prometheus_client::registry::Registry;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{
    classifier::{Classify, Decision, LlmClassifier, LlmClassifierConfig, Router},
    intake::{Body, Incoming},
    metrics::Metrics,
    publisher::Rejected,
};
pub use crate::{config::Config, error::Error};

/// How long the catalog must be still before the dispatcher starts routing.
const CATALOG_SETTLE: Duration = Duration::from_millis(750);

/// Runs the dispatcher until `shutdown` completes, then drains within the grace period.
///
/// # Errors
///
/// [`Error::Fleet`] when NATS, the streams or the health port cannot be set up.
///
/// ```no_run
/// # async fn f(config: fleet_dispatcher::Config) -> Result<(), fleet_dispatcher::Error> {
/// fleet_dispatcher::run(config, fleet_common::shutdown::signal()).await
/// # }
/// ```
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    // SIGTERM while connecting (NATS not there yet) ends the process cleanly too.
    tokio::pin!(shutdown);
    let fleet = tokio::select! {
        fleet = async {
            let client = config.nats.connect("fleet-dispatcher", true).await?;
            Fleet::open(client, &config.nats, &config.streams).await
        } => fleet?,
        _ = &mut shutdown => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    let max_payload = fleet.max_payload();
    if max_payload > 0 && config.max_request_bytes > max_payload {
        return Err(Error::Setting(format!(
            "FLEET_MAX_REQUEST_BYTES is {} but this NATS server takes messages of at most {max_payload} bytes (its max_payload): requests that large could never be published. Set FLEET_MAX_REQUEST_BYTES to {max_payload} or less, or raise max_payload on the server",
            config.max_request_bytes
        )));
    }
    let stop = CancellationToken::new();

    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let readiness = Readiness::new(fleet.clone());
    health::serve(
        config.telemetry.metrics_port,
        Arc::new(registry),
        readiness.clone(),
        stop.clone(),
    )
    .await?;

    let classifier = classifier(&config, &metrics);

    let shared: SharedCatalog = Arc::new(RwLock::new(Arc::new(Catalog::default())));
    let (loaded_tx, mut loaded_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(catalog::watch(
        fleet.clone(),
        shared.clone(),
        loaded_tx,
        stop.clone(),
    ));

    // Requests wait in their stream until a worker has published the catalog: routing against an
    // empty catalog would reject everything.
    let mut announced = false;
    loop {
        // Workers publish their tasks one after another: wait until the catalog has been still
        // for a moment, so requests already waiting are not routed against half of it.
        let current = snapshot(&shared);
        let ready = *loaded_rx.borrow_and_update()
            && !current.is_empty()
            && current.since_change().is_none_or(|d| d >= CATALOG_SETTLE);
        if ready {
            break;
        }
        if !announced {
            tracing::info!("waiting for workers to publish the task catalog");
            announced = true;
        }
        tokio::select! {
            _ = &mut shutdown => { stop.cancel(); return Ok(()); }
            _ = loaded_rx.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }

    let consumer = bind_consumer(&fleet, config.ack_wait).await?;
    readiness.set_ready(true);
    let names: Vec<String> = snapshot(&shared).specs().map(|s| s.name.clone()).collect();
    tracing::info!(tasks = ?names, concurrency = config.concurrency, "dispatcher ready");

    let dispatcher = Arc::new(Dispatcher::new(
        fleet.clone(),
        shared,
        classifier,
        &config,
        metrics,
    ));
    let tracker = TaskTracker::new();
    // Core NATS, no consumer: results the fleet's own code stored are skipped by a header.
    tracker.spawn(settler::run(fleet.clone(), stop.clone()));
    // Core NATS too: cancel / approve / deny sent with a plain `nats pub`.
    tracker.spawn(control::run(fleet.clone(), stop.clone()));
    let pulling = tokio::spawn(pull::run(
        consumer,
        Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1))),
        tracker.clone(),
        stop.clone(),
        move |msg| dispatcher.clone().handle(msg),
    ));

    (&mut shutdown).await;
    readiness.set_ready(false);
    stop.cancel();
    let _ = pulling.await;
    tracker.close();
    if tokio::time::timeout(config.drain_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain grace ran out; unfinished requests redeliver to another dispatcher");
    }
    tracing::info!("dispatcher stopped");
    Ok(())
}

/// The classifier `config` asks for: the catalog's patterns, then the LLM when one is
/// configured (see [`classifier::Router`]).
pub fn classifier(config: &Config, metrics: &Metrics) -> Arc<dyn Classify> {
    match Llm::from_args(&config.llm) {
        Some(llm) => {
            tracing::info!(
                model = llm.model(),
                provider = llm.provider(),
                "routing with the catalog's patterns, then the LLM (the patterns' best guess when it cannot answer)"
            );
            Arc::new(Router::new(Some(LlmClassifier::new(
                llm,
                &LlmClassifierConfig {
                    response_format: config.llm_response_format,
                    concurrency: config.llm_concurrency,
                    cache_size: config.classify_cache_size,
                    cache_ttl: config.classify_cache_ttl,
                    breaker_threshold: config.llm_breaker_threshold,
                    breaker_cooldown: config.llm_breaker_cooldown,
                },
                metrics.clone(),
            ))))
        }
        None => {
            tracing::info!(
                "no LLM configured (OPENAI_API_KEY, OPENAI_BASE_URL or AZURE_OPENAI_ENDPOINT): the catalog's patterns route requests (chat when none matches)"
            );
            Arc::new(Router::new(None))
        }
    }
}

/// Binds the durable pull consumer every dispatcher shares, creating it when missing (unless
/// `FLEET_MANAGE_STREAMS=false`: then it must exist).
///
/// # Errors
///
/// [`fleet_common::Error::JetStream`] when it can be neither created nor found.
pub async fn bind_consumer(
    fleet: &Fleet,
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, fleet_common::Error> {
    fleet
        .durable_pull(
            &fleet.topology().requests_stream(),
            fleet.topology().dispatcher_consumer_config(ack_wait),
        )
        .await
}

/// After this many deliveries that failed, a request is rejected and kept in the dead-letter
/// queue instead of being tried again: nothing loops forever. With the redelivery delays below
/// that is about five minutes of failures, longer than a NATS restart or a leader election.
const GIVE_UP_AFTER: i64 = 10;

/// The delay before a failed request is delivered again: 1 s doubling to 60 s, so a request
/// that keeps failing costs little while it waits.
fn redelivery_delay(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 7) - 1).unwrap_or(0);
    Duration::from_secs(2u64.pow(exponent)).min(Duration::from_secs(60))
}

/// What to do with a request message once handled.
enum Disposition {
    /// Done: its task or its result is stored.
    Ack,
    /// Try again later (NATS hiccup).
    Retry,
    /// Hand it back on purpose, to come back after this long: the request waits for its time
    /// or for a person's approval (not a failed delivery).
    Park(Duration),
}

/// Who may approve a request awaiting approval, as its status record says: whoever may write
/// the fleet's results and status records and publish its tasks (`fleet approve`).
const APPROVERS: &str = "an operator with the admin role of deploy/nats/auth.conf (`fleet approve ID` / `fleet deny ID`)";

/// Everything a request handler needs; one per dispatcher, shared by every delivery.
pub struct Dispatcher {
    /// NATS and the fleet's names.
    fleet: Fleet,
    /// The tasks that can be routed to.
    catalog: SharedCatalog,
    /// Picks tasks for natural-language requests.
    classifier: Arc<dyn Classify>,
    /// `FLEET_MAX_REQUEST_BYTES`.
    max_request_bytes: usize,
    /// `FLEET_ACK_WAIT`: in-progress acks go out at a third of it while a request is routed.
    ack_wait: Duration,
    /// Counters.
    metrics: Metrics,
}

// === impl Dispatcher ===

impl Dispatcher {
    /// A request handler over `fleet`, routing against `catalog` with `classifier`; the
    /// limits come from `config`.
    pub fn new(
        fleet: Fleet,
        catalog: SharedCatalog,
        classifier: Arc<dyn Classify>,
        config: &Config,
        metrics: Metrics,
    ) -> Self {
        Self {
            fleet,
            catalog,
            classifier,
            max_request_bytes: config.max_request_bytes,
            ack_wait: config.ack_wait,
            metrics,
        }
    }

    /// Handles one delivery of a request and acknowledges it as its outcome says.
    pub async fn handle(self: Arc<Self>, msg: Message) {
        self.metrics.received.inc();
        self.metrics.in_flight.inc();
        let span = telemetry::process_span(&msg);
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let outcome = self.process(&msg).instrument(span.clone()).await;
        // Deliveries handed back on purpose (a request waiting) are not failures.
        let failed = match &outcome {
            Err(_) if delivered >= GIVE_UP_AFTER => self.failed_deliveries(&msg, delivered).await,
            _ => delivered,
        };
        let disposition = match outcome {
            Ok(d) => d,
            Err(e) if failed >= GIVE_UP_AFTER => {
                tracing::error!(parent: &span, error = %e, delivered, "request not handled again; giving up on it");
                telemetry::record_failure(&span, &e);
                match self.give_up(&msg, &e).instrument(span.clone()).await {
                    Ok(()) => Disposition::Ack,
                    Err(e) => {
                        tracing::error!(parent: &span, error = %e, "cannot even reject the request; it will be redelivered");
                        Disposition::Retry
                    }
                }
            }
            Err(e) => {
                tracing::error!(parent: &span, error = %e, delivered, "request not handled; it will be redelivered");
                telemetry::record_failure(&span, &e);
                Disposition::Retry
            }
        };
        let ack = match disposition {
            Disposition::Ack => msg.ack_with(AckKind::Ack).await,
            Disposition::Retry => {
                msg.ack_with(AckKind::Nak(Some(redelivery_delay(failed))))
                    .await
            }
            Disposition::Park(delay) => msg.ack_with(AckKind::Nak(Some(delay))).await,
        };
        if let Err(e) = ack {
            tracing::warn!(parent: &span, error = %e, "acknowledgement lost; the request redelivers and is recognised");
        }
        self.metrics.in_flight.dec();
    }

    /// How many deliveries of `msg` failed: its deliveries less those handed back on purpose
    /// (read from its status record; only asked once a request has failed often).
    async fn failed_deliveries(&self, msg: &Message, delivered: i64) -> i64 {
        let (_, generated, header_id) = identity(msg);
        let id = match intake::parse(&msg.payload, header_id, &generated, self.max_request_bytes) {
            Ok(incoming) => incoming.id,
            Err(rejection) => rejection.id,
        };
        let record = self.fleet.status_of(&id).await.ok().flatten();
        let delivered = u64::try_from(delivered).unwrap_or(0);
        i64::try_from(fleet_common::lifecycle::rules::failed_deliveries(
            delivered,
            record.as_ref(),
        ))
        .unwrap_or(i64::MAX)
    }

    async fn process(&self, msg: &Message) -> Result<Disposition, fleet_common::Error> {
        let span = tracing::Span::current();
        let (seq, generated, header_id) = identity(msg);
        let parsed = intake::parse(&msg.payload, header_id, &generated, self.max_request_bytes);
        // Times count from the request's receipt: its message's timestamp in the stream, the
        // same on every redelivery (after restarts too), so nothing is written to remember it.
        let now = time::OffsetDateTime::now_utc();
        let times = match &parsed {
            Ok(incoming) if incoming.not_before.is_empty() && incoming.deadline.is_none() => {
                Times::default()
            }
            Ok(incoming) => times_of(incoming, msg.info().map_or(now, |i| i.published)),
            Err(_) => Times::default(),
        };
        let id = match &parsed {
            Ok(incoming) => incoming.id.clone(),
            Err(rejection) => rejection.id.clone(),
        };
        let trace_id = telemetry::current_trace_id();
        span.record("request_id", id.as_str());
        if let Some(t) = &trace_id {
            span.record("trace_id", t.as_str());
        }

        // Route before the guard when no slow call is needed, so the guard's one write already
        // says `queued` with the task.
        let catalog = snapshot(&self.catalog);
        let quick = match &parsed {
            Ok(incoming) => self
                .quick(incoming, &catalog)
                .filter(|d| check_decision(d, &catalog).is_ok()),
            Err(_) => None,
        };
        let arrival = Arrival {
            id: &id,
            request_seq: seq,
            trace_id: trace_id.clone(),
            // The guard never says `queued` for a task that needs approval.
            route: quick
                .as_ref()
                .filter(|d| !requires_approval(&d.task, &catalog))
                .map(|d| (d.task.as_str(), d.by)),
        };
        let receipt = if times.is_plain() {
            self.fleet.receive(arrival).await?
        } else {
            self.fleet.receive_timed(arrival, times, now).await?
        };
        let ticket = match receipt {
            Receipt::Proceed(ticket) => ticket,
            Receipt::Waiting(ticket) => {
                // Still awaiting approval: wait again, until its deadline at the latest.
                if times.expired(now) {
                    return self.expire(&ticket, parsed.ok(), trace_id).await;
                }
                if !self
                    .fleet
                    .park(&ticket, State::AwaitingApproval, |_| {})
                    .await?
                {
                    return Ok(Disposition::Ack);
                }
                return Ok(Disposition::Park(timing::park_open(times.deadline, now)));
            }
            Receipt::Done => {
                tracing::debug!("a redelivery of a request whose task is already out");
                return Ok(Disposition::Ack);
            }
            Receipt::Duplicate => {
                self.metrics.duplicates.inc();
                tracing::info!(
                    "duplicate request id: the first request's result stands, this one is dropped"
                );
                return Ok(Disposition::Ack);
            }
        };

        let incoming = match parsed {
            Ok(incoming) => incoming,
            Err(rejection) => {
                self.count_rejection(&rejection.error);
                let raw = rejection
                    .unreadable
                    .then(|| (msg.headers.as_ref(), msg.payload.clone()));
                publisher::reject(
                    &self.fleet,
                    Rejected {
                        id: rejection.id,
                        given_id: rejection.given_id,
                        error: rejection.error,
                        task: None,
                        input: None,
                        classified_by: None,
                        metadata: rejection.metadata,
                    },
                    raw,
                    trace_id,
                )
                .await?;
                return Ok(Disposition::Ack);
            }
        };

        if !times.is_plain() {
            if times.expired(now) {
                return self.expire(&ticket, Some(incoming), trace_id).await;
            }
            if let Some(wait) = times.wait(now) {
                // Scheduled: handed back until its time (its deadline at the latest), with no
                // timer or loop of ours; routed when it comes back due.
                let not_before = times.not_before.map(timing::rfc3339);
                let waiting = self
                    .fleet
                    .park(&ticket, State::Scheduled, |r| {
                        r.not_before = not_before.clone();
                    })
                    .await?;
                tracing::debug!(wait_ms = wait.as_millis() as u64, "scheduled");
                return Ok(if waiting {
                    Disposition::Park(wait)
                } else {
                    Disposition::Ack
                });
            }
        }

        let checked = quick.is_some();
        let decision = match quick {
            Some(decision) => decision,
            // A slow decision (the LLM): keep the message ours meanwhile, so it is not
            // redelivered and classified a second time in parallel.
            None => {
                pull::with_progress(msg, self.ack_wait / 3, self.decide(&incoming, &catalog)).await
            }
        };
        span.record("task", decision.task.as_str());
        span.record("classified_by", by_label(decision.by));
        span.record("routing_reason", decision.routing.reason.as_str());
        let check = if checked {
            Ok(())
        } else {
            check_decision(&decision, &catalog)
        };
        if let Err(error) = check {
            self.count_rejection(&error);
            publisher::reject(
                &self.fleet,
                Rejected {
                    id,
                    given_id: None,
                    error,
                    task: Some(decision.task),
                    input: Some(decision.input),
                    classified_by: Some(decision.by),
                    metadata: incoming.metadata,
                },
                None,
                trace_id,
            )
            .await?;
            return Ok(Disposition::Ack);
        }
        self.metrics
            .classified
            .get_or_create(&vec![("method", by_label(decision.by).to_owned())])
            .inc();

        // A task with a fleet-wide limit waits on its one normal consumer, whatever was asked.
        let limit = catalog
            .get(&decision.task)
            .and_then(|spec| spec.max_concurrency);
        let task = TaskMessage {
            priority: fleet_common::priority::lane(incoming.priority, limit),
            request_id: id,
            task: decision.task,
            input: decision.input,
            classified_by: decision.by,
            metadata: incoming.metadata,
            trace_id,
            received_at: Some(ticket.received_at().to_owned()),
            llm: decision.usage,
            routing: Some(decision.routing),
            deadline: times.deadline.map(timing::rfc3339),
            approved_by: None,
        };
        if requires_approval(&task.task, &catalog) {
            // Catalog policy, whichever tier routed it (the LLM included): a person decides.
            let waiting = self.fleet.await_approval(&ticket, &task, APPROVERS).await?;
            tracing::info!(task = %task.task, "awaiting approval");
            return Ok(if waiting {
                Disposition::Park(timing::park_open(times.deadline, now))
            } else {
                Disposition::Ack
            });
        }
        self.fleet.queue(ticket, &task).await?;
        tracing::debug!(task = %task.task, "task queued");
        Ok(Disposition::Ack)
    }

    /// Ends a request the dispatcher failed on [`GIVE_UP_AFTER`] times: a `rejected` result that
    /// says why, and its bytes (without the caller's headers, which may be what broke it) in the
    /// dead-letter queue.
    async fn give_up(
        &self,
        msg: &Message,
        error: &fleet_common::Error,
    ) -> Result<(), fleet_common::Error> {
        let (_, generated, header_id) = identity(msg);
        let (id, metadata) =
            match intake::parse(&msg.payload, header_id, &generated, self.max_request_bytes) {
                Ok(incoming) => (incoming.id, incoming.metadata),
                Err(rejection) => (rejection.id, rejection.metadata),
            };
        let error = fleet_common::messages::ErrorInfo::new(
            fleet_common::messages::ErrorKind::BadRequest,
            format!(
                "the dispatcher failed on this request {GIVE_UP_AFTER} times ({error}); it is kept in the dead-letter queue"
            ),
        );
        self.count_rejection(&error);
        publisher::reject(
            &self.fleet,
            Rejected {
                id,
                given_id: None,
                error,
                task: None,
                input: None,
                classified_by: None,
                metadata,
            },
            Some((None, msg.payload.clone())),
            telemetry::current_trace_id(),
        )
        .await
    }

    /// Ends a request whose deadline passed before its task was out: `expired`, never run.
    async fn expire(
        &self,
        ticket: &Ticket,
        incoming: Option<Incoming>,
        trace_id: Option<String>,
    ) -> Result<Disposition, fleet_common::Error> {
        let record = ticket.record();
        let result = fleet_common::messages::TaskResult {
            request_id: record.request_id.clone(),
            status: fleet_common::messages::Outcome::Expired,
            task: record.task.clone(),
            input: record.input.clone(),
            output: None,
            error: Some(fleet_common::messages::ErrorInfo::new(
                fleet_common::messages::ErrorKind::DeadlineExceeded,
                format!(
                    "the deadline ({}) passed while it was {}; it never ran",
                    record.deadline.as_deref().unwrap_or("given"),
                    record.state
                ),
            )),
            attempts: 0,
            classified_by: record.classified_by,
            routing: record.routing.clone(),
            trace_id: trace_id.or_else(|| record.trace_id.clone()),
            metadata: incoming
                .and_then(|i| i.metadata)
                .or_else(|| record.metadata.clone()),
            given_id: None,
            worker: None,
            finished_at: Some(fleet_common::messages::now()),
        };
        tracing::info!("deadline passed before the task ran; expired");
        self.fleet.conclude(result).await?;
        Ok(Disposition::Ack)
    }

    /// The decision for a request that needs no slow call: explicit, or a rule that is sure.
    fn quick(&self, incoming: &Incoming, catalog: &Arc<Catalog>) -> Option<Decision> {
        let started = std::time::Instant::now();
        let decision = match &incoming.body {
            Body::Explicit { task, input } => Some(explicit(task, input)),
            Body::Text(text) => self
                .classifier
                .quick(text, catalog)
                .map(|d| fit_catalog(d, text, catalog)),
        };
        decision.map(|d| timed(d, started))
    }

    async fn decide(&self, incoming: &Incoming, catalog: &Arc<Catalog>) -> Decision {
        let started = std::time::Instant::now();
        let decision = match &incoming.body {
            Body::Explicit { task, input } => explicit(task, input),
            Body::Text(text) => {
                let decision = match self.classifier.classify(text, catalog.clone()).await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, "classifier failed; the patterns route this request");
                        classifier::fallback(text, catalog, &format!("classifier failed: {e}"))
                    }
                };
                fit_catalog(decision, text, catalog)
            }
        };
        timed(decision, started)
    }

    fn count_rejection(&self, error: &fleet_common::messages::ErrorInfo) {
        let kind = error.kind.as_str().to_owned();
        self.metrics
            .rejected
            .get_or_create(&vec![("kind", kind)])
            .inc();
    }
}

/// A request message's stream sequence, the id generated for it when it brings none (derived
/// from its place in the stream, so a redelivery gets the same one), and its `Nats-Msg-Id`.
fn identity(msg: &Message) -> (u64, String, Option<&str>) {
    let (seq, generated) = match msg.info() {
        Ok(info) => (
            info.stream_sequence,
            format!(
                "r{:x}{:06x}",
                info.published.unix_timestamp_nanos(),
                info.stream_sequence
            ),
        ),
        Err(_) => (0, format!("r{}", nuid::next())),
    };
    let header_id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(MSG_ID_HEADER))
        .map(|v| v.as_str());
    (seq, generated, header_id)
}

/// A request that names its task: routing is skipped.
fn explicit(task: &str, input: &serde_json::Value) -> Decision {
    Decision::new(task, input.clone(), ClassifiedBy::Explicit).because("named by the request")
}

/// `decision` with how long routing took since `started`.
fn timed(mut decision: Decision, started: std::time::Instant) -> Decision {
    decision.routing.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    decision
}

/// A decision for a task the catalog does not have (or routing may not pick): `chat` then.
///
/// No routing tier ever picks an `explicit_only` task (only a request naming it may run it):
/// such a choice falls back to `chat` too, or, when `chat` cannot be chosen either, stays as it
/// is and is rejected by the check that follows.
fn fit_catalog(decision: Decision, text: &str, catalog: &Catalog) -> Decision {
    if decision.by == ClassifiedBy::Explicit {
        return decision;
    }
    let chosen = catalog.get(&decision.task);
    let unusable = match chosen {
        None => decision.by == ClassifiedBy::Patterns,
        Some(spec) => spec.explicit_only,
    };
    let fallback_usable = catalog
        .get(classifier::FALLBACK_TASK)
        .is_some_and(|spec| !spec.explicit_only);
    if unusable && fallback_usable && decision.task != classifier::FALLBACK_TASK {
        return classifier::chat(text).because(format!(
            "`{}` cannot be routed to: {}",
            decision.task,
            classifier::FALLBACK_TASK
        ));
    }
    decision
}

/// Checks a decision against the catalog: the task exists, routing may pick it, the input
/// passes its schema.
fn check_decision(
    decision: &Decision,
    catalog: &Catalog,
) -> Result<(), fleet_common::messages::ErrorInfo> {
    if decision.by != ClassifiedBy::Explicit
        && catalog
            .get(&decision.task)
            .is_some_and(|spec| spec.explicit_only)
    {
        return Err(fleet_common::messages::ErrorInfo::new(
            fleet_common::messages::ErrorKind::UnknownTask,
            format!(
                "`{}` runs only for a request that names it (`task` and `input`), and no other task fits this request",
                decision.task
            ),
        ));
    }
    catalog.check(&decision.task, &decision.input)
}

/// Whether the catalog says a person approves each request for `task` before it runs.
fn requires_approval(task: &str, catalog: &Catalog) -> bool {
    catalog.get(task).is_some_and(|spec| spec.requires_approval)
}

/// A request's times, resolved against its receipt; of `delay` and `not_before`, the later.
fn times_of(incoming: &Incoming, received: time::OffsetDateTime) -> Times {
    Times {
        not_before: incoming
            .not_before
            .iter()
            .map(|w| w.resolve(received))
            .max(),
        deadline: incoming.deadline.map(|w| w.resolve(received)),
    }
}

fn by_label(by: ClassifiedBy) -> &'static str {
    by.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_requests_wait_longer_each_time_up_to_a_minute() {
        assert_eq!(redelivery_delay(1), Duration::from_secs(1));
        assert_eq!(redelivery_delay(2), Duration::from_secs(2));
        assert_eq!(redelivery_delay(6), Duration::from_secs(32));
        assert_eq!(redelivery_delay(7), Duration::from_secs(60));
        assert_eq!(redelivery_delay(1_000), Duration::from_secs(60));
        assert_eq!(redelivery_delay(0), Duration::from_secs(1));
        let waited: Duration = (1..GIVE_UP_AFTER).map(redelivery_delay).sum();
        assert!(waited >= Duration::from_secs(180), "{waited:?}");
    }
}
