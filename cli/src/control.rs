//! `fleet cancel`, `fleet approve`, `fleet deny`, `fleet list`: what a person does to requests.

use clap::Args;
use fleet_common::{
    lifecycle::{Approval, Cancellation, Denial},
    messages::{State, TaskResult},
    topology::Fleet,
};
use serde_json::json;

use crate::{EXIT_FAILED, EXIT_NO_NATS, EXIT_OK, output::print_result};

/// Who is acting, for the records (`--as`, else `$USER`).
#[derive(Debug, Args)]
pub(crate) struct Operator {
    /// Your name, as the result or the status record will say who cancelled, approved or denied.
    #[arg(
        long = "as",
        env = "USER",
        default_value = "an operator",
        hide_env = true
    )]
    pub(crate) name: String,
}

/// `fleet list`'s filters and page.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only requests in this state (received, scheduled, awaiting_approval, queued, running,
    /// retrying, succeeded, failed, rejected, dead, cancelled, expired).
    #[arg(long, value_parser = parse_state)]
    state: Option<State>,
    /// Only requests for this task.
    #[arg(long)]
    task: Option<String>,
    /// Requests per page.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Which page (1 is the newest requests).
    #[arg(long, default_value_t = 1)]
    page: usize,
    /// Print JSON: {"total", "page", "limit", "requests": [status records]}.
    #[arg(long)]
    json: bool,
}

fn parse_state(text: &str) -> Result<State, String> {
    State::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| {
            let all: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
            format!("`{text}` is not a state: use one of {}", all.join(", "))
        })
}

/// Prints what a verb found when the request had ended already, and returns exit code 1.
fn finished(id: &str, result: &TaskResult, json: bool) -> i32 {
    if json {
        println!(
            "{}",
            json!({ "request_id": id, "changed": false, "result": result })
        );
    } else {
        println!(
            "{id} had already ended ({}); nothing changed",
            result.status.as_str()
        );
    }
    EXIT_FAILED
}

fn unknown(id: &str) -> i32 {
    eprintln!("fleet: no request {id} is known (never sent, or older than FLEET_RESULT_TTL)");
    EXIT_FAILED
}

fn not_awaiting(id: &str, state: State, json: bool) -> i32 {
    if json {
        println!(
            "{}",
            json!({ "request_id": id, "changed": false, "state": state })
        );
    } else {
        println!("{id} is not awaiting approval (it is {state}); nothing changed");
    }
    EXIT_FAILED
}

/// Runs `fleet cancel`.
pub(crate) async fn cancel(fleet: &Fleet, id: &str, by: &Operator, json: bool) -> i32 {
    match fleet.cancel(id, &by.name).await {
        Ok(Cancellation::Cancelled(result)) => {
            if json {
                println!(
                    "{}",
                    json!({ "request_id": id, "changed": true, "result": result })
                );
            } else {
                println!("{id} cancelled");
            }
            EXIT_OK
        }
        Ok(Cancellation::Finished(result)) => finished(id, &result, json),
        Ok(Cancellation::Unknown) => unknown(id),
        Err(e) => {
            eprintln!("fleet: {e}");
            EXIT_NO_NATS
        }
    }
}

/// Runs `fleet approve`.
pub(crate) async fn approve(fleet: &Fleet, id: &str, by: &Operator, json: bool) -> i32 {
    match fleet.approve(id, &by.name).await {
        Ok(Approval::Approved(record)) => {
            if json {
                println!(
                    "{}",
                    json!({ "request_id": id, "changed": true, "status": record })
                );
            } else {
                println!(
                    "{id} approved by {}: {} is queued",
                    by.name,
                    record.task.as_deref().unwrap_or("its task")
                );
            }
            EXIT_OK
        }
        Ok(Approval::Finished(result)) => finished(id, &result, json),
        Ok(Approval::NotAwaiting(state)) => not_awaiting(id, state, json),
        Ok(Approval::Unknown) => unknown(id),
        Err(e) => {
            eprintln!("fleet: {e}");
            EXIT_NO_NATS
        }
    }
}

/// Runs `fleet deny`.
pub(crate) async fn deny(
    fleet: &Fleet,
    id: &str,
    reason: Option<&str>,
    by: &Operator,
    json: bool,
) -> i32 {
    match fleet.deny(id, reason, &by.name).await {
        Ok(Denial::Denied(result)) => {
            if json {
                println!(
                    "{}",
                    json!({ "request_id": id, "changed": true, "result": result })
                );
                EXIT_OK
            } else {
                println!("{id} denied");
                print_result(&result, false);
                EXIT_OK
            }
        }
        Ok(Denial::Finished(result)) => finished(id, &result, json),
        Ok(Denial::NotAwaiting(state)) => not_awaiting(id, state, json),
        Ok(Denial::Unknown) => unknown(id),
        Err(e) => {
            eprintln!("fleet: {e}");
            EXIT_NO_NATS
        }
    }
}

/// Runs `fleet list`.
pub(crate) async fn list(fleet: &Fleet, args: ListArgs) -> i32 {
    let limit = args.limit.max(1);
    let page = args.page.max(1);
    let listed = match fleet
        .list(args.state, args.task.as_deref(), limit, page - 1)
        .await
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fleet: {e}");
            return EXIT_NO_NATS;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "total": listed.total,
                "page": page,
                "limit": limit,
                "requests": listed.records,
            }))
            .unwrap_or_default()
        );
        return EXIT_OK;
    }
    if listed.records.is_empty() {
        println!("no requests (of {} matching)", listed.total);
        return EXIT_OK;
    }
    println!(
        "{:<26}  {:<17}  {:<20}  {:<20}  when",
        "request", "state", "task", "created"
    );
    for r in &listed.records {
        let when = match r.state {
            State::Scheduled => r
                .not_before
                .as_deref()
                .map(|t| format!("runs at {t}"))
                .unwrap_or_default(),
            State::AwaitingApproval => "fleet approve / fleet deny".to_owned(),
            _ => r
                .deadline
                .as_deref()
                .map(|t| format!("deadline {t}"))
                .unwrap_or_default(),
        };
        println!(
            "{:<26}  {:<17}  {:<20}  {:<20}  {when}",
            r.request_id,
            r.state.as_str(),
            r.task.as_deref().unwrap_or("-"),
            r.created_at.get(..19).unwrap_or(&r.created_at),
        );
    }
    let pages = listed.total.div_ceil(limit);
    if pages > 1 {
        println!(
            "page {page} of {pages} ({} requests); --page N for more",
            listed.total
        );
    }
    EXIT_OK
}
