//! What a person does to a request: cancel it, approve or deny it, list requests.
//!
//! Each verb ends or moves a request only through the two rules the rest of the lifecycle
//! keeps: exactly one result per request (the first one stored wins, so a cancellation and a
//! worker's result, or a denial and a cancellation, can race and only one stands), and states
//! only move forward with a compare-and-set. These verbs write results and status records, so
//! they are an operator's (the admin role of `deploy/nats/auth.conf`), not a client's.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::timing::parse_rfc3339;
use crate::{
    Error,
    messages::{ErrorInfo, ErrorKind, Outcome, State, StatusRecord, TaskMessage, TaskResult, now},
    topology::Fleet,
};

/// How long `list` waits for the status bucket's records before it answers with what it has.
const LIST_READ_LIMIT: Duration = Duration::from_secs(10);

/// The control subjects' verbs: `<prefix>.<verb>.<id>`.
const CONTROL_VERBS: [&str; 3] = ["cancel", "approve", "deny"];

/// Header naming who sent a control request over plain NATS.
pub const BY_HEADER: &str = "Fleet-By";

fn answered(
    id: &str,
    changed: bool,
    state: Option<State>,
    result: Option<TaskResult>,
) -> serde_json::Value {
    let mut v = serde_json::json!({"request_id": id, "changed": changed});
    if let Some(state) = state {
        v["state"] = serde_json::json!(state);
    }
    if let Some(result) = result {
        v["state"] = serde_json::json!(State::from(result.status));
        v["result"] = serde_json::json!(result);
    }
    v
}

fn unknown(id: &str) -> serde_json::Value {
    serde_json::json!({"request_id": id, "changed": false, "error": "no request with this id is known"})
}

/// What [`Fleet::cancel`] did.
#[derive(Debug, Clone)]
pub enum Cancellation {
    /// The request ended with this `cancelled` result; a worker running it was told.
    Cancelled(Box<TaskResult>),
    /// It had already ended: this result stands, nothing changed.
    Finished(Box<TaskResult>),
    /// No request with this id is known.
    Unknown,
}

/// What [`Fleet::approve`] did.
#[derive(Debug, Clone)]
pub enum Approval {
    /// Approved: its task is published (the record says who approved it).
    Approved(Box<StatusRecord>),
    /// It had already ended (denied, cancelled, expired…): this result stands.
    Finished(Box<TaskResult>),
    /// It is not waiting for approval (it is in this state).
    NotAwaiting(State),
    /// No request with this id is known.
    Unknown,
}

/// What [`Fleet::deny`] did.
#[derive(Debug, Clone)]
pub enum Denial {
    /// Denied: this `rejected` result (kind `denied`) stands.
    Denied(Box<TaskResult>),
    /// It had already ended: this result stands, nothing changed.
    Finished(Box<TaskResult>),
    /// It is not waiting for approval (it is in this state).
    NotAwaiting(State),
    /// No request with this id is known.
    Unknown,
}

/// One page of [`Fleet::list`].
#[derive(Debug, Clone, Default)]
pub struct Listed {
    /// The records of this page, newest first.
    pub records: Vec<StatusRecord>,
    /// How many records matched the filters, on every page.
    pub total: usize,
}

/// A result that ends a request without (or instead of) its task's outcome, built on what its
/// record knows.
fn ending(id: &str, record: &StatusRecord, status: Outcome, error: ErrorInfo) -> TaskResult {
    TaskResult {
        request_id: id.to_owned(),
        status,
        task: record.task.clone(),
        input: record.input.clone(),
        output: None,
        error: Some(error),
        attempts: record.attempt,
        classified_by: record.classified_by,
        routing: record.routing.clone(),
        trace_id: record.trace_id.clone(),
        metadata: record.metadata.clone(),
        given_id: None,
        worker: None,
        finished_at: Some(now()),
    }
}

/// Whether `result` is the one this verb stored (a concurrent ending may have won).
fn is_ours(result: &TaskResult, kind: ErrorKind) -> bool {
    result.error.as_ref().is_some_and(|e| e.kind == kind)
}

// === impl Fleet ===

impl Fleet {
    /// Cancels a request in any state that is not final: stores its `cancelled` result (the
    /// one-result rule makes it win once, or lose to a result stored first), writes the final
    /// state, and sends `<prefix>.cancel.<id>` so the worker running it stops. A request waiting
    /// (`scheduled`, `awaiting_approval`) is acknowledged, never run, when its message comes
    /// back; a worker that takes its task later finds the result and runs nothing.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the result, the status or the notice cannot be written.
    pub async fn cancel(&self, id: &str, by: &str) -> Result<Cancellation, Error> {
        if let Some(result) = self.result(id).await? {
            return Ok(Cancellation::Finished(Box::new(result)));
        }
        let Some(record) = self.status_of(id).await? else {
            return Ok(Cancellation::Unknown);
        };
        let error = ErrorInfo::new(
            ErrorKind::Cancelled,
            format!(
                "cancelled by {by} (`fleet cancel`) while it was {}",
                record.state
            ),
        );
        let standing = self
            .conclude(ending(id, &record, Outcome::Cancelled, error))
            .await?;
        if !is_ours(&standing, ErrorKind::Cancelled) {
            return Ok(Cancellation::Finished(Box::new(standing)));
        }
        self.client
            .publish(self.topology.cancel_subject(id), Bytes::new())
            .await
            .map_err(|e| Error::js("send the cancellation notice", e))?;
        self.client
            .flush()
            .await
            .map_err(|e| Error::js("send the cancellation notice", e))?;
        Ok(Cancellation::Cancelled(Box::new(standing)))
    }

    /// Approves a request `awaiting_approval`: moves its record to `queued` with who approved
    /// it (a compare-and-set, so two approvers cannot both win), then publishes its task under
    /// the request id (the tasks stream drops a second copy). Approving again a request whose
    /// approval was recorded but whose task may not be out publishes it again, harmlessly.
    ///
    /// Past its deadline, the request is ended `expired` instead.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the status, the result or the task cannot be read or written.
    pub async fn approve(&self, id: &str, by: &str) -> Result<Approval, Error> {
        for _ in 0..5 {
            if let Some(result) = self.result(id).await? {
                return Ok(Approval::Finished(Box::new(result)));
            }
            let Some((Some(record), revision)) = self.status_entry(id).await? else {
                return Ok(Approval::Unknown);
            };
            let approved = match record.state {
                // A denial claimed it first: its `rejected` result is being stored.
                State::AwaitingApproval if record.denied_by.is_some() => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                State::AwaitingApproval => {
                    if record
                        .deadline
                        .as_deref()
                        .and_then(parse_rfc3339)
                        .is_some_and(|d| d <= time::OffsetDateTime::now_utc())
                    {
                        let error = ErrorInfo::new(
                            ErrorKind::DeadlineExceeded,
                            "the deadline passed while it was awaiting approval; it never ran",
                        );
                        let standing = self
                            .conclude(ending(id, &record, Outcome::Expired, error))
                            .await?;
                        return Ok(Approval::Finished(Box::new(standing)));
                    }
                    let mut next = record.clone().moved_to(State::Queued);
                    next.approved_by = Some(by.to_owned());
                    if !self.update_status(&next, revision).await? {
                        continue;
                    }
                    next
                }
                State::Queued if record.approved_by.is_some() => record,
                other => return Ok(Approval::NotAwaiting(other)),
            };
            let (Some(task), Some(input), Some(classified_by)) = (
                approved.task.clone(),
                approved.input.clone(),
                approved.classified_by,
            ) else {
                return Ok(Approval::NotAwaiting(approved.state));
            };
            // A denial or cancellation may have stored a result meanwhile: then nothing runs.
            if let Some(result) = self.result(id).await? {
                return Ok(Approval::Finished(Box::new(result)));
            }
            let message = TaskMessage {
                request_id: id.to_owned(),
                task,
                input,
                classified_by,
                metadata: approved.metadata.clone(),
                trace_id: approved.trace_id.clone(),
                received_at: Some(approved.created_at.clone()),
                llm: approved.llm.clone(),
                routing: approved.routing.clone(),
                priority: approved.priority.unwrap_or_default(),
                deadline: approved.deadline.clone(),
                approved_by: approved.approved_by.clone(),
            };
            self.publish_task(&message).await?;
            return Ok(Approval::Approved(Box::new(approved)));
        }
        Err(Error::js(
            "approve",
            "the request's status kept changing under the approval; try again",
        ))
    }

    /// Denies a request `awaiting_approval`: it ends `rejected`, kind `denied`, with `reason`,
    /// and never runs.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the result or the status cannot be read or written.
    pub async fn deny(&self, id: &str, reason: Option<&str>, by: &str) -> Result<Denial, Error> {
        let mut claimed = None;
        for _ in 0..5 {
            if let Some(result) = self.result(id).await? {
                return Ok(Denial::Finished(Box::new(result)));
            }
            let Some((Some(record), revision)) = self.status_entry(id).await? else {
                return Ok(Denial::Unknown);
            };
            if record.state != State::AwaitingApproval {
                return Ok(Denial::NotAwaiting(record.state));
            }
            if record.denied_by.is_some() {
                claimed = Some(record);
                break;
            }
            // Claim the record first, by the same compare-and-set an approval needs: of an
            // approval and a denial racing, exactly one wins, and a denied task never runs.
            let mut next = record.clone();
            next.denied_by = Some(by.to_owned());
            next.updated_at = now();
            if self.update_status(&next, revision).await? {
                claimed = Some(next);
                break;
            }
        }
        let Some(record) = claimed else {
            return Err(Error::js(
                "deny",
                "the request's status kept changing under the denial; try again",
            ));
        };
        let message = match reason {
            Some(r) if !r.trim().is_empty() => format!("denied by {by}: {}", r.trim()),
            _ => format!("denied by {by} (no reason given)"),
        };
        let error = ErrorInfo::new(ErrorKind::Denied, message);
        let standing = self
            .conclude(ending(id, &record, Outcome::Rejected, error))
            .await?;
        if !is_ours(&standing, ErrorKind::Denied) {
            return Ok(Denial::Finished(Box::new(standing)));
        }
        Ok(Denial::Denied(Box::new(standing)))
    }

    /// The cancellation notices (`<prefix>.cancel.*`), for workers.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the subscription cannot be made.
    pub async fn cancellations(&self) -> Result<async_nats::Subscriber, Error> {
        self.client
            .subscribe(self.topology.cancel_wildcard())
            .await
            .map_err(|e| Error::js("subscribe to cancellation notices", e))
    }

    /// The operators' requests over plain NATS, shared among the dispatchers (queue group
    /// `<prefix>-control`): `<prefix>.cancel.<id>`, `<prefix>.approve.<id>` and
    /// `<prefix>.deny.<id>` (the body is the reason), for [`Fleet::answer_control`]. The same
    /// cancel subject carries `fleet cancel`'s notices; handling one again finds the result
    /// stored and changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when a subscription cannot be opened.
    pub async fn control_requests(&self) -> Result<Vec<async_nats::Subscriber>, Error> {
        let group = format!("{}-control", self.topology.prefix());
        let mut subs = Vec::new();
        for verb in CONTROL_VERBS {
            let subject = format!("{}.{verb}.*", self.topology.prefix());
            subs.push(
                self.client
                    .queue_subscribe(subject, group.clone())
                    .await
                    .map_err(|e| Error::js("subscribe to control requests", e))?,
            );
        }
        Ok(subs)
    }

    /// Does what a control request (see [`Fleet::control_requests`]) asks, by the same verbs
    /// as the `fleet` client, and answers its reply subject, if it has one, with JSON:
    /// `{"request_id", "changed", "state"?, "result"?, "error"?}`. Who acted is the
    /// `Fleet-By` header, else `nats`.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the verb's reads or writes fail.
    pub async fn answer_control(&self, msg: &async_nats::Message) -> Result<(), Error> {
        let rest = msg
            .subject
            .strip_prefix(self.topology.prefix())
            .and_then(|r| r.strip_prefix('.'))
            .unwrap_or_default();
        let (verb, id) = rest.split_once('.').unwrap_or(("", ""));
        let by = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(BY_HEADER))
            .map(|v| v.as_str().chars().take(64).collect::<String>())
            .unwrap_or_else(|| "nats".to_owned());
        let answer = if !crate::messages::is_valid_id(id) {
            serde_json::json!({"request_id": id, "changed": false, "error": "not a request id"})
        } else {
            match verb {
                "cancel" => match self.cancel(id, &by).await? {
                    Cancellation::Cancelled(r) => answered(id, true, None, Some(*r)),
                    Cancellation::Finished(r) => answered(id, false, None, Some(*r)),
                    Cancellation::Unknown => unknown(id),
                },
                "approve" => match self.approve(id, &by).await? {
                    Approval::Approved(rec) => answered(id, true, Some(rec.state), None),
                    Approval::Finished(r) => answered(id, false, None, Some(*r)),
                    Approval::NotAwaiting(state) => answered(id, false, Some(state), None),
                    Approval::Unknown => unknown(id),
                },
                "deny" => {
                    let reason = String::from_utf8_lossy(&msg.payload).trim().to_owned();
                    let reason = (!reason.is_empty()).then_some(reason);
                    match self.deny(id, reason.as_deref(), &by).await? {
                        Denial::Denied(r) => answered(id, true, None, Some(*r)),
                        Denial::Finished(r) => answered(id, false, None, Some(*r)),
                        Denial::NotAwaiting(state) => answered(id, false, Some(state), None),
                        Denial::Unknown => unknown(id),
                    }
                }
                _ => {
                    serde_json::json!({"request_id": id, "changed": false, "error": "unknown verb"})
                }
            }
        };
        if let Some(reply) = &msg.reply {
            self.client
                .publish(reply.clone(), answer.to_string().into())
                .await
                .map_err(|e| Error::js("answer a control request", e))?;
        }
        Ok(())
    }

    /// Lists requests by their status records: those in `state` (all when `None`) for `task`
    /// (all when `None`), newest first, `limit` per page, page `page` (0-based).
    ///
    /// Reads the last record of every request in one pass over the status bucket (an ordered
    /// consumer, last value per key), so it costs one read of the bucket, not one per request.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the bucket cannot be read.
    pub async fn list(
        &self,
        state: Option<State>,
        task: Option<&str>,
        limit: usize,
        page: usize,
    ) -> Result<Listed, Error> {
        let status = self.status.clone();
        let held = status
            .status()
            .await
            .map_err(|e| Error::js("read the status bucket", e))?
            .values();
        let mut records = Vec::new();
        if held > 0 {
            let mut watch = status
                .watch_with_history(">")
                .await
                .map_err(|e| Error::js("read the status bucket", e))?;
            let read = async {
                while let Some(entry) = watch.next().await {
                    let entry = entry.map_err(|e| Error::js("read the status bucket", e))?;
                    let last = entry.delta == 0;
                    if entry.operation == async_nats::jetstream::kv::Operation::Put
                        && let Ok(record) = serde_json::from_slice::<StatusRecord>(&entry.value)
                    {
                        records.push(record);
                    }
                    if last {
                        break;
                    }
                }
                Ok::<(), Error>(())
            };
            if tokio::time::timeout(LIST_READ_LIMIT, read).await.is_err() {
                tracing::warn!("the status bucket kept changing; listing what was read");
            }
        }
        records.retain(|r| {
            state.is_none_or(|s| r.state == s) && task.is_none_or(|t| r.task.as_deref() == Some(t))
        });
        // RFC 3339 times in UTC sort as text; the id breaks ties.
        records.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.request_id.cmp(&a.request_id))
        });
        let total = records.len();
        let records = records
            .into_iter()
            .skip(page.saturating_mul(limit))
            .take(limit)
            .collect();
        Ok(Listed { records, total })
    }
}
