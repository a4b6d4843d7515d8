//! Publishing what the dispatcher decided: a task on the tasks stream, or a `rejected` result.

use async_nats::{HeaderMap, jetstream::message::PublishMessage};
use bytes::Bytes;
use fleet_common::{
    Error,
    messages::{
        AttemptError, ClassifiedBy, ErrorInfo, Outcome, State, StatusRecord, TaskMessage,
        TaskResult, now,
    },
    telemetry,
    topology::Fleet,
};
use serde_json::{Map, Value};
use tracing::{Instrument, field::Empty};

/// Publishes a task with `Nats-Msg-Id` = request id (JetStream drops a second copy within its
/// duplicate window) and the trace context, and awaits the stream's acknowledgement.
///
/// # Errors
///
/// [`Error::JetStream`] when the tasks stream does not acknowledge it; the request must then
/// not be acknowledged either.
pub async fn publish_task(fleet: &Fleet, task: &TaskMessage) -> Result<(), Error> {
    let subject = fleet.topology.task_subject(&task.task);
    let span = tracing::info_span!(
        "fleet.publish",
        otel.name = format!("{subject} publish"),
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.operation.type = "publish",
        messaging.destination.name = %subject,
        messaging.message.id = %task.request_id,
        messaging.message.body.size = Empty,
    );
    async {
        let body = serde_json::to_vec(task).map_err(|source| Error::Decode {
            what: "task message",
            source,
        })?;
        tracing::Span::current().record(
            "messaging.message.body.size",
            i64::try_from(body.len()).unwrap_or(i64::MAX),
        );
        let mut headers = HeaderMap::new();
        telemetry::inject(&mut headers);
        let publish = PublishMessage::build()
            .payload(body.into())
            .headers(headers)
            .message_id(&task.request_id);
        let ack = fleet
            .js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| Error::js("publish task", e))?;
        ack.await.map_err(|e| Error::js("store task", e))?;
        Ok(())
    }
    .instrument(span)
    .await
}

/// Everything a `rejected` result says.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The id the result is stored under.
    pub id: String,
    /// The id the caller gave, when it broke the rule.
    pub given_id: Option<String>,
    /// Why.
    pub error: ErrorInfo,
    /// The task, when one was named or chosen.
    pub task: Option<String>,
    /// Its input, when there was one.
    pub input: Option<Value>,
    /// How the task was chosen, when it was.
    pub classified_by: Option<ClassifiedBy>,
    /// The caller's metadata.
    pub metadata: Option<Map<String, Value>>,
}

/// Stores a `rejected` result and status; with `raw`, keeps the request's bytes and headers in
/// the dead-letter queue on `<prefix>.dlq.unreadable` first.
///
/// # Errors
///
/// [`Error::JetStream`] when the DLQ or the result cannot be stored.
pub async fn reject(
    fleet: &Fleet,
    rejected: Rejected,
    raw: Option<(Option<&HeaderMap>, Bytes)>,
    trace_id: Option<String>,
) -> Result<(), Error> {
    tracing::info!(
        request_id = %rejected.id,
        kind = ?rejected.error.kind,
        error = %rejected.error.message,
        "request rejected"
    );
    if let Some((headers, payload)) = raw {
        let errors = [AttemptError {
            attempt: 0,
            kind: rejected.error.kind,
            message: rejected.error.message.clone(),
        }];
        fleet
            .dead_letter(
                "unreadable",
                &rejected.id,
                headers,
                payload,
                &errors,
                &format!("{}.unreadable", rejected.id),
            )
            .await?;
    }
    let result = TaskResult {
        request_id: rejected.id.clone(),
        status: Outcome::Rejected,
        task: rejected.task.clone(),
        input: rejected.input,
        output: None,
        error: Some(rejected.error.clone()),
        attempts: 0,
        classified_by: rejected.classified_by,
        trace_id: trace_id.clone(),
        metadata: rejected.metadata,
        given_id: rejected.given_id,
        worker: None,
        finished_at: Some(now()),
    };
    fleet.store_result(&result, HeaderMap::new()).await?;
    let mut record = StatusRecord::new(&rejected.id, State::Rejected);
    record.task = rejected.task;
    record.trace_id = trace_id;
    record.classified_by = rejected.classified_by;
    record.error = Some(rejected.error);
    fleet.put_status(&record).await
}
