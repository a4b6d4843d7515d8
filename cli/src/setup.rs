//! `fleet setup`: creates or updates the fleet's streams, buckets and durable consumers.
//!
//! Meant for the NATS admin user. Dispatchers and workers that run with
//! `FLEET_MANAGE_STREAMS=false` (a NATS user without stream-admin rights) create nothing and
//! bind to what this command made: the four streams, the two buckets, the dispatchers'
//! consumer and one consumer per task of `--tasks` (default: the built-in tasks). A worker
//! running a task of its own needs `fleet setup --tasks <its tasks>` first. Running it again is
//! harmless: everything is created or updated in place, with the stream settings
//! (`FLEET_STREAM_REPLICAS`, `FLEET_RESULT_TTL`) and the consumers' `--ack-wait` given here.

use std::time::Duration;

use clap::Args;
use fleet_common::{
    Error,
    config::{NatsArgs, parse_duration},
    topology::Fleet,
};
use serde_json::json;

use crate::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

/// The tasks built into the worker (`worker/src/tasks`), whose consumers `fleet setup` makes by
/// default.
pub(crate) const BUILTIN_TASKS: [&str; 4] =
    ["github.repo_info", "text.transform", "chat", "note.append"];

/// Default redelivery deadline of the consumers (the services' `FLEET_ACK_WAIT` default).
const DEFAULT_ACK_WAIT: &str = "30s";

/// `fleet setup`'s flags.
#[derive(Debug, Args)]
pub(crate) struct SetupArgs {
    /// Tasks whose worker consumers to create, comma-separated (default: the built-in tasks
    /// github.repo_info, text.transform, chat).
    #[arg(long, env = "FLEET_TASKS", value_delimiter = ',', value_name = "TASKS")]
    pub(crate) tasks: Vec<String>,

    /// Redelivery deadline of the consumers; give the dispatchers and workers the same
    /// FLEET_ACK_WAIT.
    #[arg(long, env = "FLEET_ACK_WAIT", default_value = DEFAULT_ACK_WAIT, value_parser = parse_duration)]
    pub(crate) ack_wait: Duration,

    /// Print JSON: {"streams": […], "buckets": […], "consumers": [{"stream", "consumer"}]}.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs `fleet setup` on a fresh connection (the fleet may not exist yet).
pub(crate) async fn setup(client: async_nats::Client, nats: &NatsArgs, args: SetupArgs) -> i32 {
    let tasks: Vec<String> = if args.tasks.is_empty() {
        BUILTIN_TASKS.iter().map(|t| (*t).to_owned()).collect()
    } else {
        args.tasks
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect()
    };
    let fleet = match Fleet::setup(client, nats).await {
        Ok(fleet) => fleet,
        Err(e) => {
            eprintln!("fleet: {e}");
            return EXIT_FAILED;
        }
    };
    let consumers = match fleet.setup_consumers(&tasks, args.ack_wait).await {
        Ok(made) => made,
        Err(e @ Error::Config(_)) => {
            eprintln!("fleet: {e}");
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("fleet: {e}");
            return EXIT_FAILED;
        }
    };
    let t = fleet.topology();
    let streams = [
        t.requests_stream(),
        t.tasks_stream(),
        t.results_stream(),
        t.dlq_stream(),
    ];
    let buckets = [t.status_bucket(), t.catalog_bucket()];
    if args.json {
        let consumers: Vec<_> = consumers
            .iter()
            .map(|(stream, name)| json!({"stream": stream, "consumer": name}))
            .collect();
        let out = json!({"streams": streams, "buckets": buckets, "consumers": consumers});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!("streams:   {}", streams.join(", "));
        println!("buckets:   {}", buckets.join(", "));
        for (stream, name) in &consumers {
            println!("consumer:  {name} on {stream}");
        }
    }
    EXIT_OK
}
