//! The worker's verbs: start an attempt, show it running, retry it, hand it back, settle it
//! with its one result, or bury it in the dead-letter queue.
//!
//! Attempts count runs that ended in an error or with their worker lost, never deliveries, and
//! they are counted in the status record, so any replica picks up the count where another left
//! it. A first delivery costs no status I/O before the task runs: `running` is written only
//! once the task has run for [`RUNNING_VISIBLE_AFTER`] (a person would see it), and at once on
//! a redelivery (which may be one that kills its worker: it must count if it does).

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;

use super::rules::{self, Plan};
use crate::{
    Error,
    messages::{AttemptError, ErrorKind, State, StatusRecord, TaskMessage, TaskResult, now},
    topology::Fleet,
};

/// How long a task runs before its `running` state is written: shorter runs are over before a
/// person could read the state, so they skip the write.
pub const RUNNING_VISIBLE_AFTER: Duration = Duration::from_millis(250);

/// How a delivery of a task begins.
#[derive(Debug)]
pub enum Start {
    /// Run the task.
    Run(Attempt),
    /// The attempts are used up (a lost run may have used the last one): bury it.
    Bury(Attempt),
    /// The request already has its result (a worker stored it and stopped before its
    /// acknowledgement): acknowledge, run nothing.
    Finished(Box<TaskResult>),
}

/// One attempt at a task, as the worker carries it from start to end.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Which attempt this is (1-based); for a burial, how many ran.
    pub number: u32,
    /// The failed attempts before this one.
    pub errors: Vec<AttemptError>,
    /// The record every write of this attempt builds on.
    record: StatusRecord,
}

// === impl Attempt ===

impl Attempt {
    fn new(record: StatusRecord, number: u32, errors: Vec<AttemptError>) -> Self {
        Self {
            number,
            errors,
            record,
        }
    }

    /// The record in `state`, merged onto what is stored (its creation time, sequence and LLM
    /// usage stay).
    fn record_in(&self, state: State, current: Option<&StatusRecord>) -> StatusRecord {
        let mut record = match current {
            Some(c) => {
                let mut r = c.clone();
                r.task = self.record.task.clone().or(r.task);
                r.trace_id = r.trace_id.or_else(|| self.record.trace_id.clone());
                r.classified_by = r.classified_by.or(self.record.classified_by);
                r
            }
            None => self.record.clone(),
        };
        record.state = state;
        record.attempt = self.number;
        record.worker = self.record.worker.clone();
        record.errors = self.errors.clone();
        record.updated_at = now();
        record
    }
}

/// What [`Fleet::retry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// `retrying` is recorded with the error: NAK for another attempt.
    Scheduled,
    /// The request reached a final state meanwhile (another worker stored its result):
    /// acknowledge, retry nothing.
    Ended,
}

// === impl Fleet ===

impl Fleet {
    /// Begins a delivery of `task`: its `delivered` count comes from JetStream.
    ///
    /// A first delivery runs as attempt 1 with no I/O. A redelivery first looks for the stored
    /// result (a worker that stored it and died before acknowledging), then counts the attempts
    /// from the status record ([`rules::plan`]), and records `running` before the task runs.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the result or the status cannot be read or written; the task
    /// must then be redelivered, and nothing is counted.
    pub async fn start(
        &self,
        task: &TaskMessage,
        delivered: u64,
        worker: &str,
        max_attempts: u32,
    ) -> Result<Start, Error> {
        let mut base = StatusRecord::for_task(task, State::Running);
        base.worker = Some(worker.to_owned());
        if delivered <= 1 {
            base.attempt = 1;
            return Ok(Start::Run(Attempt::new(base, 1, Vec::new())));
        }
        if let Some(result) = self.result(&task.request_id).await? {
            self.settle_status(&result).await?;
            return Ok(Start::Finished(Box::new(result)));
        }
        let entry = self.status_entry(&task.request_id).await?;
        let current = entry.as_ref().and_then(|(r, _)| r.clone());
        let mut plan = rules::plan(current.as_ref(), max_attempts);
        if delivered > rules::delivery_limit(max_attempts)
            && let Plan::Run { errors, .. } = plan
        {
            let mut errors = errors;
            errors.push(AttemptError {
                attempt: u32::try_from(errors.len() + 1).unwrap_or(u32::MAX),
                kind: ErrorKind::TaskError,
                message: format!(
                    "delivered {delivered} times without ever reporting an outcome; given up"
                ),
            });
            plan = Plan::Bury { errors };
        }
        match plan {
            Plan::Bury { errors } => {
                let ran = u32::try_from(errors.len()).unwrap_or(u32::MAX);
                Ok(Start::Bury(Attempt::new(
                    current.unwrap_or(base),
                    ran,
                    errors,
                )))
            }
            Plan::Run { attempt, errors } => {
                let attempt = Attempt::new(base, attempt, errors);
                let running = |c: Option<&StatusRecord>| match c {
                    Some(c) if !rules::may_move(c.state, State::Running) => None,
                    c => Some(attempt.record_in(State::Running, c)),
                };
                self.advance(&task.request_id, entry, running).await?;
                Ok(Start::Run(attempt))
            }
        }
    }

    /// Shows a task that has run for a while as `running`, unless a later state is there.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the status bucket cannot be read or written.
    pub async fn mark_running(&self, attempt: &Attempt) -> Result<(), Error> {
        let id = attempt.record.request_id.clone();
        self.advance(&id, None, |c| match c {
            Some(c) if !rules::may_move(c.state, State::Running) => None,
            c => Some(attempt.record_in(State::Running, c)),
        })
        .await?;
        Ok(())
    }

    /// Records a failed attempt as `retrying`, with its error, before the task is NAKed.
    ///
    /// The caller decides with [`rules::exhausted`] whether to bury instead.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the status cannot be written: NAK anyway, and the attempt is
    /// not counted (an outage delays work, it never uses attempts up).
    pub async fn retry(
        &self,
        attempt: &mut Attempt,
        error: AttemptError,
    ) -> Result<Retried, Error> {
        attempt.errors.push(error);
        let id = attempt.record.request_id.clone();
        let mut ended = false;
        let written = self
            .advance(&id, None, |c| match c {
                Some(c) if !rules::may_move(c.state, State::Retrying) => {
                    ended = c.state.is_terminal();
                    None
                }
                c => Some(attempt.record_in(State::Retrying, c)),
            })
            .await?;
        if written.is_none() && ended {
            return Ok(Retried::Ended);
        }
        Ok(Retried::Scheduled)
    }

    /// Records that a running task was given back unfinished (shutdown): `retrying`, no
    /// worker, no error, so the next delivery is the same attempt again and nothing counts.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the status cannot be written.
    pub async fn hand_back(&self, attempt: &Attempt) -> Result<(), Error> {
        let id = attempt.record.request_id.clone();
        self.advance(&id, None, |c| match c {
            Some(c) if c.state == State::Running => {
                let mut r = attempt.record_in(State::Retrying, Some(c));
                r.worker = None;
                Some(r)
            }
            _ => None,
        })
        .await?;
        Ok(())
    }

    /// Stores a task's one result and returns the result that stands: this one, or the one a
    /// faster worker stored first (the loser of a race takes the winner's outcome).
    ///
    /// The final state is then written with [`Fleet::record_final`], off the request's path.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the result cannot be stored; the task must not be
    /// acknowledged then.
    pub async fn settle(&self, result: TaskResult) -> Result<TaskResult, Error> {
        let stood = self.store_result(&result, HeaderMap::new()).await?;
        Ok(stood.standing(result))
    }

    /// Writes the final state that goes with a stored result, on `attempt`'s record.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the status cannot be written (readers take the result first,
    /// and a redelivery settles the state again).
    pub async fn record_final(&self, attempt: &Attempt, result: &TaskResult) -> Result<(), Error> {
        let mut base = attempt.record.clone();
        base.errors = attempt.errors.clone();
        self.put_status(&rules::settled(Some(base), result)).await
    }

    /// Moves an exhausted task to the dead-letter queue (the message's body and the caller's
    /// headers, with the errors), then stores its `dead` result; returns the result that stands.
    ///
    /// `dedupe_id` names the dead letter for the duplicate window, so a worker that dies between
    /// the two writes leaves one dead letter, not two.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the dead letter or the result cannot be stored.
    pub async fn bury(
        &self,
        task: &TaskMessage,
        delivery: (Option<&HeaderMap>, Bytes),
        dead: TaskResult,
        errors: &[AttemptError],
        dedupe_id: &str,
    ) -> Result<TaskResult, Error> {
        let (headers, payload) = delivery;
        self.dead_letter(
            &task.task,
            &task.request_id,
            headers,
            payload,
            errors,
            dedupe_id,
        )
        .await?;
        self.settle(dead).await
    }
}
