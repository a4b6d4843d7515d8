//! A bounded pull loop over a durable consumer, shared by the dispatcher and the workers.
//!
//! The loop never pulls more messages than it has room for: it holds one semaphore permit per
//! message it asks the server for, so a message's ack-wait clock only starts when there is a
//! task ready to handle it. Many replicas pull from one durable consumer and JetStream hands
//! each message to exactly one of them.

use std::{future::Future, sync::Arc, time::Duration};

use async_nats::jetstream::{AckKind, Message, consumer::PullConsumer};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// How long one pull request waits on the server for messages.
pub const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// Pulls messages from `consumer` and runs `handle` on each, at most as many at a time as
/// `permits` allows (share one semaphore between loops to bound a whole process), until `stop`
/// is cancelled.
///
/// Handlers run on `tracker`, so the caller can wait for in-flight work after the loop returns.
/// Only the wait for the next message races `stop`: a handler, once started, runs to its end.
/// Messages that arrive after `stop` are NAKed at once so another replica takes them without
/// waiting for their ack deadline.
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
    let handle = Arc::new(handle);
    while !stop.is_cancelled() {
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let mut held = vec![first];
        while let Ok(p) = permits.clone().try_acquire_owned() {
            held.push(p);
        }
        let mut batch = match consumer
            .batch()
            .max_messages(held.len())
            .expires(PULL_EXPIRES)
            .messages()
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "pull request failed, retrying");
                drop(held);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => None,
                next = batch.next() => Some(next),
            };
            match next {
                Some(Some(Ok(msg))) => {
                    let permit = held.pop();
                    let handle = handle.clone();
                    tracker.spawn(async move {
                        handle(msg).await;
                        drop(permit);
                    });
                }
                Some(Some(Err(e))) => {
                    tracing::debug!(error = %e, "pull batch ended with an error");
                    break;
                }
                Some(None) => break,
                None => {
                    give_back(batch).await;
                    return;
                }
            }
        }
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
