//! Handling one delivery of a task: run it, store its one result, acknowledge.
//!
//! The order of writes is what makes "exactly one result" hold through crashes: the result is
//! stored (first writer wins) before the message is acknowledged, so a worker killed at any
//! point leads to a redelivery that either finds the result and acknowledges, or runs again.
//! The final state is written after the result, off the request's path: the delivery's slot is
//! free as soon as the result is stored, and the acknowledgement follows the state write, so a
//! crash in between is settled by the redelivery. Attempts are counted by the lifecycle
//! ([`fleet_common::lifecycle`]) from the status record, never from deliveries.

use std::{
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::jetstream::{AckKind, Message};
use fleet_common::{
    catalog::Catalog,
    lifecycle::{Attempt, RUNNING_VISIBLE_AFTER, Retried, Start, rules, timing},
    messages::{
        AttemptError, ErrorInfo, ErrorKind, MSG_ID_HEADER, Outcome, TaskMessage, TaskResult,
        is_valid_id,
    },
    telemetry,
    topology::Fleet,
};
use futures::FutureExt;
use serde_json::Value;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{
    error::TaskError,
    metrics::Metrics,
    retry::RetryPolicy,
    tasks::{self, Registry, Timeouts},
};

/// Everything a delivery needs; one per worker, shared by every task consumer.
pub struct Handler {
    /// NATS and the fleet's names.
    pub fleet: Fleet,
    /// The tasks this worker runs.
    pub registry: Registry,
    /// Their input schemas, compiled (`Registry::catalog`).
    pub checks: Catalog,
    /// How long one attempt of each may run (`Registry::timeouts`).
    pub timeouts: Timeouts,
    /// Retry delays.
    pub retry: RetryPolicy,
    /// `FLEET_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// `FLEET_ACK_WAIT`; in-progress acks go out at a third of it.
    pub ack_wait: Duration,
    /// This worker's id.
    pub worker_id: String,
    /// Counters.
    pub metrics: Metrics,
    /// Cancelled when the drain grace runs out: running tasks are given back (NAK).
    pub hard_stop: CancellationToken,
    /// Where the final state writes run after a delivery's slot is freed; drained on shutdown.
    pub finishing: TaskTracker,
    /// The running requests' cancellation signals (`fleet cancel`).
    pub cancels: crate::cancel::Cancels,
}

/// What happens to the message.
enum Ending {
    /// Acknowledge now (nothing left to write).
    Ack,
    /// Another delivery after the delay (`None`: at once).
    Nak(Option<Duration>),
    /// TERM now.
    Term,
    /// The result stands: write the final state, then acknowledge, off the request's path.
    Settled {
        /// The attempt, whose record the final state builds on.
        attempt: Box<Attempt>,
        /// The result that stands.
        result: Box<TaskResult>,
    },
}

// === impl Handler ===

impl Handler {
    /// Handles one delivery and acknowledges it as its outcome says.
    pub async fn handle(self: Arc<Self>, msg: Message) {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let span = telemetry::process_span(&msg);
        span.record("delivery", delivered);
        span.record("worker", self.worker_id.as_str());
        let delivered = u64::try_from(delivered).unwrap_or(1);
        let ending = match self.process(&msg, delivered).instrument(span.clone()).await {
            Ok(ending) => ending,
            Err(e) => {
                // Nothing was counted: an outage delays the work, it never uses attempts up.
                tracing::warn!(parent: &span, error = %e, "cannot record the outcome; the task redelivers");
                let attempt = u32::try_from(delivered).unwrap_or(u32::MAX);
                Ending::Nak(Some(self.retry.delay(attempt, None)))
            }
        };
        let kind = match ending {
            Ending::Ack => AckKind::Ack,
            Ending::Term => AckKind::Term,
            Ending::Nak(delay) => AckKind::Nak(delay),
            Ending::Settled { attempt, result } => {
                let fleet = self.fleet.clone();
                self.finishing.spawn(
                    async move {
                        if let Err(e) = fleet.record_final(&attempt, &result).await {
                            // The result is stored; the redelivery writes the state again.
                            tracing::warn!(error = %e, "final state not written; the task redelivers to settle it");
                            return;
                        }
                        let kind = match result.status {
                            Outcome::Failed => AckKind::Term,
                            _ => AckKind::Ack,
                        };
                        if let Err(e) = msg.ack_with(kind).await {
                            tracing::warn!(error = %e, "acknowledgement lost; the redelivery finds the stored result");
                        }
                    }
                    .instrument(span),
                );
                return;
            }
        };
        if let Err(e) = msg.ack_with(kind).await {
            tracing::warn!(parent: &span, error = %e, "acknowledgement lost; the redelivery finds the stored result");
        }
    }

    async fn process(&self, msg: &Message, delivered: u64) -> Result<Ending, fleet_common::Error> {
        let span = tracing::Span::current();
        let task: TaskMessage = match serde_json::from_slice(&msg.payload) {
            Ok(t) => t,
            Err(e) => return self.unreadable(msg, &e.to_string()).await,
        };
        span.record("request_id", task.request_id.as_str());
        span.record("task_id", task.request_id.as_str());
        span.record("task", task.task.as_str());
        if let Some(trace_id) = telemetry::current_trace_id() {
            span.record("trace_id", trace_id.as_str());
        }

        let mut attempt = match self
            .fleet
            .start(&task, delivered, &self.worker_id, self.max_attempts)
            .await?
        {
            Start::Finished(result) => {
                tracing::info!(
                    outcome = result.status.as_str(),
                    "the result was stored by an earlier delivery"
                );
                return Ok(Ending::Ack);
            }
            Start::Bury(attempt) => return self.bury(msg, &task, attempt).await,
            Start::Run(attempt) => attempt,
        };
        span.record("attempt", i64::from(attempt.number));

        // The subject says which consumer delivered it, and so what may run: a body that
        // names another task is not run as either.
        let subject_task = self
            .fleet
            .topology()
            .task_of_subject(&msg.subject)
            .map(|(task, _)| task)
            .unwrap_or_default();
        if subject_task != task.task {
            let error = ErrorInfo::new(
                ErrorKind::BadRequest,
                format!(
                    "the task message names `{}` but was published on `{}`; it is not run",
                    task.task, msg.subject
                ),
            );
            return self.finish(&task, attempt, Err(error)).await;
        }
        let Some(runner) = self.registry.get(subject_task) else {
            let error = ErrorInfo::new(
                ErrorKind::UnknownTask,
                format!("this worker does not run `{}`", task.task),
            );
            return self.finish(&task, attempt, Err(error)).await;
        };
        // Defence in depth: anyone who can publish on `fleet.tasks.*` skipped the dispatcher.
        if let Err(error) = self.checks.check(subject_task, &task.input) {
            return self.finish(&task, attempt, Err(error)).await;
        }
        // Only a request that has a deadline, or a task that needs approval, costs a check.
        let deadline = task.deadline.as_deref().and_then(timing::parse_rfc3339);
        if deadline.is_some_and(|d| d <= time::OffsetDateTime::now_utc()) {
            let ran = attempt.number.saturating_sub(1);
            return self.end_early(&task, attempt, Outcome::Expired, ran).await;
        }
        if self
            .checks
            .get(subject_task)
            .is_some_and(|spec| spec.requires_approval)
            && let Some(ending) = self.unapproved(&task, &attempt).await?
        {
            return Ok(ending);
        }
        let Some(cancel) = self.cancels.start(&task.request_id) else {
            let ran = attempt.number.saturating_sub(1);
            return self
                .end_early(&task, attempt, Outcome::Cancelled, ran)
                .await;
        };
        let label = Metrics::label(&task.task);
        self.metrics.started.get_or_create(&label).inc();
        self.metrics.in_flight.inc();
        let started = Instant::now();
        // A panicking task is a failed attempt like any other, not a lost delivery.
        let limit = self.timeouts.of(subject_task);
        // A Rust task gets cancellation for free: at `fleet cancel` or the deadline its future
        // is dropped (an HTTP call in flight is aborted); `tasks::cancellation()` lets it
        // watch the same signal.
        let call = tasks::with_cancellation(cancel.clone(), runner.call(task.input.clone()));
        let work = AssertUnwindSafe(call).catch_unwind().map(|outcome| {
            outcome.unwrap_or_else(|panic| Err(TaskError::retry(panic_message(&panic))))
        });
        // One attempt's limit: past it the attempt is a retryable failure (the task's future is
        // dropped, which aborts its HTTP calls).
        let work = tokio::time::timeout(limit, work).map(move |outcome| {
            outcome.unwrap_or_else(|_| {
                Err(TaskError::retry(format!(
                    "the attempt ran longer than its {} limit (the task's `timeout`, else FLEET_TASK_TIMEOUT)",
                    humantime::format_duration(limit)
                )))
            })
        });
        let interrupted = async {
            tokio::select! {
                _ = cancel.cancelled() => Outcome::Cancelled,
                _ = sleep_until(deadline) => Outcome::Expired,
            }
        };
        let outcome = tokio::select! {
            outcome = self.run_with_progress(msg, &attempt, delivered > 1, work) => Ok(Some(outcome)),
            _ = self.hard_stop.cancelled() => Ok(None),
            why = interrupted => Err(why),
        };
        self.cancels.finish(&task.request_id);
        self.metrics.in_flight.dec();
        self.metrics
            .duration
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(why) => {
                tracing::info!(outcome = why.as_str(), "the running task was stopped");
                let ran = attempt.number;
                return self.end_early(&task, attempt, why, ran).await;
            }
        };
        let Some(outcome) = outcome else {
            tracing::warn!("drain grace ran out; the task is given back for another worker");
            if let Err(e) = self.fleet.hand_back(&attempt).await {
                tracing::debug!(error = %e, "hand-back not recorded");
            }
            return Ok(Ending::Nak(None));
        };

        match outcome {
            Ok(output) => self.finish(&task, attempt, Ok(output)).await,
            Err(TaskError::Abort { kind, message }) => {
                self.finish(&task, attempt, Err(ErrorInfo::new(kind, message)))
                    .await
            }
            Err(TaskError::Retry { message, after }) => {
                tracing::warn!(error = %message, attempt = attempt.number, "attempt failed");
                telemetry::record_error(ErrorKind::TaskError.as_str(), &message);
                let error = AttemptError {
                    attempt: attempt.number,
                    kind: ErrorKind::TaskError,
                    message,
                };
                if rules::exhausted(attempt.errors.len() + 1, self.max_attempts) {
                    attempt.errors.push(error);
                    return self.bury(msg, &task, attempt).await;
                }
                let number = attempt.number;
                match self.fleet.retry(&mut attempt, error).await? {
                    Retried::Ended => Ok(Ending::Ack),
                    Retried::Scheduled => {
                        self.metrics.retried.get_or_create(&label).inc();
                        let delay = self.retry.delay(number, after);
                        tracing::info!(delay_ms = delay.as_millis() as u64, "retry scheduled");
                        Ok(Ending::Nak(Some(delay)))
                    }
                }
            }
        }
    }

    /// Runs `work`, telling JetStream the task is still in progress every third of the ack
    /// wait, and showing it `running` once it has run for [`RUNNING_VISIBLE_AFTER`] (unless
    /// `shown` already).
    async fn run_with_progress<F>(
        &self,
        msg: &Message,
        attempt: &Attempt,
        shown: bool,
        work: F,
    ) -> Result<Value, TaskError>
    where
        F: std::future::Future<Output = Result<Value, TaskError>>,
    {
        let period = (self.ack_wait / 3).max(Duration::from_millis(100));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let visible = tokio::time::sleep(RUNNING_VISIBLE_AFTER);
        tokio::pin!(work, visible);
        let mut marked = shown;
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                _ = ticks.tick() => {
                    if let Err(e) = msg.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "in-progress ack failed");
                    }
                }
                _ = &mut visible, if !marked => {
                    marked = true;
                    let fleet = self.fleet.clone();
                    let attempt = attempt.clone();
                    // Not awaited here: the task keeps running while the state is written.
                    tokio::spawn(async move {
                        if let Err(e) = fleet.mark_running(&attempt).await {
                            tracing::debug!(error = %e, "running state not written");
                        }
                    }.in_current_span());
                }
            }
        }
    }

    /// Ends a request whose task did not run to its end: `cancelled` (`fleet cancel`) or
    /// `expired` (its deadline). `fleet cancel` stored its result first, so that one stands.
    async fn end_early(
        &self,
        task: &TaskMessage,
        attempt: Attempt,
        why: Outcome,
        ran: u32,
    ) -> Result<Ending, fleet_common::Error> {
        let mut result = TaskResult::for_task(task, why, ran);
        result.worker = Some(self.worker_id.clone());
        result.error = Some(match why {
            Outcome::Expired => ErrorInfo::new(
                ErrorKind::DeadlineExceeded,
                format!(
                    "the deadline ({}) passed before the task finished",
                    task.deadline.as_deref().unwrap_or("unknown")
                ),
            ),
            _ => ErrorInfo::new(ErrorKind::Cancelled, "the request was cancelled"),
        });
        let standing = self.fleet.settle(result).await?;
        tracing::Span::current().record("outcome", standing.status.as_str());
        Ok(Ending::Settled {
            attempt: Box::new(attempt),
            result: Box::new(standing),
        })
    }

    /// For a task that requires approval: `None` when `fleet approve` recorded its approval,
    /// else how it ends without running (whoever published it skipped the approval).
    async fn unapproved(
        &self,
        task: &TaskMessage,
        attempt: &Attempt,
    ) -> Result<Option<Ending>, fleet_common::Error> {
        let view = self.fleet.view(&task.request_id).await?;
        if view.result.is_some() {
            return Ok(Some(Ending::Ack));
        }
        if rules::approved(view.record.as_ref()) {
            return Ok(None);
        }
        let mut result = TaskResult::for_task(task, Outcome::Rejected, 0);
        result.worker = Some(self.worker_id.clone());
        result.error = Some(ErrorInfo::new(
            ErrorKind::Denied,
            format!(
                "`{}` requires approval and this request was never approved (`fleet approve`); it did not run",
                task.task
            ),
        ));
        let standing = self.fleet.settle(result).await?;
        Ok(Some(Ending::Settled {
            attempt: Box::new(attempt.clone()),
            result: Box::new(standing),
        }))
    }

    /// Stores the result of a task that ran (succeeded or failed permanently).
    async fn finish(
        &self,
        task: &TaskMessage,
        attempt: Attempt,
        outcome: Result<Value, ErrorInfo>,
    ) -> Result<Ending, fleet_common::Error> {
        let label = Metrics::label(&task.task);
        let status = match &outcome {
            Ok(_) => Outcome::Succeeded,
            Err(_) => Outcome::Failed,
        };
        let mut result = TaskResult::for_task(task, status, attempt.number);
        result.worker = Some(self.worker_id.clone());
        match outcome {
            Ok(output) => {
                self.metrics.succeeded.get_or_create(&label).inc();
                result.output = Some(output);
            }
            Err(error) => {
                self.metrics.failed.get_or_create(&label).inc();
                telemetry::record_error(error.kind.as_str(), &error.message);
                tracing::warn!(error = %error.message, "task failed permanently");
                result.error = Some(error);
            }
        }
        let standing = self.fleet.settle(result).await?;
        if let Some(at) = &task.received_at {
            self.metrics.observe_request(&task.task, at);
        }
        tracing::Span::current().record("outcome", standing.status.as_str());
        Ok(Ending::Settled {
            attempt: Box::new(attempt),
            result: Box::new(standing),
        })
    }

    /// Moves an exhausted task to the dead-letter queue and stores its `dead` result.
    async fn bury(
        &self,
        msg: &Message,
        task: &TaskMessage,
        attempt: Attempt,
    ) -> Result<Ending, fleet_common::Error> {
        let attempts = u32::try_from(attempt.errors.len()).unwrap_or(u32::MAX);
        let last = attempt
            .errors
            .last()
            .map(|e| e.message.clone())
            .unwrap_or_else(|| "unknown".into());
        let mut dead = TaskResult::for_task(task, Outcome::Dead, attempts);
        dead.worker = Some(self.worker_id.clone());
        dead.error = Some(ErrorInfo::new(
            ErrorKind::Exhausted,
            format!(
                "gave up after {attempts} attempts; last error: {last}. The task is in the dead-letter queue: `fleet dlq replay {}` runs it again",
                task.request_id
            ),
        ));
        let standing = self
            .fleet
            .bury(
                task,
                (msg.headers.as_ref(), msg.payload.clone()),
                dead,
                &attempt.errors,
                &format!("{}.dead{}", task.request_id, stream_seq(msg)),
            )
            .await?;
        if let Some(at) = &task.received_at {
            self.metrics.observe_request(&task.task, at);
        }
        self.metrics
            .dead
            .get_or_create(&Metrics::label(&task.task))
            .inc();
        tracing::warn!(
            attempts,
            "attempts exhausted; task moved to the dead-letter queue"
        );
        tracing::Span::current().record("outcome", standing.status.as_str());
        Ok(Ending::Settled {
            attempt: Box::new(attempt),
            result: Box::new(standing),
        })
    }

    /// A task message that is not a task: keep it in the DLQ, fail its request if it names one.
    async fn unreadable(&self, msg: &Message, why: &str) -> Result<Ending, fleet_common::Error> {
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(MSG_ID_HEADER))
            .map(|v| v.as_str().to_owned())
            .filter(|id| is_valid_id(id));
        let error = ErrorInfo::new(
            ErrorKind::BadRequest,
            format!(
                "the task message is not readable ({why}); it is kept in the dead-letter queue"
            ),
        );
        tracing::error!(error = %error.message, "unreadable task message");
        self.fleet
            .keep_unreadable(
                id.as_deref().unwrap_or("unknown"),
                (msg.headers.as_ref(), msg.payload.clone()),
                &error,
                &format!("task.unreadable{}", stream_seq(msg)),
            )
            .await?;
        if let Some(id) = id {
            let result = TaskResult {
                request_id: id,
                status: Outcome::Failed,
                task: None,
                input: None,
                output: None,
                error: Some(error),
                attempts: 0,
                classified_by: None,
                routing: None,
                trace_id: telemetry::current_trace_id(),
                metadata: None,
                given_id: None,
                worker: Some(self.worker_id.clone()),
                finished_at: Some(fleet_common::messages::now()),
            };
            self.fleet.conclude(result).await?;
        }
        Ok(Ending::Term)
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<time::OffsetDateTime>) {
    match deadline {
        Some(d) => {
            let left = d - time::OffsetDateTime::now_utc();
            tokio::time::sleep(std::time::Duration::try_from(left).unwrap_or_default()).await;
        }
        None => std::future::pending().await,
    }
}

/// The message's sequence in the tasks stream (0 when it has no JetStream metadata).
fn stream_seq(msg: &Message) -> u64 {
    msg.info().map(|i| i.stream_sequence).unwrap_or(0)
}

/// What a panicking task said, for its attempt's error.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("the task panicked: {what}")
}
