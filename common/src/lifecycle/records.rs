//! What the fleet stores: exactly one result per request, status records, dead letters.
//!
//! A result is published with `Nats-Expected-Last-Subject-Sequence: 0`, so the server refuses a
//! second result for the same id whatever crashes or redeliveries happen: the first writer wins
//! and every later one reads the stored result and takes it as its own outcome.
//!
//! Status records move only forward ([`super::rules::may_move`]): every write but the final one
//! is a compare-and-set on the record's revision, so a slow writer can never step back over a
//! later state. The final state is a plain put: it is derived from the stored result, which
//! never changes, so any number of writers agree on it.

use async_nats::{
    HeaderMap,
    jetstream::{
        context::PublishErrorKind, kv, message::PublishMessage, stream::DirectGetErrorKind,
    },
};
use bytes::Bytes;
use tracing::Instrument;

use crate::{
    Error,
    messages::{
        AttemptError, ERRORS_HEADER, MSG_ID_HEADER, REQUEST_ID_HEADER, STATUS_HEADER,
        STATUS_WRITTEN, StatusRecord, TASK_HEADER, TaskResult,
    },
    topology::Fleet,
};

/// How often a read that must find something (a result the server says is stored) is tried.
const READ_TRIES: u32 = 5;

/// Whether [`Fleet::store_result`] wrote the result or found one there.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stored {
    /// This call stored it.
    New,
    /// A result for this id was already stored (this one is it); nothing was written.
    Earlier(Box<TaskResult>),
}

// === impl Stored ===

impl Stored {
    /// The result that stands: `ours` when this call stored it, else the earlier one.
    pub(crate) fn standing(self, ours: TaskResult) -> TaskResult {
        match self {
            Stored::New => ours,
            Stored::Earlier(earlier) => *earlier,
        }
    }
}

/// Whether [`Fleet::create_status`] made a new record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Created {
    /// The id was new; the record's revision, for [`Fleet::update_status`].
    New(u64),
    /// A record for this id exists.
    Exists {
        /// The record (`None` when it cannot be read).
        record: Option<Box<StatusRecord>>,
        /// Its revision, for [`Fleet::update_status`].
        revision: u64,
    },
}

/// One message of the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its sequence in the DLQ stream.
    pub stream_seq: u64,
    /// Its subject, `<prefix>.dlq.<task>`.
    pub subject: String,
    /// The task, from the subject (`unreadable` for unreadable requests).
    pub task: String,
    /// The request id, from `Fleet-Request-Id`.
    pub request_id: Option<String>,
    /// The errors, from `Fleet-Errors`.
    pub errors: Vec<AttemptError>,
    /// The original headers plus the fleet's.
    pub headers: HeaderMap,
    /// The original body.
    pub payload: Bytes,
}

// === impl Fleet ===

impl Fleet {
    /// Stores the one result of a request and awaits the server's acknowledgement.
    ///
    /// The one place results are published. It marks each with `Fleet-Status: written`
    /// ([`STATUS_HEADER`]): every caller writes the final status that goes with it, so the
    /// dispatcher's settler (`settler`) leaves it alone.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the result could not be stored (NATS down, stream missing);
    /// the caller must not acknowledge the work then.
    pub(crate) async fn store_result(
        &self,
        result: &TaskResult,
        mut headers: HeaderMap,
    ) -> Result<Stored, Error> {
        let subject = self.topology.result_subject(&result.request_id);
        let template = self.topology.result_subject_template();
        let span = crate::telemetry::messaging_span(
            "publish",
            crate::telemetry::Destination::templated(&subject, &template),
        );
        span.record("fleet.outcome", result.status.as_str());
        async {
            crate::telemetry::inject(&mut headers);
            // Every caller writes the final status itself: the dispatcher's settler skips it.
            headers.insert(STATUS_HEADER, STATUS_WRITTEN);
            let body = serde_json::to_vec(result).map_err(|source| Error::Decode {
                what: "result",
                source,
            })?;
            let publish = PublishMessage::build()
                .payload(body.into())
                .headers(headers)
                .expected_last_subject_sequence(0);
            let ack = self
                .js
                .send_publish(subject.clone(), publish)
                .await
                .map_err(|e| Error::js("publish result", e))?;
            match ack.await {
                Ok(_) => Ok(Stored::New),
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    tracing::info!("a result for this request is stored already; it stands");
                    // The server just said it is there: read it, allowing for a moment's lag.
                    for _ in 0..READ_TRIES {
                        if let Some((earlier, _)) = self.stored_result(&result.request_id).await? {
                            return Ok(Stored::Earlier(Box::new(earlier)));
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    Err(Error::js(
                        "read the stored result",
                        "the server refused a second result but the first cannot be read",
                    ))
                }
                Err(e) => Err(Error::js("store result", e)),
            }
        }
        .instrument(span.clone())
        .await
        .inspect_err(|e| crate::telemetry::record_failure(&span, e))
    }

    /// The stored result of a request, if there is one.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the results stream cannot be read, [`Error::Decode`] when the
    /// stored result is not valid JSON.
    pub async fn result(&self, request_id: &str) -> Result<Option<TaskResult>, Error> {
        Ok(self.stored_result(request_id).await?.map(|(r, _)| r))
    }

    /// The stored result of a request and its sequence in the results stream.
    pub(crate) async fn stored_result(
        &self,
        request_id: &str,
    ) -> Result<Option<(TaskResult, u64)>, Error> {
        let stream = self
            .js
            .get_stream_no_info(self.topology.results_stream())
            .await
            .map_err(|e| Error::js("open results stream", e))?;
        match stream
            .direct_get_last_for_subject(self.topology.result_subject(request_id))
            .await
        {
            Ok(msg) => serde_json::from_slice(&msg.payload)
                .map(|r| Some((r, msg.sequence)))
                .map_err(|source| Error::Decode {
                    what: "result",
                    source,
                }),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::js("read result", e)),
        }
    }

    /// Removes the one stored result at `seq` (a `dead` one, for a replay); returns whether it
    /// was still there. Conditional by construction: a result stored since has another sequence.
    pub(crate) async fn remove_result_at(&self, seq: u64) -> Result<bool, Error> {
        let stream = self
            .js
            .get_stream_no_info(self.topology.results_stream())
            .await
            .map_err(|e| Error::js("open results stream", e))?;
        match stream.delete_message(seq).await {
            Ok(_) => Ok(true),
            Err(e) if is_gone(&e.to_string()) => Ok(false),
            Err(e) => Err(Error::js("remove the dead result", e)),
        }
    }

    /// Writes a request's status record.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the bucket refuses the write.
    pub(crate) async fn put_status(&self, record: &StatusRecord) -> Result<(), Error> {
        let body = encode_status(record)?;
        self.status
            .put(&record.request_id, body)
            .await
            .map_err(|e| Error::js("write status", e))?;
        Ok(())
    }

    /// Writes a request's first status record, unless the id is known already.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the bucket cannot be written or read.
    pub(crate) async fn create_status(&self, record: &StatusRecord) -> Result<Created, Error> {
        let body = encode_status(record)?;
        match self.status.create(&record.request_id, body).await {
            Ok(revision) => Ok(Created::New(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                // The record was there a moment ago; a read may lag behind the write that
                // made it, so try a few times before calling it unreadable.
                for _ in 0..READ_TRIES {
                    if let Some((record, revision)) = self.status_entry(&record.request_id).await? {
                        return Ok(Created::Exists {
                            record: record.map(Box::new),
                            revision,
                        });
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Ok(Created::Exists {
                    record: None,
                    revision: 0,
                })
            }
            Err(e) => Err(Error::js("create status", e)),
        }
    }

    /// Writes a status record only if nobody wrote it since `revision`; returns whether it did.
    pub(crate) async fn update_status(
        &self,
        record: &StatusRecord,
        revision: u64,
    ) -> Result<bool, Error> {
        let body = encode_status(record)?;
        match self.status.update(&record.request_id, body, revision).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(Error::js("update status", e)),
        }
    }

    /// The status record of a request with its revision (`None` inside when it is unreadable).
    pub(crate) async fn status_entry(
        &self,
        request_id: &str,
    ) -> Result<Option<(Option<StatusRecord>, u64)>, Error> {
        let entry = self
            .status
            .entry(request_id)
            .await
            .map_err(|e| Error::js("read status", e))?;
        Ok(entry.and_then(|entry| match entry.operation {
            kv::Operation::Put => Some((serde_json::from_slice(&entry.value).ok(), entry.revision)),
            kv::Operation::Delete | kv::Operation::Purge => None,
        }))
    }

    /// Moves a request's record forward with a compare-and-set: `next` sees the current record
    /// (or `None`) and returns the one to write, or `None` to leave it. Retried when another
    /// writer got in between; returns the record written, if any.
    ///
    /// `known` is the record and revision the caller already holds, saving the first read.
    pub(crate) async fn advance<F>(
        &self,
        request_id: &str,
        mut known: Option<(Option<StatusRecord>, u64)>,
        mut next: F,
    ) -> Result<Option<StatusRecord>, Error>
    where
        F: FnMut(Option<&StatusRecord>) -> Option<StatusRecord>,
    {
        for _ in 0..READ_TRIES {
            let current = match known.take() {
                Some(k) => Some(k),
                None => self.status_entry(request_id).await?,
            };
            let (record, revision) = match &current {
                Some((record, revision)) => (record.as_ref(), *revision),
                None => (None, 0),
            };
            let Some(new) = next(record) else {
                return Ok(None);
            };
            let written = if current.is_some() {
                self.update_status(&new, revision).await?
            } else {
                matches!(self.create_status(&new).await?, Created::New(_))
            };
            if written {
                return Ok(Some(new));
            }
        }
        tracing::debug!(
            request_id,
            "status kept changing under this write; left as it is"
        );
        Ok(None)
    }

    /// The status record of a request, if there is one.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the bucket cannot be read, [`Error::Decode`] when the record is
    /// not valid JSON.
    pub async fn status_of(&self, request_id: &str) -> Result<Option<StatusRecord>, Error> {
        match self.status.get(request_id).await {
            Ok(Some(bytes)) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| Error::Decode {
                        what: "status record",
                        source,
                    })
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Error::js("read status", e)),
        }
    }

    /// Keeps a message in the dead-letter queue on `<prefix>.dlq.<task>`, with its original body
    /// and headers plus `Fleet-Request-Id`, `Fleet-Task` and `Fleet-Errors`.
    ///
    /// `dedupe_id` names this dead letter for JetStream's duplicate window, so a worker that
    /// crashes between this call and storing the result does not leave two dead letters when
    /// the redelivery buries the task again.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the DLQ stream does not acknowledge it.
    pub(crate) async fn dead_letter(
        &self,
        task: &str,
        request_id: &str,
        original_headers: Option<&HeaderMap>,
        payload: Bytes,
        errors: &[AttemptError],
        dedupe_id: &str,
    ) -> Result<(), Error> {
        let attempts = errors.len();
        let mut headers = HeaderMap::new();
        if let Some(original) = original_headers {
            for (name, values) in original.iter() {
                // The caller's own headers only: the broker's control headers (`Nats-*`:
                // message id, expected stream or sequence, rollup, TTL…) would make the DLQ
                // stream refuse or drop the dead letter, and it would be retried forever.
                let name_str: &str = name.as_ref();
                if !keeps_header(name_str) {
                    continue;
                }
                for value in values {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        headers.insert(MSG_ID_HEADER, dedupe_id);
        headers.insert(REQUEST_ID_HEADER, request_id);
        if task != "unreadable" {
            headers.insert(TASK_HEADER, task);
        }
        let errors = serde_json::to_string(errors).unwrap_or_else(|_| "[]".into());
        headers.insert(ERRORS_HEADER, errors.as_str());
        let subject = self.topology.dlq_subject(task);
        let span = crate::telemetry::messaging_span("publish", &subject);
        span.record(
            "fleet.attempts",
            i64::try_from(attempts).unwrap_or(i64::MAX),
        );
        async {
            let ack = self
                .js
                .publish_with_headers(subject.clone(), headers, payload)
                .await
                .map_err(|e| Error::js("publish dead letter", e))?;
            ack.await.map_err(|e| Error::js("store dead letter", e))?;
            Ok(())
        }
        .instrument(span.clone())
        .await
        .inspect_err(|e| crate::telemetry::record_failure(&span, e))
    }

    /// Reads up to `limit` dead letters (optionally of one task) from stream sequence `from`
    /// on, oldest first, with the sequence to continue from when there may be more: a page, so
    /// a large DLQ is never held in memory at once.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the DLQ stream cannot be read.
    pub async fn dead_letters(
        &self,
        task: Option<&str>,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, Option<u64>), Error> {
        let stream = self
            .js
            .get_stream_no_info(self.topology.dlq_stream())
            .await
            .map_err(|e| Error::js("open DLQ stream", e))?;
        let filter = match task {
            Some(t) => self.topology.dlq_subject(t),
            None => format!("{}>", self.topology.dlq_prefix()),
        };
        let prefix = self.topology.dlq_prefix();
        let mut out = Vec::new();
        let mut next = from.max(1);
        loop {
            if out.len() >= limit.max(1) {
                return Ok((out, Some(next)));
            }
            match stream
                .direct_get_next_for_subject(filter.as_str(), Some(next))
                .await
            {
                Ok(msg) => {
                    next = msg.sequence + 1;
                    let subject = msg.subject.to_string();
                    let header = |name: &str| msg.headers.get(name).map(|v| v.as_str().to_owned());
                    out.push(DeadLetter {
                        stream_seq: msg.sequence,
                        task: subject.strip_prefix(&prefix).unwrap_or(&subject).to_owned(),
                        request_id: header(REQUEST_ID_HEADER),
                        errors: header(ERRORS_HEADER)
                            .and_then(|e| serde_json::from_str(&e).ok())
                            .unwrap_or_default(),
                        subject,
                        headers: msg.headers.clone(),
                        payload: msg.payload.clone(),
                    });
                }
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok((out, None)),
                Err(e) => return Err(Error::js("read DLQ", e)),
            }
        }
    }

    /// Deletes one dead letter (after a replay).
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the delete fails.
    pub(crate) async fn delete_dead_letter(&self, stream_seq: u64) -> Result<(), Error> {
        let stream = self
            .js
            .get_stream_no_info(self.topology.dlq_stream())
            .await
            .map_err(|e| Error::js("open DLQ stream", e))?;
        match stream.delete_message(stream_seq).await {
            Ok(_) => Ok(()),
            // Deleted by a concurrent replay: what was asked for is done.
            Err(e) if is_gone(&e.to_string()) => Ok(()),
            Err(e) => Err(Error::js("delete dead letter", e)),
        }
    }
}

fn encode_status(record: &StatusRecord) -> Result<Bytes, Error> {
    serde_json::to_vec(record)
        .map(Bytes::from)
        .map_err(|source| Error::Decode {
            what: "status record",
            source,
        })
}

/// Whether a delete failed because the message is no longer there (nats-server says "no
/// message found" or "sequence … not found", depending on the version and the store).
fn is_gone(error: &str) -> bool {
    error.contains("no message found") || error.contains("not found")
}

/// Whether a caller's header goes into a dead letter: everything but the broker's control
/// headers (`Nats-*`) and the fleet's own (set afresh).
pub(crate) fn keeps_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !lower.starts_with("nats-") && !lower.starts_with("fleet-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_keep_the_callers_headers_only() {
        assert!(keeps_header("traceparent"));
        assert!(keeps_header("X-Tenant"));
        assert!(!keeps_header("Nats-Msg-Id"));
        assert!(!keeps_header("Nats-Expected-Stream"));
        assert!(!keeps_header("nats-expected-last-subject-sequence"));
        assert!(!keeps_header("Nats-Rollup"));
        assert!(!keeps_header("Fleet-Errors"));
    }
}
