//! Handling one delivery of a task: run it, store its one result, acknowledge.
//!
//! The order of writes is what makes "exactly one result" hold through crashes: the result is
//! stored (first writer wins) before the message is acknowledged, so a worker killed at any
//! point leads to a redelivery that either finds the result and acknowledges, or runs again.

use std::{sync::Arc, time::Instant};

use async_nats::{
    HeaderMap,
    jetstream::{AckKind, Message},
};
use fleet_common::{
    messages::{
        AttemptError, ErrorInfo, ErrorKind, MSG_ID_HEADER, Outcome, State, StatusRecord,
        TaskMessage, TaskResult, is_valid_id,
    },
    telemetry,
    topology::Fleet,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field::Empty};

use crate::{error::TaskError, metrics::Metrics, retry::RetryPolicy, tasks::Registry};

/// Everything a delivery needs; one per worker, shared by every task consumer.
pub struct Handler {
    /// NATS and the fleet's names.
    pub fleet: Fleet,
    /// The tasks this worker runs.
    pub registry: Registry,
    /// Retry delays.
    pub retry: RetryPolicy,
    /// `FLEET_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// `FLEET_ACK_WAIT`; in-progress acks go out at a third of it.
    pub ack_wait: std::time::Duration,
    /// This worker's id.
    pub worker_id: String,
    /// Counters.
    pub metrics: Metrics,
    /// Cancelled when the drain grace runs out: running tasks are given back (NAK).
    pub hard_stop: CancellationToken,
}

/// What happens to the message.
enum Ending {
    /// Done: its result is stored.
    Ack,
    /// Failed permanently: its result is stored.
    Term,
    /// Another delivery after the delay.
    Nak(Option<std::time::Duration>),
}

// === impl Handler ===

impl Handler {
    /// Handles one delivery and acknowledges it as its outcome says.
    pub async fn handle(self: Arc<Self>, msg: Message) {
        let attempt = msg
            .info()
            .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
            .unwrap_or(1);
        let span = tracing::info_span!(
            "fleet.task",
            otel.name = format!("{} process", msg.subject),
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.operation.type = "process",
            messaging.destination.name = %msg.subject,
            request_id = Empty,
            task = Empty,
            task_id = Empty,
            attempt = i64::from(attempt),
            worker = %self.worker_id,
            trace_id = Empty,
            outcome = Empty,
        );
        telemetry::set_parent_from(&span, msg.headers.as_ref());
        let ending = match self.process(&msg, attempt).instrument(span.clone()).await {
            Ok(ending) => ending,
            Err(e) => {
                tracing::error!(parent: &span, error = %e, "cannot record the outcome; the task redelivers");
                Ending::Nak(Some(self.retry.delay(attempt, None)))
            }
        };
        let kind = match ending {
            Ending::Ack => AckKind::Ack,
            Ending::Term => AckKind::Term,
            Ending::Nak(delay) => AckKind::Nak(delay),
        };
        if let Err(e) = msg.ack_with(kind).await {
            tracing::warn!(parent: &span, error = %e, "acknowledgement lost; the redelivery finds the stored result");
        }
    }

    async fn process(&self, msg: &Message, attempt: u32) -> Result<Ending, fleet_common::Error> {
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

        if attempt > 1
            && let Some(result) = self.fleet.result(&task.request_id).await?
        {
            // A worker stored the result and died before acknowledging.
            self.settle_status(&task, &result).await?;
            return Ok(Ending::Ack);
        }
        let mut record = if attempt > 1 {
            self.fleet
                .status_of(&task.request_id)
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| StatusRecord::for_task(&task, State::Running))
        } else {
            StatusRecord::for_task(&task, State::Running)
        };
        if attempt > self.max_attempts {
            // Earlier deliveries were lost with their worker (killed mid-task).
            record.errors.push(AttemptError {
                attempt: attempt - 1,
                kind: ErrorKind::TaskError,
                message: "the worker running this attempt stopped before it finished".into(),
            });
            return self.bury(msg, &task, record, attempt - 1).await;
        }

        record.attempt = attempt;
        record.worker = Some(self.worker_id.clone());
        record = record.moved_to(State::Running);
        self.fleet.put_status(&record).await?;

        let Some(runner) = self.registry.get(&task.task) else {
            let error = ErrorInfo::new(
                ErrorKind::UnknownTask,
                format!("this worker does not run `{}`", task.task),
            );
            return self.finish(&task, record, attempt, Err(error)).await;
        };
        let label = Metrics::label(&task.task);
        self.metrics.started.get_or_create(&label).inc();
        self.metrics.in_flight.inc();
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = self.run_with_progress(msg, runner.call(task.input.clone())) => Some(outcome),
            _ = self.hard_stop.cancelled() => None,
        };
        self.metrics.in_flight.dec();
        self.metrics
            .duration
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        let Some(outcome) = outcome else {
            tracing::warn!("drain grace ran out; the task is given back for another worker");
            return Ok(Ending::Nak(None));
        };

        match outcome {
            Ok(output) => self.finish(&task, record, attempt, Ok(output)).await,
            Err(TaskError::Abort { kind, message }) => {
                self.finish(&task, record, attempt, Err(ErrorInfo::new(kind, message)))
                    .await
            }
            Err(TaskError::Retry { message, after }) => {
                tracing::warn!(error = %message, attempt, "attempt failed");
                telemetry::record_error(&message);
                record.errors.push(AttemptError {
                    attempt,
                    kind: ErrorKind::TaskError,
                    message,
                });
                if attempt >= self.max_attempts {
                    return self.bury(msg, &task, record, attempt).await;
                }
                self.metrics.retried.get_or_create(&label).inc();
                let delay = self.retry.delay(attempt, after);
                self.fleet
                    .put_status(&record.moved_to(State::Retrying))
                    .await?;
                tracing::info!(delay_ms = delay.as_millis() as u64, "retry scheduled");
                Ok(Ending::Nak(Some(delay)))
            }
        }
    }

    /// Runs `work`, telling JetStream the task is still in progress every third of the ack wait.
    async fn run_with_progress<F>(&self, msg: &Message, work: F) -> Result<Value, TaskError>
    where
        F: std::future::Future<Output = Result<Value, TaskError>>,
    {
        let period = (self.ack_wait / 3).max(std::time::Duration::from_millis(100));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tokio::pin!(work);
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                _ = ticks.tick() => {
                    if let Err(e) = msg.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "in-progress ack failed");
                    }
                }
            }
        }
    }

    /// Stores the final result of a task that ran (succeeded or failed permanently).
    async fn finish(
        &self,
        task: &TaskMessage,
        record: StatusRecord,
        attempt: u32,
        outcome: Result<Value, ErrorInfo>,
    ) -> Result<Ending, fleet_common::Error> {
        let label = Metrics::label(&task.task);
        let (status, ending) = match &outcome {
            Ok(_) => (Outcome::Succeeded, Ending::Ack),
            Err(_) => (Outcome::Failed, Ending::Term),
        };
        let mut result = TaskResult::for_task(task, status, attempt);
        result.worker = Some(self.worker_id.clone());
        match outcome {
            Ok(output) => {
                self.metrics.succeeded.get_or_create(&label).inc();
                result.output = Some(output);
            }
            Err(error) => {
                self.metrics.failed.get_or_create(&label).inc();
                telemetry::record_error(&error.message);
                tracing::warn!(error = %error.message, "task failed permanently");
                result.error = Some(error);
            }
        }
        self.store(&result, record).await?;
        tracing::Span::current().record("outcome", tracing::field::debug(status));
        Ok(ending)
    }

    /// Moves an exhausted task to the dead-letter queue and stores its `dead` result.
    async fn bury(
        &self,
        msg: &Message,
        task: &TaskMessage,
        record: StatusRecord,
        attempts: u32,
    ) -> Result<Ending, fleet_common::Error> {
        let last = record
            .errors
            .last()
            .map(|e| e.message.clone())
            .unwrap_or_else(|| "unknown".into());
        self.fleet
            .dead_letter(
                &task.task,
                &task.request_id,
                msg.headers.as_ref(),
                msg.payload.clone(),
                &record.errors,
                &format!("{}.dead{}", task.request_id, stream_seq(msg)),
            )
            .await?;
        let mut result = TaskResult::for_task(task, Outcome::Dead, attempts);
        result.worker = Some(self.worker_id.clone());
        result.error = Some(ErrorInfo::new(
            ErrorKind::Exhausted,
            format!(
                "gave up after {attempts} attempts; last error: {last}. The task is in the dead-letter queue: `fleet dlq replay {}` runs it again",
                task.request_id
            ),
        ));
        self.metrics
            .dead
            .get_or_create(&Metrics::label(&task.task))
            .inc();
        tracing::warn!(
            attempts,
            "attempts exhausted; task moved to the dead-letter queue"
        );
        self.store(&result, record).await?;
        Ok(Ending::Ack)
    }

    /// Stores a result (first writer wins) and then the matching final status.
    async fn store(
        &self,
        result: &TaskResult,
        record: StatusRecord,
    ) -> Result<(), fleet_common::Error> {
        self.fleet.store_result(result, HeaderMap::new()).await?;
        let mut record = record.moved_to(State::from(result.status));
        record.error = result.error.clone();
        self.fleet.put_status(&record).await
    }

    /// Makes the status agree with a result found on redelivery.
    async fn settle_status(
        &self,
        task: &TaskMessage,
        result: &TaskResult,
    ) -> Result<(), fleet_common::Error> {
        let record = self
            .fleet
            .status_of(&task.request_id)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| StatusRecord::for_task(task, State::Running));
        if record.state.is_terminal() {
            return Ok(());
        }
        let mut record = record.moved_to(State::from(result.status));
        record.error = result.error.clone();
        record.attempt = result.attempts;
        self.fleet.put_status(&record).await
    }

    /// A task message that is not a task: keep it in the DLQ, fail its request if it names one.
    async fn unreadable(&self, msg: &Message, why: &str) -> Result<Ending, fleet_common::Error> {
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(MSG_ID_HEADER))
            .map(|v| v.as_str().to_owned())
            .filter(|id| is_valid_id(id));
        let message = format!(
            "the task message is not readable ({why}); it is kept in the dead-letter queue"
        );
        tracing::error!(error = %message, "unreadable task message");
        let errors = [AttemptError {
            attempt: 1,
            kind: ErrorKind::BadRequest,
            message: message.clone(),
        }];
        self.fleet
            .dead_letter(
                "unreadable",
                id.as_deref().unwrap_or("unknown"),
                msg.headers.as_ref(),
                msg.payload.clone(),
                &errors,
                &format!("task.unreadable{}", stream_seq(msg)),
            )
            .await?;
        if let Some(id) = id {
            let result = TaskResult {
                request_id: id.clone(),
                status: Outcome::Failed,
                task: None,
                input: None,
                output: None,
                error: Some(ErrorInfo::new(ErrorKind::BadRequest, message)),
                attempts: 1,
                classified_by: None,
                trace_id: telemetry::current_trace_id(),
                metadata: None,
                given_id: None,
                worker: Some(self.worker_id.clone()),
                finished_at: Some(fleet_common::messages::now()),
            };
            self.store(&result, StatusRecord::new(&id, State::Running))
                .await?;
        }
        Ok(Ending::Term)
    }
}

/// The message's sequence in the tasks stream (0 when it has no JetStream metadata).
fn stream_seq(msg: &Message) -> u64 {
    msg.info().map(|i| i.stream_sequence).unwrap_or(0)
}
