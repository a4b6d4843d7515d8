//! A fleet worker: runs tasks from JetStream and stores exactly one result per request.
//!
//! Each task has one durable pull consumer per priority (`worker-<task>` for normal,
//! `high-worker-<task>`, `low-worker-<task>`) shared by every replica, so the replicas split the
//! work. A worker runs at most `FLEET_CONCURRENCY` tasks at once across its consumers, gives a
//! free slot to the highest priority waiting without starving the others ([`priority`]), sends in-progress acks while a task runs, NAKs retryable failures with an
//! exponential, jittered delay, TERMs permanent ones, and moves exhausted tasks to the
//! dead-letter queue. On SIGTERM it stops pulling, lets running tasks finish within
//! `FLEET_DRAIN_GRACE`, gives back (NAK) what is still running, and exits.
//!
//! # Layout
//!
//! - [`config`] - settings.
//! - [`tasks`] - the `Task` trait, the built-in tasks and their registry.
//! - [`handler`] - one delivery: run, store the result, acknowledge.
//! - [`priority`] - which waiting task gets the next free slot.
//! - [`cancel`] - cancellation notices and the running tasks' signals.
//! - [`retry`] - retry delays.
//! - [`metrics`] - Prometheus metrics.
//! - [`error`] - `TaskError` (the retry decision) and the worker's error.

pub mod cancel;
pub mod config;
pub mod error;
pub mod handler;
pub mod metrics;
pub mod priority;
pub mod retry;
pub mod tasks;

use std::{future::Future, sync::Arc, time::Duration};

use async_nats::jetstream::consumer::PullConsumer;
use fleet_common::{
    health::{self, Readiness},
    priority::Priority,
    topology::Fleet,
};
use prometheus_client::registry::Registry as MetricsRegistry;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use crate::{config::Config, error::Error};
use crate::{handler::Handler, metrics::Metrics, retry::RetryPolicy};

/// Runs the worker until `shutdown` completes, then drains within the grace period.
///
/// # Errors
///
/// [`Error::Fleet`] when NATS, the streams, the consumers or the health port cannot be set up;
/// [`Error::UnknownTask`] when `FLEET_TASKS` names a task this worker does not have.
///
/// ```no_run
/// # async fn f(config: fleet_worker::Config) -> Result<(), fleet_worker::Error> {
/// fleet_worker::run(config, fleet_common::shutdown::signal()).await
/// # }
/// ```
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let http = reqwest::Client::builder()
        .timeout(config.http_timeout)
        .build()
        .unwrap_or_default();
    let registry = tasks::builtin(&config, http)
        .only(&config.tasks)
        .map_err(|(missing, known)| Error::UnknownTask(missing, known))?;
    let worker_id = config.worker_id();

    // SIGTERM while connecting (NATS not there yet) ends the process cleanly too.
    tokio::pin!(shutdown);
    let fleet = tokio::select! {
        fleet = async {
            let client = config.nats.connect("fleet-worker", true).await?;
            Fleet::open(client, &config.nats, &config.streams).await
        } => fleet?,
        _ = &mut shutdown => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    let stop = CancellationToken::new();

    let metrics = Metrics::default();
    let mut metrics_registry = MetricsRegistry::default();
    metrics.register(&mut metrics_registry);
    let readiness = Readiness::new(fleet.clone());
    health::serve(
        config.telemetry.metrics_port,
        Arc::new(metrics_registry),
        readiness.clone(),
        stop.clone(),
    )
    .await?;

    let mut consumers = Vec::new();
    for name in registry.names() {
        let Some(task) = registry.get(&name) else {
            continue;
        };
        let mut spec = task.spec();
        if let Some(limit) = config.max_concurrency_of(&name) {
            spec.max_concurrency = Some(limit);
        }
        // Created or updated: a changed `max_concurrency` changes the consumers' cap. The
        // three at once: a consumer's creation waits on the server's disk.
        let lanes = futures::future::try_join_all(Priority::ALL.map(|priority| {
            bind_lane(
                &fleet,
                &name,
                priority,
                config.ack_wait,
                spec.max_concurrency,
            )
        }))
        .await?;
        consumers.extend(Priority::ALL.into_iter().zip(lanes));
        // Publish the catalog entry only once the consumers exist, so a routed task always has
        // somewhere to wait.
        fleet.publish_task_spec(&spec).await?;
    }
    readiness.set_ready(true);
    tracing::info!(worker = %worker_id, tasks = ?registry.names(), concurrency = config.concurrency, "worker ready");

    let hard_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let cancels = cancel::Cancels::default();
    // Notices are heard until the very end: a task running while the worker drains can still
    // be cancelled.
    let stop_listening = CancellationToken::new();
    let listening = cancels.listen(&fleet, stop_listening.clone()).await?;
    let handler = Arc::new(Handler {
        fleet,
        checks: registry.catalog(),
        timeouts: registry.timeouts(config.task_timeout),
        registry,
        retry: RetryPolicy {
            min: config.backoff_min,
            max: config.backoff_max,
        },
        max_attempts: config.max_attempts.max(1),
        ack_wait: config.ack_wait,
        worker_id,
        metrics,
        hard_stop: hard_stop.clone(),
        finishing: tracker.clone(),
        cancels,
    });
    // The worker's slots, given to the highest priority waiting (see `priority`); each
    // priority's consumers pull under a lane of twice as many, so that its next message is
    // already waiting when a slot frees.
    let slots = config.concurrency.max(1);
    let gate = priority::Gate::new(slots);
    let lanes = Priority::ALL.map(|_| Arc::new(Semaphore::new(slots.saturating_mul(2))));
    let progress = (config.ack_wait / 3).max(Duration::from_millis(100));
    let mut pulls = Vec::new();
    for (priority, consumer) in consumers {
        let handler = handler.clone();
        let gate = gate.clone();
        let waiting_stop = stop.clone();
        pulls.push(tokio::spawn(fleet_common::pull::run(
            consumer,
            lanes[priority.index()].clone(),
            tracker.clone(),
            stop.clone(),
            move |msg| {
                let handler = handler.clone();
                let gate = gate.clone();
                let stop = waiting_stop.clone();
                async move {
                    let Some(slot) =
                        priority::slot_for(&gate, &msg, priority, progress, &stop).await
                    else {
                        return;
                    };
                    handler.handle(msg).await;
                    drop(slot);
                }
            },
        )));
    }

    (&mut shutdown).await;
    readiness.set_ready(false);
    stop.cancel();
    for pull in pulls {
        let _ = pull.await;
    }

    tracker.close();
    tracing::info!(in_flight = tracker.len(), grace = ?config.drain_grace, "draining");
    if tokio::time::timeout(config.drain_grace, tracker.wait())
        .await
        .is_err()
    {
        hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    }
    stop_listening.cancel();
    let _ = listening.await;
    tracing::info!("worker stopped");
    Ok(())
}

/// Binds the durable pull consumer every worker running `task` shares, creating it when
/// missing (unless `FLEET_MANAGE_STREAMS=false`: then it must exist, `fleet setup --tasks`).
///
/// # Errors
///
/// [`fleet_common::Error::JetStream`] when it can be neither created nor found.
pub async fn bind_consumer(
    fleet: &Fleet,
    task: &str,
    ack_wait: Duration,
) -> Result<PullConsumer, fleet_common::Error> {
    bind_lane(fleet, task, Priority::Normal, ack_wait, None).await
}

/// Binds the durable pull consumer of `task`'s tasks of `priority`, creating it or updating
/// its settings (its `max_ack_pending` is `max_concurrency`) when this worker may.
///
/// # Errors
///
/// [`fleet_common::Error::JetStream`] when it can be neither created nor found.
pub async fn bind_lane(
    fleet: &Fleet,
    task: &str,
    priority: Priority,
    ack_wait: Duration,
    max_concurrency: Option<u32>,
) -> Result<PullConsumer, fleet_common::Error> {
    fleet
        .durable_pull(
            &fleet.topology().tasks_stream(),
            fleet
                .topology()
                .lane_consumer_config(task, priority, ack_wait, max_concurrency),
        )
        .await
}
