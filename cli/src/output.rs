//! Printing results, states and errors.

use fleet_common::messages::{Outcome, StatusRecord, TaskResult};

use crate::{EXIT_FAILED, EXIT_OK};

/// Prints a result (pretty JSON with `json`, a short summary otherwise) and returns its exit code.
pub(crate) fn print_result(result: &TaskResult, json: bool) -> i32 {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(result).unwrap_or_default()
        );
    } else {
        let status = result.status.as_str();
        println!(
            "result: {status}  task={}  attempts={}  request_id={}",
            result.task.as_deref().unwrap_or("-"),
            result.attempts,
            result.request_id
        );
        if let Some(output) = &result.output {
            println!(
                "output: {}",
                serde_json::to_string_pretty(output).unwrap_or_default()
            );
        }
        if let Some(error) = &result.error {
            println!("error: [{}] {}", error.kind.as_str(), error.message);
        }
        if let Some(given) = &result.given_id {
            println!("given id: {given}");
        }
        if let Some(trace) = &result.trace_id {
            println!("trace: {trace}  (fleet trace {})", result.request_id);
        }
    }
    if result.status == Outcome::Succeeded {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// Prints one state change as a line.
pub(crate) fn print_state(record: &StatusRecord) {
    let mut line = format!("state: {}", record.state);
    if let Some(task) = &record.task {
        line.push_str(&format!("  task={task}"));
    }
    if record.attempt > 0 {
        line.push_str(&format!("  attempt={}", record.attempt));
    }
    if let Some(worker) = &record.worker {
        line.push_str(&format!("  worker={worker}"));
    }
    if let Some(last) = record.errors.last() {
        line.push_str(&format!("  last_error={:?}", last.message));
    }
    if record.state == fleet_common::messages::State::Scheduled
        && let Some(at) = &record.not_before
    {
        line.push_str(&format!("  runs_at={at}"));
    }
    if record.state == fleet_common::messages::State::AwaitingApproval {
        if let Some(input) = &record.input {
            line.push_str(&format!("  input={input}"));
        }
        if let Some(who) = &record.approvers {
            line.push_str(&format!("  approvers={who:?}"));
        }
    }
    if let Some(by) = &record.approved_by {
        line.push_str(&format!("  approved_by={by}"));
    }
    if let Some(deadline) = &record.deadline {
        line.push_str(&format!("  deadline={deadline}"));
    }
    println!("{line}");
}
