//! `fleet dlq list`, `fleet dlq replay` and `fleet dlq purge`.

use clap::Subcommand;
use fleet_common::{Error, lifecycle::Replayed, topology::Fleet};

use crate::{EXIT_FAILED, EXIT_NO_NATS, EXIT_OK, EXIT_USAGE};

/// `fleet dlq` commands.
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters.
    List {
        /// Only this task's (`unreadable` for unreadable requests).
        #[arg(long)]
        task: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run dead tasks again, as a new attempt series for the same request id.
    Replay {
        /// Request ids to replay.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Replay every dead task.
        #[arg(long)]
        all: bool,
    },
    /// Remove dead letters for good (all, or one task's): asks nothing, prints how many went.
    Purge {
        /// Only this task's (`unreadable` for unreadable requests).
        #[arg(long)]
        task: Option<String>,
        /// Print JSON: {"purged": N}.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `fleet dlq` command.
pub(crate) async fn run(fleet: &Fleet, command: DlqCommand) -> i32 {
    match command {
        DlqCommand::List { task, json } => list(fleet, task.as_deref(), json).await,
        DlqCommand::Replay { ids, all } => replay(fleet, &ids, all).await,
        DlqCommand::Purge { task, json } => purge(fleet, task.as_deref(), json).await,
    }
}

async fn purge(fleet: &Fleet, task: Option<&str>, json: bool) -> i32 {
    match fleet.purge_dead_letters(task).await {
        Ok(purged) => {
            if json {
                println!("{}", serde_json::json!({ "purged": purged }));
            } else {
                let whose = task.map(|t| format!(" of {t}")).unwrap_or_default();
                let s = if purged == 1 { "" } else { "s" };
                println!("removed {purged} dead letter{s}{whose}");
            }
            EXIT_OK
        }
        Err(e @ Error::Config(_)) => {
            eprintln!("fleet: {e}");
            EXIT_USAGE
        }
        Err(e) => {
            eprintln!("fleet: {e}");
            EXIT_NO_NATS
        }
    }
}

/// Dead letters read per page: the DLQ is printed as it is read, never held whole.
const PAGE: usize = 256;

async fn list(fleet: &Fleet, task: Option<&str>, json: bool) -> i32 {
    let mut from = 1;
    let mut first = true;
    let mut any = false;
    if json {
        print!("[");
    }
    loop {
        let (page, next) = match fleet.dead_letters(task, from, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                if json {
                    println!("]");
                }
                eprintln!("fleet: {e}");
                return EXIT_NO_NATS;
            }
        };
        for d in &page {
            any = true;
            if json {
                let row = serde_json::json!({
                    "stream_seq": d.stream_seq,
                    "subject": d.subject,
                    "task": d.task,
                    "request_id": d.request_id,
                    "errors": d.errors,
                    "size": d.payload.len(),
                });
                print!("{}{row}", if first { "\n  " } else { ",\n  " });
                first = false;
            } else {
                let last = d.errors.last().map(|e| e.message.as_str()).unwrap_or("-");
                println!(
                    "{:>6}  {:<20}  {:<24}  attempts={}  last_error={last:?}",
                    d.stream_seq,
                    d.task,
                    d.request_id.as_deref().unwrap_or("-"),
                    d.errors.len()
                );
            }
        }
        match next {
            Some(n) => from = n,
            None => break,
        }
    }
    if json {
        println!("{}]", if any { "\n" } else { "" });
    } else if !any {
        println!("the dead-letter queue is empty");
    }
    EXIT_OK
}

async fn replay(fleet: &Fleet, ids: &[String], all: bool) -> i32 {
    let mut ids: Vec<String> = ids.to_vec();
    if all {
        // Each id once, however many dead letters it has: the replay takes its newest.
        let mut from = 1;
        loop {
            let (page, next) = match fleet.dead_letters(None, from, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("fleet: {e}");
                    return EXIT_NO_NATS;
                }
            };
            for d in page {
                if d.task != "unreadable"
                    && let Some(id) = d.request_id
                    && !ids.contains(&id)
                {
                    ids.push(id);
                }
            }
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
    }
    let mut code = EXIT_OK;
    for id in &ids {
        match fleet.replay(id).await {
            Ok(Replayed::Queued { task }) => println!("replayed {id} ({task})"),
            Ok(Replayed::NotDead(state)) => {
                let state = state
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".into());
                eprintln!("fleet: {id} is {state}, not dead: nothing replayed");
                code = EXIT_FAILED;
            }
            Ok(Replayed::NoDeadLetter) => {
                eprintln!("fleet: no dead letter for request {id}");
                code = EXIT_FAILED;
            }
            Ok(Replayed::Unreadable) => {
                eprintln!(
                    "fleet: {id} cannot be replayed: its bytes were never a readable request (see `fleet dlq list --task unreadable --json`)"
                );
                code = EXIT_FAILED;
            }
            Ok(Replayed::AlreadyReplayed) => {
                eprintln!("fleet: {id} is being replayed by someone else: nothing replayed");
                code = EXIT_FAILED;
            }
            Err(e) => {
                eprintln!("fleet: replaying {id} failed: {e}");
                code = EXIT_FAILED;
            }
        }
    }
    code
}
