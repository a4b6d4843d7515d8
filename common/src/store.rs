//! What the fleet stores: exactly one result per request, status records, dead letters.
//!
//! A result is published with `Nats-Expected-Last-Subject-Sequence: 0`, so the server refuses a
//! second result for the same id whatever crashes or redeliveries happen: the first writer wins
//! and every later one learns the result is already there.

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
        AttemptError, ERRORS_HEADER, MSG_ID_HEADER, REQUEST_ID_HEADER, StatusRecord, TASK_HEADER,
        TaskResult,
    },
    topology::Fleet,
};

/// Whether [`Fleet::store_result`] wrote the result or found one there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// This call stored it.
    New,
    /// A result for this id was already stored; nothing was written.
    AlreadyStored,
}

/// Whether [`Fleet::create_status`] made a new record.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
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
    /// # Errors
    ///
    /// [`Error::JetStream`] when the result could not be stored (NATS down, stream missing);
    /// the caller must not acknowledge the work then.
    pub async fn store_result(
        &self,
        result: &TaskResult,
        mut headers: HeaderMap,
    ) -> Result<Stored, Error> {
        let subject = self.topology.result_subject(&result.request_id);
        let span = tracing::info_span!(
            "fleet.result",
            otel.name = format!("{subject} publish"),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation.type = "publish",
            messaging.destination.name = %subject,
            fleet.outcome = ?result.status,
        );
        async {
            crate::telemetry::inject(&mut headers);
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
                    Ok(Stored::AlreadyStored)
                }
                Err(e) => Err(Error::js("store result", e)),
            }
        }
        .instrument(span)
        .await
    }

    /// The stored result of a request, if there is one.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the results stream cannot be read, [`Error::Decode`] when the
    /// stored result is not valid JSON.
    pub async fn result(&self, request_id: &str) -> Result<Option<TaskResult>, Error> {
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
                .map(Some)
                .map_err(|source| Error::Decode {
                    what: "result",
                    source,
                }),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::js("read result", e)),
        }
    }

    /// Removes the stored result of a request, so a replay can store a new one.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the purge fails.
    pub async fn purge_result(&self, request_id: &str) -> Result<(), Error> {
        let stream = self
            .js
            .get_stream_no_info(self.topology.results_stream())
            .await
            .map_err(|e| Error::js("open results stream", e))?;
        stream
            .purge()
            .filter(self.topology.result_subject(request_id))
            .await
            .map_err(|e| Error::js("purge result", e))?;
        Ok(())
    }

    /// Writes a request's status record.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the bucket refuses the write.
    pub async fn put_status(&self, record: &StatusRecord) -> Result<(), Error> {
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
    pub async fn create_status(&self, record: &StatusRecord) -> Result<Created, Error> {
        let body = encode_status(record)?;
        match self.status.create(&record.request_id, body).await {
            Ok(revision) => Ok(Created::New(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let entry = self
                    .status
                    .entry(&record.request_id)
                    .await
                    .map_err(|e| Error::js("read status", e))?;
                Ok(match entry {
                    Some(entry) => Created::Exists {
                        record: serde_json::from_slice(&entry.value).ok().map(Box::new),
                        revision: entry.revision,
                    },
                    None => Created::Exists {
                        record: None,
                        revision: 0,
                    },
                })
            }
            Err(e) => Err(Error::js("create status", e)),
        }
    }

    /// Writes a status record only if nobody wrote it since `revision`; returns whether it did.
    ///
    /// The dispatcher uses it to move `received` to `queued` without overwriting a worker's
    /// `running` that got there first.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the bucket cannot be written.
    pub async fn update_status(&self, record: &StatusRecord, revision: u64) -> Result<bool, Error> {
        let body = encode_status(record)?;
        match self.status.update(&record.request_id, body, revision).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(Error::js("update status", e)),
        }
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
    pub async fn dead_letter(
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
                // The original message id would make the DLQ stream drop the dead letter of a
                // replayed request within its duplicate window; `dedupe_id` replaces it.
                if name.as_ref() as &str == MSG_ID_HEADER {
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
        let span = tracing::info_span!(
            "fleet.dead_letter",
            otel.name = format!("{subject} publish"),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation.type = "publish",
            messaging.destination.name = %subject,
            fleet.attempts = i64::try_from(attempts).unwrap_or(i64::MAX),
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
        .instrument(span)
        .await
    }

    /// Lists the dead letters, optionally of one task.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the DLQ stream cannot be read.
    pub async fn dead_letters(&self, task: Option<&str>) -> Result<Vec<DeadLetter>, Error> {
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
        let mut next = 1;
        loop {
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
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(Error::js("read DLQ", e)),
            }
        }
    }

    /// Deletes one dead letter (after a replay).
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the delete fails.
    pub async fn delete_dead_letter(&self, stream_seq: u64) -> Result<(), Error> {
        let stream = self
            .js
            .get_stream_no_info(self.topology.dlq_stream())
            .await
            .map_err(|e| Error::js("open DLQ stream", e))?;
        stream
            .delete_message(stream_seq)
            .await
            .map_err(|e| Error::js("delete dead letter", e))?;
        Ok(())
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
