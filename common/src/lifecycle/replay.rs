//! Replaying a dead request: one new attempt series for the same id, once.
//!
//! Only a request whose stored result is `dead` is replayed ([`rules::may_replay`]). The dead
//! result is removed by its stream sequence, a conditional write: a second replay racing the
//! first finds it gone and does nothing, and a result stored since (another sequence) is never
//! touched. Then the record starts over as `queued`, the newest dead letter's task is published
//! again under a message id derived from that dead letter (a retried replay is dropped by the
//! duplicate window), and the id's dead letters are deleted. A replay interrupted half-way is
//! finished by running it again.

use async_nats::{HeaderMap, jetstream::message::PublishMessage};

use super::{records::DeadLetter, rules};
use crate::{
    Error,
    messages::{
        ERRORS_HEADER, REQUEST_ID_HEADER, State, StatusRecord, TASK_HEADER, TaskMessage, now,
    },
    topology::Fleet,
};

/// How many dead letters one read of the DLQ returns.
const PAGE: usize = 256;

/// What [`Fleet::replay`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// A new attempt series of this task is queued.
    Queued {
        /// The task.
        task: String,
    },
    /// The request is not dead (its stored result, or its state when it has none, is this).
    NotDead(Option<State>),
    /// There is no dead letter for this id.
    NoDeadLetter,
    /// Its dead letter holds bytes that were never a readable request.
    Unreadable,
    /// Another replay of this id got there first.
    AlreadyReplayed,
}

// === impl Fleet ===

impl Fleet {
    /// Replays the dead request `id` from its newest dead letter.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the streams or the status cannot be read or written;
    /// [`Error::Decode`] when the dead letter's body is not a task message.
    pub async fn replay(&self, id: &str) -> Result<Replayed, Error> {
        let letters = self.dead_letters_of(id).await?;
        let Some(letter) = letters.last() else {
            return Ok(Replayed::NoDeadLetter);
        };
        if letter.task == "unreadable" {
            return Ok(Replayed::Unreadable);
        }
        match self.stored_result(id).await? {
            Some((result, seq)) if rules::may_replay(Some(State::from(result.status))) => {
                if !self.remove_result_at(seq).await? {
                    return Ok(Replayed::AlreadyReplayed);
                }
            }
            Some((result, _)) => return Ok(Replayed::NotDead(Some(State::from(result.status)))),
            None => {
                // No result: only a replay that stopped half-way (the dead result removed, the
                // letter still here) carries on; anything else is not dead.
                let state = self.status_of(id).await?.map(|r| r.state);
                if !matches!(state, Some(State::Dead | State::Queued)) {
                    return Ok(Replayed::NotDead(state));
                }
            }
        }

        let task: TaskMessage =
            serde_json::from_slice(&letter.payload).map_err(|source| Error::Decode {
                what: "dead task message",
                source,
            })?;
        let mut fresh = StatusRecord::for_task(&task, State::Queued);
        self.advance(id, None, |current| {
            let mut record = current.cloned().unwrap_or_else(|| fresh.clone());
            record.state = State::Queued;
            record.attempt = 0;
            record.worker = None;
            record.errors.clear();
            record.error = None;
            record.updated_at = now();
            fresh = record.clone();
            Some(record)
        })
        .await?;

        let mut headers = HeaderMap::new();
        for (name, values) in letter.headers.iter() {
            let name_str: &str = name.as_ref();
            if [REQUEST_ID_HEADER, TASK_HEADER, ERRORS_HEADER].contains(&name_str) {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        let publish = PublishMessage::build()
            .payload(letter.payload.clone())
            .headers(headers)
            .message_id(format!("{id}.replay{}", letter.stream_seq));
        let ack = self
            .js
            .send_publish(
                self.topology.task_subject_at(&task.task, task.priority),
                publish,
            )
            .await
            .map_err(|e| Error::js("publish replayed task", e))?;
        ack.await.map_err(|e| Error::js("store replayed task", e))?;
        for old in &letters {
            self.delete_dead_letter(old.stream_seq).await?;
        }
        Ok(Replayed::Queued { task: task.task })
    }

    /// Every dead letter of one request id, oldest first.
    async fn dead_letters_of(&self, id: &str) -> Result<Vec<DeadLetter>, Error> {
        let mut found = Vec::new();
        let mut from = 1;
        loop {
            let (page, next) = self.dead_letters(None, from, PAGE).await?;
            found.extend(
                page.into_iter()
                    .filter(|d| d.request_id.as_deref() == Some(id)),
            );
            match next {
                Some(n) => from = n,
                None => return Ok(found),
            }
        }
    }
}
