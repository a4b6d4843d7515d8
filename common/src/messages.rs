//! The JSON messages of the fleet: requests, tasks, results and status records.
//!
//! These types are the wire contract of `SPEC.md`. Field names are part of the product: change
//! them only with the spec.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

pub use crate::priority::Priority;

/// The longest request id a caller may give.
pub const MAX_ID_LEN: usize = 64;

/// Header a caller may put the request id in (it wins over the body's `id`).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// Result header: its writer writes the final status itself (value [`STATUS_WRITTEN`]). Every
/// result the fleet's own code stores carries it; a result without it (a worker in another
/// language) is settled by the dispatcher's settler.
pub const STATUS_HEADER: &str = "Fleet-Status";
/// The value of [`STATUS_HEADER`].
pub const STATUS_WRITTEN: &str = "written";
/// Dead-letter header: the request id.
pub const REQUEST_ID_HEADER: &str = "Fleet-Request-Id";
/// Dead-letter header: the task that was exhausted.
pub const TASK_HEADER: &str = "Fleet-Task";
/// Dead-letter header: a JSON list of the errors, one per attempt.
pub const ERRORS_HEADER: &str = "Fleet-Errors";

/// Now, as RFC 3339 text.
pub fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Whether `id` is a valid request id: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// How the task of a request was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassifiedBy {
    /// The LLM chose it from the catalog.
    Llm,
    /// The catalog's patterns chose it (a certain match, or their best guess, else `chat`,
    /// when no LLM answer was usable). Records written before patterns said `rules`.
    #[serde(alias = "rules")]
    Patterns,
    /// The caller named it.
    Explicit,
}

// === impl ClassifiedBy ===

impl ClassifiedBy {
    /// The wire label, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClassifiedBy::Llm => "llm",
            ClassifiedBy::Patterns => "patterns",
            ClassifiedBy::Explicit => "explicit",
        }
    }
}

/// What kind of error ended (or delayed) a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request could not be read: not UTF-8, not a valid object, missing fields, bad id.
    BadRequest,
    /// The request is larger than `FLEET_MAX_REQUEST_BYTES`.
    TooLarge,
    /// The task is not in the catalog.
    UnknownTask,
    /// The input does not pass the task's schema.
    InvalidInput,
    /// The task itself failed.
    TaskError,
    /// Every allowed attempt failed; the task is in the dead-letter queue.
    Exhausted,
    /// The task needs an LLM and none is configured.
    NoLlm,
    /// A person denied the request.
    Denied,
    /// The request was cancelled.
    Cancelled,
    /// The request's deadline passed.
    DeadlineExceeded,
}

// === impl ErrorKind ===

impl ErrorKind {
    /// The wire label, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::UnknownTask => "unknown_task",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::TaskError => "task_error",
            ErrorKind::Exhausted => "exhausted",
            ErrorKind::NoLlm => "no_llm",
            ErrorKind::Denied => "denied",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

/// An error as results and status records carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The kind, for programs.
    pub kind: ErrorKind,
    /// A sentence a person can act on.
    pub message: String,
}

// === impl ErrorInfo ===

impl ErrorInfo {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// One failed attempt, as kept in the status record and the `Fleet-Errors` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// The delivery number (1-based).
    pub attempt: u32,
    /// The error's kind.
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
}

/// What an LLM classification cost, as status records and task messages carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmUsage {
    /// The model that answered.
    pub model: String,
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Completion tokens.
    pub output_tokens: u32,
}

/// How a request's task was chosen, beyond the tier: why, whether the input was found in the
/// request's words, the model, the cache, how long it took. Task messages, status records and
/// results carry it as `routing`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    /// Why the deciding tier decided, in a few words (`certain pattern`, `LLM answer
    /// grounded`, `LLM answer not grounded: ...; patterns' best guess`).
    pub reason: String,
    /// Whether every free-text input field was found in the request's words (absent: not
    /// checked, as for explicit requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grounded: Option<bool>,
    /// The model asked, when the LLM was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// LLM calls made for this decision (0: the LLM was not asked, or the cache answered).
    #[serde(default)]
    pub llm_calls: u32,
    /// The decision came from the decision cache.
    #[serde(default)]
    pub cache_hit: bool,
    /// How long routing took, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
}

/// A request as a caller sends it on `<prefix>.requests` in JSON form.
///
/// Plain UTF-8 text is also a request: it is the `text`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestBody {
    /// Optional caller-chosen id (the `Nats-Msg-Id` header wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The natural-language request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A task named directly; the classifier is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The input of `task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Carried to the result untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// `high`, `normal` (the default) or `low`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Run it no sooner than this long after receipt (`30s`) or this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// Run it no sooner than this RFC 3339 time (or this long after receipt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// End it `expired` if it has not finished this long after receipt, or by this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
}

/// The task message the dispatcher publishes on `<prefix>.tasks.<task>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMessage {
    /// The request's id.
    pub request_id: String,
    /// The task to run.
    pub task: String,
    /// Its input, valid against the task's schema.
    pub input: Value,
    /// How the task was chosen.
    pub classified_by: ClassifiedBy,
    /// The caller's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// The W3C trace id of the request's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// When the dispatcher received the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<String>,
    /// What the LLM classification cost, when the LLM chose the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmUsage>,
    /// How the task was chosen: why, grounded or not, model, cache, latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
    /// The request's deadline (RFC 3339): a worker taking the task later ends it `expired`
    /// without running it, and cancels a run still going at that moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Who approved it, for a task that requires approval (`fleet approve`): the final status
    /// record keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// The priority it waits at: its subject is `<prefix>.tasks.<task>` for `normal` (the
    /// default, left out), `<prefix>.tasks-high.<task>` or `<prefix>.tasks-low.<task>`.
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
}

/// A request's final outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The task ran and produced an output.
    Succeeded,
    /// The task failed permanently.
    Failed,
    /// The request was bad and never ran.
    Rejected,
    /// Every attempt failed; the task is in the dead-letter queue.
    Dead,
    /// Someone cancelled the request.
    Cancelled,
    /// The request's deadline passed before it finished.
    Expired,
}

// === impl Outcome ===

impl Outcome {
    /// The wire label, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Rejected => "rejected",
            Outcome::Dead => "dead",
            Outcome::Cancelled => "cancelled",
            Outcome::Expired => "expired",
        }
    }
}

/// The one final result of a request, on `<prefix>.results.<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The request's id.
    pub request_id: String,
    /// The outcome.
    pub status: Outcome,
    /// What ran, as classified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The task's input, as classified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// The task's output, when `succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// What went wrong, otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// How many deliveries it took (0 when rejected).
    pub attempts: u32,
    /// How the task was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classified_by: Option<ClassifiedBy>,
    /// How the task was chosen: why, grounded or not, model, cache, latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
    /// The W3C trace id: open it in Jaeger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The caller's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// The id the caller gave when it broke the rule (a generated id replaced it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_id: Option<String>,
    /// The worker that produced the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When the result was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

// === impl TaskResult ===

impl TaskResult {
    /// A result for `task` with `status`; the caller fills in the rest.
    pub fn for_task(task: &TaskMessage, status: Outcome, attempts: u32) -> Self {
        Self {
            request_id: task.request_id.clone(),
            status,
            task: Some(task.task.clone()),
            input: Some(task.input.clone()),
            output: None,
            error: None,
            attempts,
            classified_by: Some(task.classified_by),
            routing: task.routing.clone(),
            trace_id: task.trace_id.clone(),
            metadata: task.metadata.clone(),
            given_id: None,
            worker: None,
            finished_at: Some(now()),
        }
    }

    /// The process exit code the `fleet` client uses for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            Outcome::Succeeded => 0,
            _ => 1,
        }
    }
}

/// A request's state in `<prefix>-status`, in the order a request goes through them.
///
/// The rules of which state may follow which live in [`crate::lifecycle::rules`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The dispatcher has it (and may be asking the LLM).
    Received,
    /// It waits for its `delay` / `not_before`.
    Scheduled,
    /// It waits for a person to approve it.
    AwaitingApproval,
    /// Its task is on the tasks stream.
    Queued,
    /// A worker runs it.
    Running,
    /// An attempt failed (or was handed back) and another will follow.
    Retrying,
    /// Final: succeeded.
    Succeeded,
    /// Final: failed permanently.
    Failed,
    /// Final: rejected, never ran.
    Rejected,
    /// Final: attempts exhausted, in the dead-letter queue.
    Dead,
    /// Final: cancelled.
    Cancelled,
    /// Final: its deadline passed.
    Expired,
}

// === impl State ===

impl State {
    /// Every state, in the order a request goes through them.
    pub const ALL: [State; 12] = [
        State::Received,
        State::Scheduled,
        State::AwaitingApproval,
        State::Queued,
        State::Running,
        State::Retrying,
        State::Succeeded,
        State::Failed,
        State::Rejected,
        State::Dead,
        State::Cancelled,
        State::Expired,
    ];

    /// Whether no further state follows.
    pub fn is_terminal(self) -> bool {
        self.outcome().is_some()
    }

    /// The outcome a final state stands for.
    pub fn outcome(self) -> Option<Outcome> {
        match self {
            State::Succeeded => Some(Outcome::Succeeded),
            State::Failed => Some(Outcome::Failed),
            State::Rejected => Some(Outcome::Rejected),
            State::Dead => Some(Outcome::Dead),
            State::Cancelled => Some(Outcome::Cancelled),
            State::Expired => Some(Outcome::Expired),
            _ => None,
        }
    }

    /// The wire label, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Received => "received",
            State::Scheduled => "scheduled",
            State::AwaitingApproval => "awaiting_approval",
            State::Queued => "queued",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Rejected => "rejected",
            State::Dead => "dead",
            State::Cancelled => "cancelled",
            State::Expired => "expired",
        }
    }
}

impl From<Outcome> for State {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Succeeded => State::Succeeded,
            Outcome::Failed => State::Failed,
            Outcome::Rejected => State::Rejected,
            Outcome::Dead => State::Dead,
            Outcome::Cancelled => State::Cancelled,
            Outcome::Expired => State::Expired,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status record of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// The request's id.
    pub request_id: String,
    /// Where it is now.
    pub state: State,
    /// The task, once classified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The current or last delivery number.
    #[serde(default)]
    pub attempt: u32,
    /// The worker that runs or ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The W3C trace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// How the task was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classified_by: Option<ClassifiedBy>,
    /// The errors of failed attempts, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<AttemptError>,
    /// The final error, when the request ended without success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// What the LLM classification cost, when the LLM chose the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmUsage>,
    /// How the task was chosen: why, grounded or not, model, cache, latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
    /// Stream sequence of the request message that created this record: a redelivery of the
    /// same message carries the same sequence, a duplicate request another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_seq: Option<u64>,
    /// When a `scheduled` request is due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// When the request expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// The routed input, while the request is `awaiting_approval` (what the approver approves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// The caller's metadata, kept while the request waits for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// Who may approve a request `awaiting_approval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<String>,
    /// Who approved it (set by `fleet approve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Who is denying it (set by `fleet deny` before it stores the `rejected` result, by a
    /// compare-and-set that a racing approval then loses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_by: Option<String>,
    /// How many deliveries of the request message the dispatcher handed back on purpose
    /// (waiting for its time or for approval): they are not failed deliveries.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parked: u32,
    /// The priority its task waits at, when not `normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// When the request was received.
    pub created_at: String,
    /// When this record was last written.
    pub updated_at: String,
}

// === impl StatusRecord ===

impl StatusRecord {
    /// A fresh record in `state`.
    pub fn new(request_id: &str, state: State) -> Self {
        let now = now();
        Self {
            request_id: request_id.to_owned(),
            state,
            task: None,
            attempt: 0,
            worker: None,
            trace_id: None,
            classified_by: None,
            errors: Vec::new(),
            error: None,
            llm: None,
            routing: None,
            request_seq: None,
            not_before: None,
            deadline: None,
            input: None,
            metadata: None,
            approvers: None,
            approved_by: None,
            denied_by: None,
            parked: 0,
            priority: None,
            created_at: now.clone(),
            updated_at: now,
        }
    }

    /// The record of a task message's request in `state`.
    pub fn for_task(task: &TaskMessage, state: State) -> Self {
        let mut rec = Self::new(&task.request_id, state);
        rec.task = Some(task.task.clone());
        rec.trace_id = task.trace_id.clone();
        rec.classified_by = Some(task.classified_by);
        rec.llm = task.llm.clone();
        rec.routing = task.routing.clone();
        rec.deadline = task.deadline.clone();
        rec.approved_by = task.approved_by.clone();
        rec.priority = Some(task.priority).filter(|p| !p.is_normal());
        if let Some(at) = &task.received_at {
            rec.created_at = at.clone();
        }
        rec
    }

    /// Moves to `state`, stamping the time.
    pub fn moved_to(mut self, state: State) -> Self {
        self.state = state;
        self.updated_at = now();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_rule() {
        assert!(is_valid_id("abc-DEF_123"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("has space"));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(is_valid_id(&"a".repeat(64)));
    }

    #[test]
    fn wire_labels_are_serdes() {
        let label = |v: serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_default();
        for s in State::ALL {
            assert_eq!(label(serde_json::json!(s)), s.as_str());
            if let Some(o) = s.outcome() {
                assert_eq!(label(serde_json::json!(o)), o.as_str());
                assert_eq!(State::from(o), s);
            }
        }
        for k in [
            ErrorKind::BadRequest,
            ErrorKind::TooLarge,
            ErrorKind::UnknownTask,
            ErrorKind::InvalidInput,
            ErrorKind::TaskError,
            ErrorKind::Exhausted,
            ErrorKind::NoLlm,
            ErrorKind::Denied,
            ErrorKind::Cancelled,
            ErrorKind::DeadlineExceeded,
        ] {
            assert_eq!(label(serde_json::json!(k)), k.as_str());
        }
        for c in [
            ClassifiedBy::Llm,
            ClassifiedBy::Patterns,
            ClassifiedBy::Explicit,
        ] {
            assert_eq!(label(serde_json::json!(c)), c.as_str());
        }
    }

    #[test]
    fn results_serialise_as_the_spec_says() {
        let task = TaskMessage {
            request_id: "r1".into(),
            task: "text.transform".into(),
            input: serde_json::json!({"text": "x", "op": "upper"}),
            classified_by: ClassifiedBy::Patterns,
            metadata: None,
            trace_id: Some("abc".into()),
            received_at: None,
            llm: None,
            routing: None,
            deadline: None,
            approved_by: None,
            priority: Priority::Normal,
        };
        let mut r = TaskResult::for_task(&task, Outcome::Succeeded, 1);
        r.output = Some(serde_json::json!({"text": "X"}));
        let v = serde_json::to_value(&r).expect("serialise");
        assert_eq!(v["status"], "succeeded");
        assert_eq!(v["classified_by"], "patterns");
        // Records written before patterns said `rules`: they still read.
        assert_eq!(
            serde_json::from_value::<ClassifiedBy>(serde_json::json!("rules")).ok(),
            Some(ClassifiedBy::Patterns)
        );
        assert_eq!(v["output"]["text"], "X");
        assert!(v.get("error").is_none());
        assert_eq!(State::Retrying.to_string(), "retrying");
    }
}
