//! The command line, and dispatch to each command.

use std::time::Duration;

use clap::{Parser, Subcommand};
use fleet_common::{
    config::{NatsArgs, OtlpArgs, parse_duration},
    topology::Fleet,
};

use crate::{EXIT_NO_NATS, dlq, eval, inspect, submit};

/// Default time `--wait` and `watch` wait for a result.
pub(crate) const DEFAULT_TIMEOUT: &str = "120s";
/// Default Jaeger UI, for `fleet trace`.
pub(crate) const DEFAULT_JAEGER_URL: &str = "http://localhost:16686";

/// The fleet's client: submit requests and see them through.
#[derive(Debug, Parser)]
#[command(name = "fleet", version, about)]
pub(crate) struct Cli {
    /// How to reach NATS.
    #[command(flatten)]
    pub(crate) nats: NatsArgs,

    /// Where spans go: with an endpoint, `submit` starts the request's trace and sends its
    /// `traceparent`.
    #[command(flatten)]
    pub(crate) otlp: OtlpArgs,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Submit a request: natural-language TEXT, or --task with --input.
    Submit(submit::SubmitArgs),
    /// Print a request's status record and, once there, its result.
    Status {
        /// The request id.
        id: String,
        /// Print JSON: {"status": …, "result": …}.
        #[arg(long)]
        json: bool,
    },
    /// Follow a request's state until its result, then print the result.
    Watch {
        /// The request id.
        id: String,
        /// Give up after this long (exit code 3).
        #[arg(long, default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
        timeout: Duration,
        /// Print only the result, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The dead-letter queue: tasks that exhausted their attempts, unreadable requests.
    Dlq {
        /// What to do with it.
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// The tasks the workers run, with their input schemas.
    Catalog {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure routing quality: send labelled requests (JSONL: text, task, args) and print the
    /// accuracy per task and overall.
    Eval {
        /// The labelled requests, one JSON object per line.
        file: std::path::PathBuf,
        /// Give up waiting for results after this long (exit code 3).
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        timeout: Duration,
        /// Print JSON, misses included.
        #[arg(long)]
        json: bool,
        /// Print each request that was routed wrong.
        #[arg(long)]
        misses: bool,
        /// Exit 1 when the overall accuracy (task and arguments) is below this percentage.
        #[arg(long, default_value_t = 0.0)]
        min_accuracy: f64,
    },
    /// Print the Jaeger link of a request's trace.
    Trace {
        /// The request id.
        id: String,
        /// The Jaeger UI's base URL.
        #[arg(long, env = "FLEET_JAEGER_URL", default_value = DEFAULT_JAEGER_URL)]
        jaeger_url: String,
        /// Print JSON: {"request_id", "trace_id", "url"}.
        #[arg(long)]
        json: bool,
    },
}

/// Connects, runs the command, and returns the exit code.
pub(crate) async fn run(cli: Cli) -> i32 {
    let client = match cli.nats.connect("fleet-cli", false).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleet: {e}");
            return EXIT_NO_NATS;
        }
    };
    let fleet = match Fleet::bind(client, &cli.nats).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fleet: {e}");
            return EXIT_NO_NATS;
        }
    };
    let code = match cli.command {
        Command::Submit(args) => submit::submit(&fleet, args, cli.otlp.exports()).await,
        Command::Status { id, json } => inspect::status(&fleet, &id, json).await,
        Command::Watch { id, timeout, json } => submit::watch(&fleet, &id, timeout, json).await,
        Command::Dlq { command } => dlq::run(&fleet, command).await,
        Command::Catalog { json } => inspect::catalog(&fleet, json).await,
        Command::Eval {
            file,
            timeout,
            json,
            misses,
            min_accuracy,
        } => eval::eval(&fleet, &file, timeout, json, misses, min_accuracy).await,
        Command::Trace {
            id,
            jaeger_url,
            json,
        } => inspect::trace(&fleet, &id, &jaeger_url, json).await,
    };
    // Publishes are awaited, but make sure nothing is left in the client's buffer.
    fleet.flush().await;
    code
}
