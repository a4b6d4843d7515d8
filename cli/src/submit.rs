//! `fleet submit` and `fleet watch`: send a request, follow it to its result.

use std::time::Duration;

use async_nats::HeaderMap;
use clap::Args;
use fleet_common::{
    config::parse_duration,
    lifecycle::{Event, Follow},
    messages::{MSG_ID_HEADER, Priority, RequestBody, is_valid_id},
    telemetry,
    topology::Fleet,
};
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::{
    EXIT_FAILED, EXIT_NO_NATS, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE,
    commands::DEFAULT_TIMEOUT,
    output::{print_result, print_state},
    progress::Progress,
};

/// `fleet submit`.
#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// What you want done, in words (routed by the classifier).
    #[arg(required_unless_present = "task", conflicts_with = "task")]
    text: Option<String>,
    /// Name a task directly (see `fleet catalog`); the classifier is skipped.
    #[arg(long, requires = "input")]
    task: Option<String>,
    /// The task's input, a JSON object.
    #[arg(long, requires = "task")]
    input: Option<String>,
    /// The request id (1-64 of A-Z a-z 0-9 - _); generated when absent.
    #[arg(long)]
    id: Option<String>,
    /// Metadata carried to the result, a JSON object.
    #[arg(long)]
    metadata: Option<String>,
    /// Run it no sooner than this: a duration from now (`30s`, `2h`) or an RFC 3339 time.
    #[arg(long, value_parser = parse_when)]
    delay: Option<String>,
    /// End it `expired` unless it has finished by this: a duration (`10m`) or an RFC 3339 time.
    #[arg(long, value_parser = parse_when)]
    deadline: Option<String>,
    /// `high`, `normal` (the default) or `low`: a worker with tasks of several priorities
    /// waiting takes the higher first.
    #[arg(long)]
    priority: Option<Priority>,
    /// Show the state as it changes, then the result.
    #[arg(long)]
    wait: bool,
    /// With --wait, give up after this long (exit code 3).
    #[arg(long, default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    timeout: Duration,
    /// Print JSON (with --wait: only the result).
    #[arg(long)]
    json: bool,
}

/// Checks a `--delay` / `--deadline` here, so a typo is a usage error rather than a
/// `rejected` result; the dispatcher reads the text itself.
fn parse_when(text: &str) -> Result<String, String> {
    fleet_common::lifecycle::timing::When::parse("the value", text).map(|_| text.trim().to_owned())
}

fn json_object(flag: &str, text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!("{flag} must be a JSON object")),
        Err(e) => Err(format!("{flag} is not valid JSON: {e}")),
    }
}

/// Runs `fleet submit`.
pub(crate) async fn submit(fleet: &Fleet, args: SubmitArgs, traced: bool) -> i32 {
    let id = args.id.clone().unwrap_or_else(|| nuid::next().to_string());
    if !is_valid_id(&id) {
        eprintln!("fleet: --id `{id}` is not valid: use 1 to 64 letters, digits, `-` or `_`");
        return EXIT_USAGE;
    }
    let mut body = RequestBody {
        id: Some(id.clone()),
        text: args.text.clone(),
        task: args.task.clone(),
        delay: args.delay.clone(),
        deadline: args.deadline.clone(),
        priority: args.priority.filter(|p| !p.is_normal()),
        ..Default::default()
    };
    if let Some(input) = &args.input {
        match json_object("--input", input) {
            Ok(map) => body.input = Some(Value::Object(map)),
            Err(e) => {
                eprintln!("fleet: {e}");
                return EXIT_USAGE;
            }
        }
    }
    if let Some(meta) = &args.metadata {
        match json_object("--metadata", meta) {
            Ok(map) => body.metadata = Some(map),
            Err(e) => {
                eprintln!("fleet: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let payload = match serde_json::to_vec(&body) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fleet: cannot encode the request: {e}");
            return EXIT_USAGE;
        }
    };

    // Follow before publishing, so no state change is missed.
    let followed = if args.wait {
        match fleet.follow(&id).await {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("fleet: cannot follow the request: {e}");
                return EXIT_NO_NATS;
            }
        }
    } else {
        None
    };

    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID_HEADER, id.as_str());
    let span = telemetry::messaging_span("publish", &fleet.topology().requests_subject());
    span.record("messaging.message.id", id.as_str());
    if traced {
        // Only an exported span may be the trace's root; otherwise the dispatcher starts it.
        let _entered = span.enter();
        telemetry::inject(&mut headers);
    }
    let published = fleet
        .submit(headers, payload.into())
        .instrument(span.clone())
        .await;
    drop(span);
    if let Err(e) = published {
        eprintln!("fleet: the request was not accepted by NATS: {e}");
        return EXIT_NO_NATS;
    }

    match followed {
        None => {
            if args.json {
                println!("{}", serde_json::json!({ "request_id": id }));
            } else {
                println!("{id}");
            }
            EXIT_OK
        }
        Some(events) => {
            if !args.json {
                println!("request_id: {id}");
            }
            follow(&id, events, args.timeout, args.json).await
        }
    }
}

/// Runs `fleet watch`.
pub(crate) async fn watch(fleet: &Fleet, id: &str, timeout: Duration, json: bool) -> i32 {
    let events = match fleet.follow(id).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fleet: cannot follow the request: {e}");
            return EXIT_NO_NATS;
        }
    };
    match fleet.view(id).await {
        Ok(view) if view.is_unknown() => {
            eprintln!(
                "fleet: no request {id} is known (never sent, or older than FLEET_RESULT_TTL)"
            );
            return EXIT_FAILED;
        }
        Ok(_) => {}
        Err(e) => {
            eprintln!("fleet: {e}");
            return EXIT_NO_NATS;
        }
    }
    follow(id, events, timeout, json).await
}

/// Prints each state change until the result, then the result; a spinner shows the wait on a
/// terminal.
async fn follow(id: &str, mut events: Follow, timeout: Duration, json: bool) -> i32 {
    let deadline = tokio::time::Instant::now() + timeout;
    let progress = Progress::spinner(format!("waiting for {id}"));
    loop {
        let event = tokio::time::timeout_at(deadline, events.next()).await;
        if !matches!(event, Ok(Some(Ok(Event::State(_))))) {
            progress.clear();
        }
        match event {
            Err(_) => {
                eprintln!(
                    "fleet: no result for {id} after {timeout:?}; `fleet watch {id}` keeps following it"
                );
                return EXIT_TIMEOUT;
            }
            Ok(None) => {
                eprintln!("fleet: the status watch ended; `fleet watch {id}` follows it again");
                return EXIT_NO_NATS;
            }
            Ok(Some(Err(e))) => {
                eprintln!("fleet: following the request failed: {e}");
                return EXIT_NO_NATS;
            }
            Ok(Some(Ok(Event::State(record)))) => {
                progress.set_message(format!("{id} is {}", record.state));
                if !json {
                    progress.println(|| print_state(&record));
                }
            }
            Ok(Some(Ok(Event::Result(result)))) => return print_result(&result, json),
        }
    }
}
