//! The command line, and dispatch to each command.

use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use fleet_common::{
    Error,
    config::{NatsArgs, OtlpArgs, parse_duration},
    topology::Fleet,
};

use crate::{EXIT_NO_NATS, EXIT_OK, EXIT_USAGE, control, dlq, eval, inspect, setup, stats, submit};

/// Default time `--wait` and `watch` wait for a result.
pub(crate) const DEFAULT_TIMEOUT: &str = "120s";
/// Default Jaeger UI, for `fleet trace`.
pub(crate) const DEFAULT_JAEGER_URL: &str = "http://localhost:16686";

/// The fleet's client: submit requests and see them through.
///
/// The connection and telemetry flags are global: they work before or after the subcommand,
/// as the nats CLI's do (`fleet submit --task … -s nats://…`).
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

// === impl Cli ===

impl Cli {
    /// The command line, with every top-level flag global.
    pub(crate) fn command_line() -> clap::Command {
        let top = OtlpArgs::augment_args(NatsArgs::augment_args(clap::Command::new("fleet")));
        let global: Vec<clap::Id> = top.get_arguments().map(|a| a.get_id().clone()).collect();
        <Cli as CommandFactory>::command().mut_args(|arg| {
            if global.contains(arg.get_id()) {
                arg.global(true)
            } else {
                arg
            }
        })
    }

    /// Parses the process's arguments, or exits with clap's message (code 2).
    pub(crate) fn from_args() -> Self {
        let matches = Self::command_line().get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
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
    /// List requests by state and task, newest first, a page at a time.
    List(control::ListArgs),
    /// Cancel a request that has not ended: it ends `cancelled`, and a running task is stopped.
    Cancel {
        /// The request id.
        id: String,
        /// Who cancels.
        #[command(flatten)]
        by: control::Operator,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a request awaiting approval: its task runs.
    Approve {
        /// The request id.
        id: String,
        /// Who approves.
        #[command(flatten)]
        by: control::Operator,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deny a request awaiting approval: it ends `rejected` (kind `denied`) and never runs.
    Deny {
        /// The request id.
        id: String,
        /// Why, for the result.
        #[arg(long)]
        reason: Option<String>,
        /// Who denies.
        #[command(flatten)]
        by: control::Operator,
        /// Print JSON.
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
    /// Measure routing quality: send labelled requests (JSONL: text, task, args, split) and
    /// print the accuracy per task, per tier and per split, a confusion matrix, the share that
    /// reached the LLM and the routing latency.
    Eval(eval::EvalArgs),
    /// Per task: waiting, running, done, dead, and the workers pulling.
    Stats {
        /// Print JSON: one object per task.
        #[arg(long)]
        json: bool,
    },
    /// Create or update the streams, buckets and durable consumers (as the NATS admin user), for
    /// dispatchers and workers that run with FLEET_MANAGE_STREAMS=false.
    Setup(setup::SetupArgs),
    /// Print a shell completion script: `source <(fleet completion bash)`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
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
    if let Command::Completion { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command_line(),
            "fleet",
            &mut std::io::stdout(),
        );
        return EXIT_OK;
    }
    let nats = cli.nats.or_selected_context();
    let client = match nats.connect("fleet-cli", false).await {
        Ok(c) => c,
        Err(e @ Error::Config(_)) => {
            eprintln!("fleet: {e}");
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("fleet: {e}");
            return EXIT_NO_NATS;
        }
    };
    // `setup` makes the fleet that the other commands find.
    let command = match cli.command {
        Command::Setup(args) => return setup::setup(client, &nats, args).await,
        other => other,
    };
    let fleet = match Fleet::bind(client, &nats).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fleet: {e}");
            return EXIT_NO_NATS;
        }
    };
    let code = match command {
        Command::Submit(args) => submit::submit(&fleet, args, cli.otlp.exports()).await,
        Command::Status { id, json } => inspect::status(&fleet, &id, json).await,
        Command::Watch { id, timeout, json } => submit::watch(&fleet, &id, timeout, json).await,
        Command::Dlq { command } => dlq::run(&fleet, command).await,
        Command::Catalog { json } => inspect::catalog(&fleet, json).await,
        Command::Eval(args) => eval::eval(&fleet, args).await,
        Command::Trace {
            id,
            jaeger_url,
            json,
        } => inspect::trace(&fleet, &id, &jaeger_url, json).await,
        Command::Stats { json } => stats::stats(&fleet, json).await,
        Command::List(args) => control::list(&fleet, args).await,
        Command::Cancel { id, by, json } => control::cancel(&fleet, &id, &by, json).await,
        Command::Approve { id, by, json } => control::approve(&fleet, &id, &by, json).await,
        Command::Deny {
            id,
            reason,
            by,
            json,
        } => control::deny(&fleet, &id, reason.as_deref(), &by, json).await,
        // Answered above: completion without NATS, setup before the fleet is bound.
        Command::Completion { .. } | Command::Setup(_) => EXIT_OK,
    };
    // Publishes are awaited, but make sure nothing is left in the client's buffer.
    fleet.flush().await;
    code
}
