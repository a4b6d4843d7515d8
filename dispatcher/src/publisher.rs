//! What the dispatcher decided, as the lifecycle stores it: a task, or a `rejected` result.

use async_nats::HeaderMap;
use bytes::Bytes;
use fleet_common::{
    Error,
    messages::{ClassifiedBy, ErrorInfo, Outcome, TaskResult, now},
    topology::Fleet,
};
use serde_json::{Map, Value};

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

/// Ends a request with its `rejected` result (see [`Fleet::reject`]); with `raw`, its bytes are
/// kept in the dead-letter queue first.
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
    let result = TaskResult {
        request_id: rejected.id,
        status: Outcome::Rejected,
        task: rejected.task,
        input: rejected.input,
        output: None,
        error: Some(rejected.error),
        attempts: 0,
        classified_by: rejected.classified_by,
        routing: None,
        trace_id,
        metadata: rejected.metadata,
        given_id: rejected.given_id,
        worker: None,
        finished_at: Some(now()),
    };
    fleet.reject(result, raw).await?;
    Ok(())
}
