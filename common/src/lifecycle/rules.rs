//! The request's state rules, as pure functions: no NATS here, so each rule is unit-tested.
//!
//! A request moves through `received → (scheduled) → (awaiting_approval) → queued →
//! running ⇄ retrying → one final state`. States only move forward; `running` and `retrying`
//! alternate while attempts follow one another. Nothing follows a final state except a replay,
//! which starts a new attempt series for a `dead` request. The final state always equals the
//! stored result's status, whoever wrote it.

use crate::messages::{AttemptError, ErrorKind, State, StatusRecord, TaskResult, now};

/// How far along a state is; a write may only raise it (or stay among the attempt states).
pub fn rank(state: State) -> u8 {
    match state {
        State::Received => 0,
        State::Scheduled => 1,
        State::AwaitingApproval => 2,
        State::Queued => 3,
        State::Running | State::Retrying => 4,
        State::Succeeded
        | State::Failed
        | State::Rejected
        | State::Dead
        | State::Cancelled
        | State::Expired => 5,
    }
}

/// Whether a record in state `from` may be replaced by one in state `to`.
///
/// Forward only; `running` and `retrying` may follow each other (and themselves: a new
/// attempt); nothing replaces a final state (see [`may_replay`] for the one exception).
pub fn may_move(from: State, to: State) -> bool {
    if from.is_terminal() {
        return false;
    }
    rank(to) > rank(from) || (rank(from) == 4 && rank(to) == 4)
}

/// Whether a request in `state` may be replayed from the dead-letter queue: only `dead`.
pub fn may_replay(state: Option<State>) -> bool {
    state == Some(State::Dead)
}

/// What a delivery of a request message is, judged by the status record under its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The id is new: this message created its record.
    New,
    /// The same message again (its stream sequence matches the record's): carry on.
    Redelivery,
    /// Another message with an id already in use: the first one's result stands.
    Duplicate,
}

/// Tells a redelivery from a duplicate id by the request message's stream sequence.
///
/// A record that cannot be read (`None`) is treated as a redelivery: carrying on costs at
/// worst a task published again under the same `Nats-Msg-Id` (dropped by the duplicate window)
/// and a result refused by the one-result rule, whereas dropping it could lose the request.
pub fn admit(existing: Option<&StatusRecord>, request_seq: u64) -> Admission {
    match existing {
        None => Admission::Redelivery,
        Some(record) if record.request_seq == Some(request_seq) => Admission::Redelivery,
        Some(_) => Admission::Duplicate,
    }
}

/// What the dispatcher does with a redelivered request, by the state it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Route it (again) and publish its task: nothing is known to be out yet. A `scheduled`
    /// request resumes here too, once its time has come.
    Route,
    /// It waits for a person's approval: hand it back again (or end it at its deadline).
    Await,
    /// Its task is out (or past it): acknowledge and do nothing more.
    Done,
}

/// How to resume a redelivered request.
///
/// `received` means the task was never published. `queued` written by the duplicate guard
/// (explicit and pattern routes write it *before* publishing) may not have been published:
/// route again, which is cheap and deterministic for those tiers, and the task's
/// `Nats-Msg-Id` drops a second copy. `queued` after an LLM decision is written only once the
/// task is out, so the LLM is never asked twice. An approved request's task was published by
/// its approver, never by the dispatcher.
pub fn resume(record: Option<&StatusRecord>) -> Resume {
    match record {
        None => Resume::Route,
        Some(r) => match r.state {
            State::Received | State::Scheduled => Resume::Route,
            State::AwaitingApproval => Resume::Await,
            State::Queued
                if r.classified_by != Some(crate::messages::ClassifiedBy::Llm)
                    && r.approved_by.is_none() =>
            {
                Resume::Route
            }
            _ => Resume::Done,
        },
    }
}

/// How many deliveries of a request message failed: those the dispatcher handed back on
/// purpose (a request waiting for its time or its approval) do not count.
pub fn failed_deliveries(delivered: u64, record: Option<&StatusRecord>) -> u64 {
    delivered.saturating_sub(record.map_or(0, |r| u64::from(r.parked)))
}

/// Whether a worker may run a task that requires approval: only once `fleet approve` recorded
/// who approved it, and while the request has not ended.
pub fn approved(record: Option<&StatusRecord>) -> bool {
    record.is_some_and(|r| r.approved_by.is_some() && !r.state.is_terminal())
}

/// What a worker does with a delivery of a task, by the status record it finds.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Run attempt `attempt` (1-based); `errors` are the earlier failed attempts.
    Run {
        /// The attempt this run is.
        attempt: u32,
        /// The failed attempts so far, a lost run included.
        errors: Vec<AttemptError>,
    },
    /// The attempts are used up: move it to the dead-letter queue.
    Bury {
        /// The failed attempts.
        errors: Vec<AttemptError>,
    },
}

/// Plans a delivery: attempts count runs that ended in an error or with their worker lost,
/// never deliveries, so an outage or a hand-back at shutdown does not use one up.
///
/// A record in `running` with a worker named means a run started and never reported: its
/// worker was lost (killed, or stopped past the ack wait), and that counts as a failed attempt.
pub fn plan(record: Option<&StatusRecord>, max_attempts: u32) -> Plan {
    let mut errors = record.map(|r| r.errors.clone()).unwrap_or_default();
    if let Some(r) = record
        && r.state == State::Running
        && r.worker.is_some()
        && usize::try_from(r.attempt).is_ok_and(|a| a > errors.len())
    {
        errors.push(AttemptError {
            attempt: r.attempt,
            kind: ErrorKind::TaskError,
            message: format!(
                "the worker running attempt {} stopped before it finished",
                r.attempt
            ),
        });
    }
    let failed = u32::try_from(errors.len()).unwrap_or(u32::MAX);
    if failed >= max_attempts.max(1) {
        Plan::Bury { errors }
    } else {
        Plan::Run {
            attempt: failed + 1,
            errors,
        }
    }
}

/// Whether a failed attempt is the last one allowed.
pub fn exhausted(failed_attempts: usize, max_attempts: u32) -> bool {
    u32::try_from(failed_attempts).unwrap_or(u32::MAX) >= max_attempts.max(1)
}

/// How many deliveries of one task message the worker tolerates before it buries it whatever
/// the status says: a safety net for messages that kill their worker before any state is
/// written, so that nothing loops forever. Generous, because NAKs during an outage are
/// deliveries too.
pub fn delivery_limit(max_attempts: u32) -> u64 {
    u64::from(max_attempts.max(1)) * 10 + 10
}

/// The final record that goes with a stored result, built on what is known of the request.
pub fn settled(base: Option<StatusRecord>, result: &TaskResult) -> StatusRecord {
    let mut record = base.unwrap_or_else(|| {
        let mut r = StatusRecord::new(&result.request_id, State::Received);
        r.task = result.task.clone();
        r.classified_by = result.classified_by;
        r.trace_id = result.trace_id.clone();
        r
    });
    record.state = State::from(result.status);
    record.attempt = result.attempts;
    record.error = result.error.clone();
    if result.worker.is_some() {
        record.worker = result.worker.clone();
    }
    if record.task.is_none() {
        record.task = result.task.clone();
    }
    if record.trace_id.is_none() {
        record.trace_id = result.trace_id.clone();
    }
    record.updated_at = now();
    record
}

/// The state to show for a request: the stored result's, when there is one, else the record's.
pub fn shown_state(record: Option<&StatusRecord>, result: Option<&TaskResult>) -> Option<State> {
    match (result, record) {
        (Some(r), _) => Some(State::from(r.status)),
        (None, Some(rec)) => Some(rec.state),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{ClassifiedBy, Outcome};

    const ALL: [State; 12] = State::ALL;

    fn record(state: State) -> StatusRecord {
        StatusRecord::new("r1", state)
    }

    #[test]
    fn states_only_move_forward() {
        assert!(may_move(State::Received, State::Queued));
        assert!(may_move(State::Queued, State::Running));
        assert!(may_move(State::Running, State::Retrying));
        assert!(may_move(State::Retrying, State::Running));
        assert!(may_move(State::Running, State::Running));
        assert!(may_move(State::Running, State::Succeeded));
        assert!(may_move(State::Received, State::Rejected));
        assert!(!may_move(State::Running, State::Queued));
        assert!(!may_move(State::Queued, State::Received));
        assert!(!may_move(State::Retrying, State::Queued));
    }

    #[test]
    fn nothing_replaces_a_final_state() {
        for from in ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in ALL {
                assert!(!may_move(from, to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn every_state_can_end() {
        for from in ALL.into_iter().filter(|s| !s.is_terminal()) {
            for to in ALL.into_iter().filter(|s| s.is_terminal()) {
                assert!(may_move(from, to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn only_dead_requests_are_replayed() {
        assert!(may_replay(Some(State::Dead)));
        for s in ALL.into_iter().filter(|s| *s != State::Dead) {
            assert!(!may_replay(Some(s)), "{s}");
        }
        assert!(!may_replay(None));
    }

    #[test]
    fn redeliveries_and_duplicates_are_told_apart_by_sequence() {
        let mut r = record(State::Queued);
        r.request_seq = Some(7);
        assert_eq!(admit(Some(&r), 7), Admission::Redelivery);
        assert_eq!(admit(Some(&r), 8), Admission::Duplicate);
        // A record that reads back missing is never taken for a duplicate.
        assert_eq!(admit(None, 7), Admission::Redelivery);
    }

    #[test]
    fn a_redelivery_is_routed_again_only_while_its_task_may_not_be_out() {
        assert_eq!(resume(None), Resume::Route);
        assert_eq!(resume(Some(&record(State::Received))), Resume::Route);
        let mut queued = record(State::Queued);
        queued.classified_by = Some(ClassifiedBy::Explicit);
        assert_eq!(resume(Some(&queued)), Resume::Route);
        queued.classified_by = Some(ClassifiedBy::Llm);
        assert_eq!(resume(Some(&queued)), Resume::Done);
        assert_eq!(resume(Some(&record(State::Running))), Resume::Done);
        // A scheduled request is routed when it comes back; one awaiting approval waits again.
        assert_eq!(resume(Some(&record(State::Scheduled))), Resume::Route);
        assert_eq!(
            resume(Some(&record(State::AwaitingApproval))),
            Resume::Await
        );
        // An approved task was published by its approver: the dispatcher never publishes it.
        let mut approved = record(State::Queued);
        approved.classified_by = Some(ClassifiedBy::Explicit);
        approved.approved_by = Some("ops".into());
        assert_eq!(resume(Some(&approved)), Resume::Done);
        assert_eq!(resume(Some(&record(State::Succeeded))), Resume::Done);
    }

    #[test]
    fn deliveries_handed_back_on_purpose_are_not_failures() {
        assert_eq!(failed_deliveries(12, None), 12);
        let mut parked = record(State::Scheduled);
        parked.parked = 11;
        assert_eq!(failed_deliveries(12, Some(&parked)), 1);
        assert_eq!(failed_deliveries(3, Some(&parked)), 0);
    }

    #[test]
    fn only_an_approved_live_request_may_run_a_task_that_needs_approval() {
        assert!(!approved(None));
        let mut r = record(State::AwaitingApproval);
        assert!(!approved(Some(&r)));
        r.approved_by = Some("ops".into());
        r.state = State::Queued;
        assert!(approved(Some(&r)));
        r.state = State::Cancelled;
        assert!(!approved(Some(&r)));
    }

    #[test]
    fn attempts_count_failed_runs_not_deliveries() {
        assert_eq!(
            plan(None, 5),
            Plan::Run {
                attempt: 1,
                errors: vec![]
            }
        );
        // Queued or retrying after a hand-back: nothing ran to an end, nothing is counted.
        let mut handed_back = record(State::Retrying);
        handed_back.attempt = 1;
        assert!(matches!(
            plan(Some(&handed_back), 5),
            Plan::Run { attempt: 1, .. }
        ));
        let mut retrying = record(State::Retrying);
        retrying.attempt = 2;
        retrying.errors = vec![error(1), error(2)];
        assert!(matches!(
            plan(Some(&retrying), 5),
            Plan::Run { attempt: 3, .. }
        ));
        assert!(matches!(plan(Some(&retrying), 2), Plan::Bury { .. }));
    }

    #[test]
    fn a_lost_worker_counts_as_a_failed_attempt() {
        let mut running = record(State::Running);
        running.attempt = 1;
        running.worker = Some("w1".into());
        let Plan::Run { attempt, errors } = plan(Some(&running), 5) else {
            panic!("expected a run");
        };
        assert_eq!(attempt, 2);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("stopped"));
        assert!(matches!(plan(Some(&running), 1), Plan::Bury { .. }));
        // Running without a worker named was never started by a worker.
        running.worker = None;
        assert!(matches!(
            plan(Some(&running), 5),
            Plan::Run { attempt: 1, .. }
        ));
    }

    #[test]
    fn the_final_state_is_the_results() {
        let mut running = record(State::Running);
        running.task = Some("t".into());
        let result = TaskResult {
            request_id: "r1".into(),
            status: Outcome::Succeeded,
            task: Some("t".into()),
            input: None,
            output: None,
            error: None,
            attempts: 2,
            classified_by: None,
            routing: None,
            trace_id: Some("abc".into()),
            metadata: None,
            given_id: None,
            worker: Some("w2".into()),
            finished_at: None,
        };
        let settled = settled(Some(running), &result);
        assert_eq!(settled.state, State::Succeeded);
        assert_eq!(settled.attempt, 2);
        assert_eq!(settled.worker.as_deref(), Some("w2"));
        assert_eq!(settled.trace_id.as_deref(), Some("abc"));
        assert_eq!(
            shown_state(Some(&record(State::Retrying)), Some(&result)),
            Some(State::Succeeded)
        );
        assert_eq!(
            shown_state(Some(&record(State::Queued)), None),
            Some(State::Queued)
        );
    }

    #[test]
    fn the_delivery_net_is_far_beyond_the_attempts() {
        assert!(delivery_limit(5) > 5 * 4);
        assert!(exhausted(5, 5));
        assert!(!exhausted(4, 5));
        assert!(!exhausted(0, 0));
        assert!(exhausted(1, 0));
    }

    fn error(attempt: u32) -> AttemptError {
        AttemptError {
            attempt,
            kind: ErrorKind::TaskError,
            message: "boom".into(),
        }
    }
}
