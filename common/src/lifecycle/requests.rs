//! The dispatcher's verbs: receive a request (the duplicate guard), queue its task, reject it.
//!
//! One status write is awaited before a task is published: the guard, a create that only the
//! first message with an id can win. When the route is known before the guard (the caller
//! named the task, or a rule decided without the LLM), the guard already says `queued` with the
//! task, and nothing more is written by the dispatcher. Only a request that waits for the LLM
//! is first `received`, and becomes `queued` once its task is out.

use async_nats::{HeaderMap, jetstream::message::PublishMessage};
use bytes::Bytes;
use tracing::Instrument;

use super::{
    records::Created,
    rules::{self, Admission, Resume},
    timing::{Times, rfc3339},
};
use crate::{
    Error,
    messages::{
        AttemptError, ClassifiedBy, ErrorInfo, State, StatusRecord, TaskMessage, TaskResult, now,
    },
    telemetry,
    topology::Fleet,
};

/// The most of an unreadable message's bytes the dead-letter queue keeps.
pub const UNREADABLE_KEPT_BYTES: usize = 4096;
/// Dead-letter header: the size of the unreadable bytes, when they were truncated.
pub const ORIGINAL_SIZE_HEADER: &str = "Fleet-Original-Size";
/// Dead-letter header: the SHA-256 of the unreadable bytes (hex), when they were truncated.
pub const ORIGINAL_SHA256_HEADER: &str = "Fleet-Original-Sha256";

/// The first [`UNREADABLE_KEPT_BYTES`] of `payload`, with its size and SHA-256 when cut.
pub fn truncated(payload: Bytes) -> (Bytes, Option<(usize, String)>) {
    if payload.len() <= UNREADABLE_KEPT_BYTES {
        return (payload, None);
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&payload);
    let hex = digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let size = payload.len();
    (payload.slice(..UNREADABLE_KEPT_BYTES), Some((size, hex)))
}

/// A request message as the duplicate guard sees it.
#[derive(Debug, Clone)]
pub struct Arrival<'a> {
    /// The request's id.
    pub id: &'a str,
    /// The message's sequence in the requests stream: a redelivery carries the same one.
    pub request_seq: u64,
    /// The request's trace.
    pub trace_id: Option<String>,
    /// The task and tier, when routing decided before the guard (no LLM involved).
    pub route: Option<(&'a str, ClassifiedBy)>,
}

/// What the duplicate guard found.
#[derive(Debug)]
pub enum Receipt {
    /// Route (unless already routed) and publish the task; the ticket carries the record. A
    /// request whose record says `scheduled` proceeds once its time has come.
    Proceed(Box<Ticket>),
    /// It waits for a person's approval (or its deadline): hand it back again.
    Waiting(Box<Ticket>),
    /// Nothing more to do: the task is out, or the request has ended.
    Done,
    /// The id belongs to an earlier request, whose result stands.
    Duplicate,
}

/// The guard's record of a request that proceeds, for [`Fleet::queue`].
#[derive(Debug, Clone)]
pub struct Ticket {
    /// The record as the guard left it.
    record: StatusRecord,
    /// Its revision (0 when unknown).
    revision: u64,
    /// Whether the guard wrote this record just now (so it already says what it should).
    fresh: bool,
}

// === impl Ticket ===

impl Ticket {
    /// The state the record was in when the request was taken.
    pub fn state(&self) -> State {
        self.record.state
    }

    /// The record as the guard left it (or found it).
    pub fn record(&self) -> &StatusRecord {
        &self.record
    }

    /// When the request was received (the record's creation time).
    pub fn received_at(&self) -> &str {
        &self.record.created_at
    }
}

// === impl Fleet ===

impl Fleet {
    /// The duplicate guard: creates the request's status record, unless its id is known.
    ///
    /// A new id proceeds. A known id is a redelivery of the same message (same stream
    /// sequence: carry on where it stopped) or a duplicate (another message: its first
    /// request's result stands, nothing runs twice). A record that reads back missing never
    /// makes a redelivery count as a duplicate.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the status bucket cannot be written or read; the request
    /// message must then be redelivered.
    pub async fn receive(&self, arrival: Arrival<'_>) -> Result<Receipt, Error> {
        self.receive_timed(arrival, Times::default(), time::OffsetDateTime::now_utc())
            .await
    }

    /// [`Fleet::receive`] for a request with a `delay` / `not_before` or a `deadline`: the
    /// guard's one write carries its times, and says `scheduled` (without a route: a request is
    /// routed at its time, against the catalog of that time) when it is not due at `now`.
    ///
    /// # Errors
    ///
    /// As [`Fleet::receive`].
    pub async fn receive_timed(
        &self,
        arrival: Arrival<'_>,
        times: Times,
        now: time::OffsetDateTime,
    ) -> Result<Receipt, Error> {
        let waits = times.wait(now).is_some();
        let state = if waits {
            State::Scheduled
        } else if arrival.route.is_some() {
            State::Queued
        } else {
            State::Received
        };
        let mut record = StatusRecord::new(arrival.id, state);
        record.request_seq = Some(arrival.request_seq);
        record.trace_id = arrival.trace_id;
        if let Some((task, by)) = arrival.route.filter(|_| !waits) {
            record.task = Some(task.to_owned());
            record.classified_by = Some(by);
        }
        record.not_before = times.not_before.filter(|_| waits).map(rfc3339);
        record.deadline = times.deadline.map(rfc3339);
        if waits {
            // This delivery is handed back: not a failed one.
            record.parked = 1;
        }
        match self.create_status(&record).await? {
            Created::New(revision) => Ok(Receipt::Proceed(Box::new(Ticket {
                record,
                revision,
                fresh: true,
            }))),
            Created::Exists {
                record: existing,
                revision,
            } => {
                let existing = existing.map(|b| *b);
                match rules::admit(existing.as_ref(), arrival.request_seq) {
                    Admission::Duplicate => Ok(Receipt::Duplicate),
                    Admission::New | Admission::Redelivery => {
                        if self.result(arrival.id).await?.is_some() {
                            return Ok(Receipt::Done);
                        }
                        let resume = rules::resume(existing.as_ref());
                        let ticket = Box::new(Ticket {
                            record: existing.unwrap_or(record),
                            revision,
                            fresh: false,
                        });
                        match resume {
                            Resume::Done => Ok(Receipt::Done),
                            Resume::Route => Ok(Receipt::Proceed(ticket)),
                            Resume::Await => Ok(Receipt::Waiting(ticket)),
                        }
                    }
                }
            }
        }
    }

    /// The largest message the server takes (its `max_payload`), or 0 when it has not said.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Publishes a request's task (its `Nats-Msg-Id` is the request id, so the tasks stream
    /// drops a second copy) and, when the guard said `received`, moves the record to `queued`
    /// without stepping back over a worker's later state.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the tasks stream does not acknowledge the task; the request
    /// message must then be redelivered.
    pub async fn queue(&self, ticket: Box<Ticket>, task: &TaskMessage) -> Result<(), Error> {
        self.publish_task(task).await?;
        if !matches!(ticket.record.state, State::Received | State::Scheduled) {
            return Ok(());
        }
        let mut queued = ticket.record.clone();
        queued.state = State::Queued;
        queued.task = Some(task.task.clone());
        queued.classified_by = Some(task.classified_by);
        queued.llm = task.llm.clone();
        queued.updated_at = now();
        let revision = ticket.revision;
        let known = (revision > 0).then_some((Some(ticket.record), revision));
        self.advance(&task.request_id, known, |current| match current {
            Some(c) if !rules::may_move(c.state, State::Queued) => None,
            _ => Some(queued.clone()),
        })
        .await?;
        Ok(())
    }

    /// Records that a request waits (for its time: `scheduled`, or for a person:
    /// `awaiting_approval`, with what `fill` adds) and that this delivery of its message is
    /// handed back on purpose. Returns `false` when the request ended meanwhile (cancelled,
    /// say): acknowledge it then, nothing waits any more.
    ///
    /// The guard's own record needs no second write.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the status cannot be read or written.
    pub async fn park<F>(&self, ticket: &Ticket, state: State, fill: F) -> Result<bool, Error>
    where
        F: Fn(&mut StatusRecord),
    {
        if ticket.fresh && ticket.record.state == state {
            return Ok(true);
        }
        let known = (ticket.revision > 0).then(|| (Some(ticket.record.clone()), ticket.revision));
        let mut ended = false;
        let written = self
            .advance(&ticket.record.request_id, known, |current| {
                let base = current.cloned().unwrap_or_else(|| ticket.record.clone());
                if base.state.is_terminal()
                    || !(base.state == state || rules::may_move(base.state, state))
                {
                    ended = base.state.is_terminal();
                    return None;
                }
                let mut next = base.moved_to(state);
                next.parked = next.parked.saturating_add(1);
                fill(&mut next);
                Some(next)
            })
            .await?;
        Ok(written.is_some() || !ended)
    }

    /// Parks a routed request for a task that `requires_approval`: its record says
    /// `awaiting_approval` with the task, its input and who may approve it, which is all that
    /// `fleet approve` needs to publish the task.
    ///
    /// # Errors
    ///
    /// As [`Fleet::park`].
    pub async fn await_approval(
        &self,
        ticket: &Ticket,
        task: &TaskMessage,
        approvers: &str,
    ) -> Result<bool, Error> {
        self.park(ticket, State::AwaitingApproval, |r| {
            r.task = Some(task.task.clone());
            r.input = Some(task.input.clone());
            r.classified_by = Some(task.classified_by);
            r.metadata = task.metadata.clone();
            r.llm = task.llm.clone();
            r.trace_id = r.trace_id.clone().or_else(|| task.trace_id.clone());
            r.deadline = task.deadline.clone();
            r.approvers = Some(approvers.to_owned());
            r.priority = Some(task.priority).filter(|p| !p.is_normal());
        })
        .await
    }

    /// Publishes `task` on the subject of its priority (`Topology::task_subject_at`). A task
    /// with a fleet-wide `max_concurrency` must come here as `normal` (the dispatcher sees to
    /// it), so that one consumer holds its limit.
    pub(crate) async fn publish_task(&self, task: &TaskMessage) -> Result<(), Error> {
        let subject = self.topology.task_subject_at(&task.task, task.priority);
        let span = telemetry::messaging_span("publish", &subject);
        span.record("messaging.message.id", task.request_id.as_str());
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
            let ack = self
                .js
                .send_publish(subject.clone(), publish)
                .await
                .map_err(|e| Error::js("publish task", e))?;
            ack.await.map_err(|e| Error::js("store task", e))?;
            Ok(())
        }
        .instrument(span.clone())
        .await
        .inspect_err(|e| telemetry::record_failure(&span, e))
    }

    /// Ends a request that will never run with its `rejected` result and final state; with
    /// `raw`, first keeps the unreadable bytes and the caller's headers in the dead-letter
    /// queue on `<prefix>.dlq.unreadable`. Returns the result that stands (an earlier one, when
    /// the id had one).
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the DLQ or the result cannot be stored.
    pub async fn reject(
        &self,
        result: TaskResult,
        raw: Option<(Option<&HeaderMap>, Bytes)>,
    ) -> Result<TaskResult, Error> {
        if let Some(raw) = raw
            && let Some(error) = &result.error
        {
            self.keep_unreadable(
                &result.request_id,
                raw,
                error,
                &format!("{}.unreadable", result.request_id),
            )
            .await?;
        }
        self.conclude(result).await
    }

    /// Keeps bytes that are not a readable request or task in the dead-letter queue on
    /// `<prefix>.dlq.unreadable`, with why; `dedupe_id` names it for the duplicate window.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the DLQ does not acknowledge it.
    pub async fn keep_unreadable(
        &self,
        request_id: &str,
        raw: (Option<&HeaderMap>, Bytes),
        error: &ErrorInfo,
        dedupe_id: &str,
    ) -> Result<(), Error> {
        let errors = [AttemptError {
            attempt: 0,
            kind: error.kind,
            message: error.message.clone(),
        }];
        let (headers, payload) = raw;
        let (payload, original) = truncated(payload);
        let mut kept = headers.cloned().unwrap_or_default();
        if let Some((size, sha256)) = original {
            kept.insert(ORIGINAL_SIZE_HEADER, size.to_string().as_str());
            kept.insert(ORIGINAL_SHA256_HEADER, sha256.as_str());
        }
        self.dead_letter(
            "unreadable",
            request_id,
            Some(&kept),
            payload,
            &errors,
            dedupe_id,
        )
        .await
    }

    /// Stores a request's one result and the final state that goes with it, both awaited;
    /// returns the result that stands (an earlier one, when the id had one).
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the result or the status cannot be written.
    pub async fn conclude(&self, result: TaskResult) -> Result<TaskResult, Error> {
        let stood = self.store_result(&result, HeaderMap::new()).await?;
        let standing = stood.standing(result);
        self.settle_status(&standing).await?;
        Ok(standing)
    }

    /// Makes the status record agree with a stored result, unless it already does.
    pub(crate) async fn settle_status(&self, result: &TaskResult) -> Result<(), Error> {
        let current = self.status_entry(&result.request_id).await?;
        let record = current.and_then(|(r, _)| r);
        if record
            .as_ref()
            .is_some_and(|r| r.state == State::from(result.status))
        {
            return Ok(());
        }
        self.put_status(&rules::settled(record, result)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_unreadable_bytes_are_cut_with_their_size_and_hash() {
        let small = Bytes::from_static(b"abc");
        assert_eq!(truncated(small.clone()), (small, None));
        let big = Bytes::from(vec![0xffu8; 10_000]);
        let (kept, original) = truncated(big);
        assert_eq!(kept.len(), UNREADABLE_KEPT_BYTES);
        let (size, sha) = original.expect("cut");
        assert_eq!(size, 10_000);
        assert_eq!(sha.len(), 64);
        let (_, again) = truncated(Bytes::from(vec![0xffu8; 10_000]));
        assert_eq!(again.map(|(_, s)| s), Some(sha));
    }
}
