//! A bounded pull loop over a durable consumer, shared by the dispatcher and the workers.
//!
//! Each pull asks the server for a batch of up to the process's concurrency, and a message is
//! handled only once it holds a slot, so a process never runs more than its concurrency. Slots
//! are not held while a pull waits on the server: a worker pulls from one consumer per task, and
//! an idle task's long poll must not starve a busy one. A message that arrives while every slot
//! is taken (another consumer filled them meanwhile) waits for one while telling JetStream it is
//! in progress, so its ack deadline does not run out. Many replicas pull from one durable
//! consumer and JetStream hands each message to one of them.
//!
//! The handlers are driven inside the loop's own task rather than spawned one by one (as
//! `relay-min`, the broker's best, does: see BENCHMARKS.md). A task that computes for long
//! without awaiting should use `tokio::task::spawn_blocking`, as anywhere in Tokio.

use std::{future::Future, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use async_nats::jetstream::{AckKind, Message, consumer::PullConsumer};
use futures::{FutureExt, StreamExt, stream::FuturesUnordered};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// How long one pull request waits on the server for messages.
pub const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// The most messages one pull request asks for.
pub const MAX_BATCH: usize = 256;

/// How often a message waiting for a slot is reported in progress, at most: a third of the
/// consumer's ack wait when that is shorter.
const WAITING_PROGRESS: Duration = Duration::from_secs(5);

/// Pulls messages from `consumer` and runs `handle` on each, at most as many at a time as
/// `permits` allows (share one semaphore between loops to bound a whole process), until `stop`
/// is cancelled.
///
/// The handlers run inside this loop's own task (a `FuturesUnordered`), not spawned one by one:
/// on the 2-core machine of BENCHMARKS.md a task per message cost 15–25 % of the throughput of
/// a relay; in the fleet the burst ratio rose in two paired runs, the rest stayed within noise.
/// So every wait here also drives the running handlers. A handler that panics is logged and its message redelivers after its ack wait; the
/// loop goes on. On `stop`, handlers still running are moved onto `tracker`, so the caller
/// waits for them after this returns; messages that arrive after `stop` are NAKed at once so
/// another replica takes them without waiting for their ack deadline.
pub async fn run<F, Fut>(
    consumer: PullConsumer,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
    handle: F,
) where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // One pull request asks for as many messages as the process can run at once: asking only
    // for the slots free right now made one pull round trip per message under load (measured:
    // the fleet ran at 0.17 of the broker's speed). A message of the batch is taken only once
    // the previous one has a slot, so at most one waits for a slot (reported in progress); the
    // rest wait in the client's buffer, at most a batch of them, about one task's time.
    let batch_size = permits.available_permits().clamp(1, MAX_BATCH);
    let progress_every = (consumer.cached_info().config.ack_wait / 3)
        .clamp(Duration::from_millis(100), WAITING_PROGRESS);
    let mut running = FuturesUnordered::new();
    // The open pull request when `stop` came, to give back once the handlers are on `tracker`.
    let mut leftover = None;
    let start = |msg: Message, permit: OwnedSemaphorePermit| {
        let work = AssertUnwindSafe(handle(msg)).catch_unwind();
        async move {
            if work.await.is_err() {
                tracing::error!(
                    "a message handler panicked; its message redelivers after its ack wait"
                );
            }
            drop(permit);
        }
    };
    'pulls: while !stop.is_cancelled() {
        // Wait for a free slot without keeping it: other consumers may need it first.
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(()) = running.next(), if !running.is_empty() => continue,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => drop(p),
                Err(_) => break,
            },
        }
        let pull = consumer
            .batch()
            .max_messages(batch_size)
            .expires(PULL_EXPIRES)
            .messages();
        let mut batch = tokio::select! {
            _ = stop.cancelled() => break,
            batch = pull => match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "pull request failed, retrying");
                    let pause = tokio::time::sleep(Duration::from_millis(500));
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break 'pulls,
                            _ = &mut pause => continue 'pulls,
                            Some(()) = running.next(), if !running.is_empty() => {}
                        }
                    }
                }
            },
        };
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => {
                    leftover = Some(batch);
                    break 'pulls;
                }
                Some(()) = running.next(), if !running.is_empty() => continue,
                next = batch.next() => next,
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "pull batch ended with an error");
                    break;
                }
                None => break,
            };
            // A slot for it, reporting it in progress while every slot is taken.
            let permit = match permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    let mut ticks = tokio::time::interval_at(
                        tokio::time::Instant::now() + progress_every,
                        progress_every,
                    );
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => {
                                if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
                                    tracing::debug!(error = %e, "cannot give back a message; it redelivers after its ack wait");
                                }
                                leftover = Some(batch);
                                break 'pulls;
                            }
                            Some(()) = running.next(), if !running.is_empty() => {}
                            permit = permits.clone().acquire_owned() => match permit {
                                Ok(p) => break p,
                                Err(_) => break 'pulls,
                            },
                            _ = ticks.tick() => {
                                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                                    tracing::debug!(error = %e, "in-progress ack failed");
                                }
                            }
                        }
                    }
                }
            };
            running.push(start(msg, permit));
        }
    }
    // Stopped: what is running finishes on the tracker, which the caller drains, and goes on
    // while the rest of the open pull request is given back.
    if !running.is_empty() {
        tracker.spawn(async move { while running.next().await.is_some() {} });
    }
    if let Some(batch) = leftover {
        give_back(batch).await;
    }
}

/// NAKs whatever the open pull request still delivers after a stop, until it expires.
async fn give_back(mut batch: async_nats::jetstream::consumer::pull::Batch) {
    let deadline = tokio::time::sleep(PULL_EXPIRES + Duration::from_millis(200));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            next = batch.next() => match next {
                Some(Ok(msg)) => {
                    if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
                        tracing::debug!(error = %e, "cannot give back a message; it redelivers after its ack wait");
                    }
                }
                _ => return,
            },
        }
    }
}

/// Runs `work` while telling JetStream every `period` that `msg` is still being handled, so a
/// slow handler (an LLM call, a long task) is never redelivered to another replica meanwhile.
pub async fn with_progress<F: Future>(msg: &Message, period: Duration, work: F) -> F::Output {
    let period = period.max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = ticks.tick() => {
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "in-progress ack failed");
                }
            }
        }
    }
}
