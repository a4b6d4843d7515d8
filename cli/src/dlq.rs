//! `fleet dlq list` and `fleet dlq replay`.

use async_nats::{HeaderMap, jetstream::message::PublishMessage};
use clap::Subcommand;
use fleet_common::{
    messages::{ERRORS_HEADER, REQUEST_ID_HEADER, State, StatusRecord, TASK_HEADER, TaskMessage},
    store::DeadLetter,
    topology::Fleet,
};

use crate::{EXIT_FAILED, EXIT_NO_NATS, EXIT_OK};

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
}

/// Runs a `fleet dlq` command.
pub(crate) async fn run(fleet: &Fleet, command: DlqCommand) -> i32 {
    match command {
        DlqCommand::List { task, json } => list(fleet, task.as_deref(), json).await,
        DlqCommand::Replay { ids, all } => replay(fleet, &ids, all).await,
    }
}

async fn list(fleet: &Fleet, task: Option<&str>, json: bool) -> i32 {
    let letters = match fleet.dead_letters(task).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fleet: {e}");
            return EXIT_NO_NATS;
        }
    };
    if json {
        let rows: Vec<_> = letters
            .iter()
            .map(|d| {
                serde_json::json!({
                    "stream_seq": d.stream_seq,
                    "subject": d.subject,
                    "task": d.task,
                    "request_id": d.request_id,
                    "errors": d.errors,
                    "size": d.payload.len(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return EXIT_OK;
    }
    if letters.is_empty() {
        println!("the dead-letter queue is empty");
    }
    for d in &letters {
        let last = d.errors.last().map(|e| e.message.as_str()).unwrap_or("-");
        println!(
            "{:>6}  {:<20}  {:<24}  attempts={}  last_error={last:?}",
            d.stream_seq,
            d.task,
            d.request_id.as_deref().unwrap_or("-"),
            d.errors.len()
        );
    }
    EXIT_OK
}

async fn replay(fleet: &Fleet, ids: &[String], all: bool) -> i32 {
    let letters = match fleet.dead_letters(None).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fleet: {e}");
            return EXIT_NO_NATS;
        }
    };
    let chosen: Vec<&DeadLetter> = letters
        .iter()
        .filter(|d| all || d.request_id.as_ref().is_some_and(|id| ids.contains(id)))
        .collect();
    let mut code = EXIT_OK;
    for id in ids {
        if !chosen.iter().any(|d| d.request_id.as_ref() == Some(id)) {
            eprintln!("fleet: no dead letter for request {id}");
            code = EXIT_FAILED;
        }
    }
    for letter in chosen {
        let id = letter.request_id.clone().unwrap_or_default();
        if letter.task == "unreadable" {
            eprintln!(
                "fleet: {id} cannot be replayed: its bytes were never a readable request (see `fleet dlq list --task unreadable --json`)"
            );
            code = EXIT_FAILED;
            continue;
        }
        match replay_one(fleet, letter).await {
            Ok(()) => println!("replayed {id} ({})", letter.task),
            Err(e) => {
                eprintln!("fleet: replaying {id} failed: {e}");
                code = EXIT_FAILED;
            }
        }
    }
    code
}

async fn replay_one(fleet: &Fleet, letter: &DeadLetter) -> Result<(), fleet_common::Error> {
    let task: TaskMessage =
        serde_json::from_slice(&letter.payload).map_err(|source| fleet_common::Error::Decode {
            what: "dead task message",
            source,
        })?;
    // The dead result makes way for the outcome of the new attempt series.
    fleet.purge_result(&task.request_id).await?;
    let mut record = fleet
        .status_of(&task.request_id)
        .await?
        .unwrap_or_else(|| StatusRecord::for_task(&task, State::Queued));
    record.attempt = 0;
    record.worker = None;
    record.errors.clear();
    record.error = None;
    fleet.put_status(&record.moved_to(State::Queued)).await?;

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
        .message_id(format!("{}.dlq{}", task.request_id, letter.stream_seq));
    let ack = fleet
        .js
        .send_publish(fleet.topology.task_subject(&task.task), publish)
        .await
        .map_err(|e| fleet_common::Error::js("publish replayed task", e))?;
    ack.await
        .map_err(|e| fleet_common::Error::js("store replayed task", e))?;
    fleet.delete_dead_letter(letter.stream_seq).await
}
