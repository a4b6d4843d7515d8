//! `fleet-bench`: `bench` (the fleet against the broker's own limit) and `chaos` (kills and
//! restarts, then exactly one result per request). Build the fleet first:
//! `cargo build --release --workspace --bins`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleet_bench::{
    bench::BenchConfig, chaos::ChaosConfig, classify::ClassifyConfig, delays::DelaysConfig,
    priority::PriorityConfig,
};

/// Benchmarks and chaos runs of the fleet on a nats-server of their own.
///
/// Build the fleet first: `cargo build --release --workspace --bins`.
#[derive(Debug, Parser)]
#[command(version)]
struct Config {
    /// Directory holding the `dispatcher` and `worker` binaries [default: the directory of
    /// fleet-bench itself, e.g. target/release].
    #[arg(long, env = "FLEET_BENCH_BIN_DIR", global = true)]
    bin_dir: Option<PathBuf>,
    /// What to run.
    #[command(subcommand)]
    command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Dispatcher throughput when a (scripted, slow) LLM routes every request.
    Classify {
        /// Requests per concurrency setting.
        #[arg(long, default_value_t = 300)]
        requests: usize,
        /// Concurrency settings (FLEET_CONCURRENCY = FLEET_LLM_CONCURRENCY), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
        concurrency: Vec<usize>,
        /// How long the scripted LLM takes to answer.
        #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
        llm_delay: Duration,
        /// How long one measurement may take.
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// How late delayed requests start: many requests with `not_before` times spread over a
    /// window, on an idle fleet; p50/p99/max of result time minus `not_before`.
    Delays {
        /// Delayed requests.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Time from the first publish to the first `not_before`.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        lead: Duration,
        /// The `not_before` times are spread evenly over this window.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        spread: Duration,
        /// How long to wait for the last result after the last `not_before`.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Priority under a backlog: how many queued requests start before a high one behind
    /// them (low and normal backlogs, a first-in-first-out control, the probe arriving
    /// mid-drain), and low work's share under a high backlog.
    Priority {
        /// Requests queued ahead of the high one.
        #[arg(long, default_value_t = 5000)]
        backlog: usize,
        /// Worker processes (default settings each).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// How long each task (github.repo_info against a fake GitHub) takes.
        #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
        task_delay: Duration,
        /// How long one round may take.
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// relay-min (the broker's best) against the fleet (dispatcher + 2 workers, default
    /// settings): throughput in a burst and at 64 in flight, latency at 1 in flight, start-up,
    /// memory; the ratios from the same run.
    Bench {
        /// Requests in the burst, and in the fixed-concurrency run.
        #[arg(long, env = "FLEET_BENCH_REQUESTS", default_value_t = 20000)]
        requests: usize,
        /// Requests in flight in the fixed-concurrency run.
        #[arg(long, env = "FLEET_BENCH_CONCURRENCY", default_value_t = 64)]
        concurrency: usize,
        /// Requests sent one at a time, for the latency of a lone request.
        #[arg(long, env = "FLEET_BENCH_SERIAL_REQUESTS", default_value_t = 1000)]
        serial_requests: usize,
        /// Requests sent before measuring.
        #[arg(long, env = "FLEET_BENCH_WARMUP", default_value_t = 500)]
        warmup: usize,
        /// Worker processes of the fleet.
        #[arg(long, env = "FLEET_BENCH_WORKERS", default_value_t = 2)]
        workers: usize,
        /// Also run the fleet with FLEET_CONCURRENCY set to each of these (comma-separated),
        /// e.g. 16,32,64,128.
        #[arg(long, env = "FLEET_BENCH_SWEEP", value_delimiter = ',')]
        sweep: Vec<usize>,
        /// Also run the other candidate ways of running relay-min, side by side.
        #[arg(long, env = "FLEET_BENCH_RELAY_CANDIDATES")]
        relay_candidates: bool,
        /// Also run the relays that mirror the fleet's round trips (relay-full, and between).
        #[arg(long, env = "FLEET_BENCH_PROFILE")]
        profile: bool,
        /// Per-stage concurrency of the --profile relays (the fleet's default).
        #[arg(long, env = "FLEET_BENCH_STAGE_CONCURRENCY", default_value_t = 16)]
        stage_concurrency: usize,
        /// How long one measurement may take.
        #[arg(long, env = "FLEET_BENCH_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Run only these scenarios (comma-separated names, e.g. relay-min,fleet,fleet-c64).
        #[arg(long, env = "FLEET_BENCH_ONLY", value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Requests under worker kills, freezes and restarts; exits 1 when a result is lost or
    /// stored twice, a final status is not its result's, or an id has several dead letters.
    Chaos {
        /// Requests to publish.
        #[arg(long, env = "FLEET_CHAOS_REQUESTS", default_value_t = 3000)]
        requests: usize,
        /// The chaos window, over which the requests are published evenly.
        #[arg(long, env = "FLEET_CHAOS_DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Worker processes.
        #[arg(long, env = "FLEET_CHAOS_WORKERS", default_value_t = 2)]
        workers: usize,
        /// Worker freezes during the window (SIGSTOP past the ack wait, then SIGCONT).
        #[arg(long, env = "FLEET_CHAOS_WORKER_STOPS", default_value_t = 3)]
        worker_stops: usize,
        /// How long a frozen worker stays frozen (longer than --ack-wait).
        #[arg(long, env = "FLEET_CHAOS_STOP_FOR", default_value = "3s", value_parser = humantime::parse_duration)]
        stop_for: Duration,
        /// FLEET_ACK_WAIT of the chaos fleet.
        #[arg(long, env = "FLEET_CHAOS_ACK_WAIT", default_value = "2s", value_parser = humantime::parse_duration)]
        ack_wait: Duration,
        /// How long the fake GitHub takes to answer (tasks in flight when a worker dies).
        #[arg(long, env = "FLEET_CHAOS_TASK_DELAY", default_value = "100ms", value_parser = humantime::parse_duration)]
        task_delay: Duration,
        /// Dispatcher restarts during the window (first SIGTERM, then SIGKILL).
        #[arg(long, env = "FLEET_CHAOS_DISPATCHER_RESTARTS", default_value_t = 2)]
        dispatcher_restarts: usize,
        /// Do not restart nats-server.
        #[arg(long, env = "FLEET_CHAOS_NO_NATS_RESTART")]
        no_nats_restart: bool,
        /// Restart nats-server with SIGKILL instead of SIGTERM (with --cluster: stop nodes with
        /// SIGKILL only, instead of SIGKILL and SIGTERM in turn).
        #[arg(long, env = "FLEET_CHAOS_NATS_SIGKILL")]
        nats_sigkill: bool,
        /// Run on a three-node NATS cluster with R3 streams (FLEET_STREAM_REPLICAS=3, every
        /// process given the three URLs) of the current nats-server at NATS_SERVER_CURRENT_BIN
        /// (`scripts/ensure-nats.sh --current` installs one and prints its path); nodes are
        /// killed and started again instead of the one nats-server restart.
        #[arg(long, env = "FLEET_CHAOS_CLUSTER")]
        cluster: bool,
        /// With --cluster: node kills during the window, each aimed at the leader of one of the
        /// fleet's streams or consumers in turn, one node down at a time.
        #[arg(long, env = "FLEET_CHAOS_NODE_KILLS", default_value_t = 4)]
        node_kills: usize,
        /// With --cluster: how long a killed node stays down.
        #[arg(long, env = "FLEET_CHAOS_NODE_DOWN", default_value = "2s", value_parser = humantime::parse_duration)]
        node_down: Duration,
        /// With --cluster: give each process one node's URL (in turn) instead of all three;
        /// it learns the others from the server's INFO.
        #[arg(long, env = "FLEET_CHAOS_ONE_URL_EACH")]
        one_url_each: bool,
        /// Seed of the random kill times and victims.
        #[arg(long, env = "FLEET_CHAOS_SEED", default_value_t = 0x5eed_f1ee7)]
        seed: u64,
        /// How long to wait for the last results after the window.
        #[arg(long, env = "FLEET_CHAOS_SETTLE", default_value = "120s", value_parser = humantime::parse_duration)]
        settle: Duration,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let config = Config::parse();
    let bin_dir = config.bin_dir.unwrap_or_else(fleet_bench::default_bin_dir);
    match config.command {
        Command::Bench {
            requests,
            concurrency,
            serial_requests,
            warmup,
            workers,
            sweep,
            relay_candidates,
            profile,
            stage_concurrency,
            timeout,
            only,
        } => {
            let report = fleet_bench::bench::run(&BenchConfig {
                bin_dir,
                requests,
                concurrency,
                serial_requests,
                warmup,
                workers,
                sweep,
                relay_candidates,
                profile,
                stage_concurrency,
                timeout,
                only,
            })
            .await
            .context("bench failed")?;
            println!("{}", report.table());
            println!("{}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Delays {
            requests,
            lead,
            spread,
            timeout,
        } => {
            let report = fleet_bench::delays::run(&DelaysConfig {
                bin_dir,
                requests,
                lead,
                spread,
                timeout,
            })
            .await
            .context("delay benchmark failed")?;
            println!("{}", report.table());
            println!("{}", serde_json::to_string(&report)?);
            Ok(
                if report.early == 0 && report.completed == report.requests {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                },
            )
        }
        Command::Priority {
            backlog,
            workers,
            task_delay,
            timeout,
        } => {
            let config = PriorityConfig {
                bin_dir,
                backlog,
                workers,
                task_delay,
                timeout,
            };
            let rounds = fleet_bench::priority::run(&config)
                .await
                .context("priority benchmark failed")?;
            println!("{}", fleet_bench::priority::table(&rounds, &config));
            println!("{}", serde_json::to_string(&rounds)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Classify {
            requests,
            concurrency,
            llm_delay,
            timeout,
        } => {
            let rows = fleet_bench::classify::run(&ClassifyConfig {
                bin_dir,
                requests,
                concurrency,
                llm_delay,
                timeout,
            })
            .await
            .context("routing benchmark failed")?;
            println!("{}", fleet_bench::classify::table(&rows, llm_delay));
            println!("{}", serde_json::to_string(&rows)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Chaos {
            requests,
            duration,
            workers,
            worker_stops,
            stop_for,
            ack_wait,
            task_delay,
            dispatcher_restarts,
            no_nats_restart,
            nats_sigkill,
            cluster,
            node_kills,
            node_down,
            one_url_each,
            seed,
            settle,
        } => {
            let report = fleet_bench::chaos::run(&ChaosConfig {
                bin_dir,
                requests,
                duration,
                workers,
                worker_stops,
                stop_for,
                ack_wait,
                task_delay,
                dispatcher_restarts,
                nats_restart: !no_nats_restart,
                nats_sigkill,
                cluster,
                node_kills,
                node_down,
                one_url_each,
                seed,
                settle_timeout: settle,
                ..Default::default()
            })
            .await
            .context("chaos run failed")?;
            println!("{}", report.table());
            println!("{}", serde_json::to_string(&report)?);
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
