//! `fleet-bench bench`: the fleet against the broker's best, measured in one run.
//!
//! Every scenario gets a fresh `nats-server` (same binary, same machine), a warm-up, then three
//! measurements with explicit `text.transform` requests: a burst (all requests at once), a run
//! at a fixed number in flight (64), and a run at 1 in flight for the latency of a lone request.
//!
//! - `relay-min` ([`Variant::minimal`]) is the broker's best for the two hops: a bare
//!   async-nats relay, one publish (ack awaited) and one explicit ack per hop.
//! - `fleet` is the real dispatcher and 2 workers as processes with **default settings** (no
//!   `FLEET_CONCURRENCY`, no `FLEET_TASKS`, default prefix and log level); `fleet-c<N>` are the
//!   same with `FLEET_CONCURRENCY=N` (`--sweep`), to choose the default from measurement.
//! - `--relay-candidates` adds the other ways of running `relay-min` that were measured to
//!   choose it; `--profile` adds the relays that mirror the fleet's round trips at its pull
//!   loop (`relay-full`) and in between.
//!
//! The ratios printed are fleet ÷ relay-min from the same run. Nothing here is asserted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_testkit::{NatsServer, TempDir, process::rss_kib};
use serde::Serialize;

use crate::{
    Error,
    load::{self, LoadResult, Mode},
    proc::{self, FleetProcs},
    relay::{self, Variant},
};

/// How long a fleet process may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The sizes of a bench run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Where the release-built `dispatcher` and `worker` are.
    pub bin_dir: PathBuf,
    /// Requests in the burst, and in the fixed-concurrency run.
    pub requests: usize,
    /// Requests in flight in the fixed-concurrency run.
    pub concurrency: usize,
    /// Requests sent one at a time for the lone-request latency.
    pub serial_requests: usize,
    /// Requests sent before measuring, to warm connections and streams.
    pub warmup: usize,
    /// Worker processes of the fleet.
    pub workers: usize,
    /// Also run the fleet with `FLEET_CONCURRENCY` set to each of these.
    pub sweep: Vec<usize>,
    /// Also run every candidate way of running `relay-min`.
    pub relay_candidates: bool,
    /// Also run the relays that mirror the fleet's round trips (`relay-full` and between).
    pub profile: bool,
    /// Per-stage concurrency of the profiling relays (the fleet's default, 16).
    pub stage_concurrency: usize,
    /// How long one measurement may take before it is called failed.
    pub timeout: Duration,
    /// Run only the scenarios with these names (all when empty).
    pub only: Vec<String>,
}

/// What a process cost.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessFigures {
    /// `dispatcher`, `worker w0`, `nats-server`.
    pub process: String,
    /// From spawn to `/readyz` answering 200, milliseconds (none for nats-server).
    pub start_to_ready_ms: Option<f64>,
    /// Resident memory once ready, before load, KiB.
    pub idle_rss_kib: Option<u64>,
    /// Highest resident memory seen during the measurements, KiB.
    pub loaded_rss_kib: Option<u64>,
    /// CPU time (user + system) the process used per request during the run at the fixed
    /// concurrency, microseconds (`bench` is this process: the load client, and for a relay
    /// its two stages).
    pub cpu_us_per_request: Option<f64>,
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Its name, such as `relay-min`, `fleet` or `fleet-c64`.
    pub name: String,
    /// What it is, in words.
    pub about: String,
    /// All requests at once.
    pub burst: LoadResult,
    /// At the fixed concurrency.
    pub concurrent: LoadResult,
    /// One request at a time.
    pub serial: LoadResult,
    /// Process figures (the fleet's processes, and nats-server).
    pub processes: Vec<ProcessFigures>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `nproc`.
    pub nproc: usize,
    /// Total memory, KiB.
    pub mem_total_kib: u64,
    /// `nats-server --version`.
    pub nats_server: String,
    /// Requests in the burst and in the fixed-concurrency run.
    pub requests: usize,
    /// In flight in the fixed-concurrency runs.
    pub concurrency: usize,
    /// Requests of the one-at-a-time run.
    pub serial_requests: usize,
    /// Worker processes of the fleet.
    pub workers: usize,
    /// Every scenario, in run order.
    pub scenarios: Vec<Scenario>,
    /// Fleet ÷ relay-min, from this run: `<fleet>/relay-min.<figure>`.
    pub ratios: BTreeMap<String, f64>,
}

/// A relay or fleet to measure.
enum Target {
    /// A bare relay.
    Relay(Variant),
    /// The fleet's processes, with these settings on top of the defaults.
    Fleet(Vec<(&'static str, String)>),
}

/// Runs every scenario and returns the figures.
///
/// # Errors
///
/// When a binary is missing, a process fails, or a measurement times out.
pub async fn run(config: &BenchConfig) -> Result<BenchReport, Error> {
    let workers = config.workers.max(1);
    let mut targets = vec![(
        "the broker's best: 1 publish + 1 ack per hop, pull stream, 1024 in flight per stage"
            .to_owned(),
        Target::Relay(Variant::minimal()),
    )];
    if config.relay_candidates {
        for v in Variant::min_candidates() {
            let about = format!(
                "relay-min candidate: {:?} pull, {} in flight, batch {}",
                v.pull, v.concurrency, v.batch
            );
            targets.push((about, Target::Relay(v)));
        }
    }
    if config.profile {
        let c = config.stage_concurrency;
        let mut headers = Variant::minimal_bounded(c);
        headers.name = "relay-min-headers".into();
        headers.headers = true;
        let mut json = headers.clone();
        json.name = "relay-nostatus".into();
        json.json = true;
        targets.extend([
            (
                format!("rmin-bounded-c{c} + Nats-Msg-Id / expected-last-subject-seq headers"),
                Target::Relay(headers),
            ),
            (
                "relay-full without the 4 status writes".to_owned(),
                Target::Relay(json),
            ),
            (
                format!("the fleet's round trips one to one, its pull loop at {c}"),
                Target::Relay(Variant::full(c)),
            ),
            (
                "the fleet's round trips today (guard, task, result, final state), the fleet's pull loop at 64".to_owned(),
                Target::Relay(Variant::lean(relay::PullStyle::Bounded, 64)),
            ),
            (
                "the fleet's round trips today, relay-min's inline handlers at 64".to_owned(),
                Target::Relay(Variant::lean(relay::PullStyle::Inline, 64)),
            ),
        ]);
    }
    targets.push((
        format!("dispatcher + {workers} workers, default settings"),
        Target::Fleet(vec![]),
    ));
    for &c in &config.sweep {
        targets.push((
            format!("dispatcher + {workers} workers, FLEET_CONCURRENCY={c}"),
            Target::Fleet(vec![("FLEET_CONCURRENCY", c.to_string())]),
        ));
    }

    let named: Vec<(String, String, Target)> = targets
        .into_iter()
        .map(|(about, target)| {
            let name = match &target {
                Target::Relay(v) => v.name.clone(),
                Target::Fleet(extra) => match extra.first() {
                    Some((_, c)) => format!("fleet-c{c}"),
                    None => "fleet".to_owned(),
                },
            };
            (name, about, target)
        })
        .filter(|(name, _, _)| config.only.is_empty() || config.only.contains(name))
        .collect();
    // Fail before measuring anything when the fleet's binaries are missing.
    if named.iter().any(|(_, _, t)| matches!(t, Target::Fleet(_))) {
        proc::check_binaries(&config.bin_dir)?;
    }
    let mut scenarios = Vec::new();
    for (name, about, target) in named {
        eprintln!("bench: {name}");
        let scenario = match target {
            Target::Relay(variant) => relay_scenario(config, variant, about).await?,
            Target::Fleet(extra) => fleet_scenario(config, &name, &extra, about).await?,
        };
        scenarios.push(scenario);
    }

    let mut ratios = BTreeMap::new();
    if let Some(relay) = scenarios.iter().find(|s| s.name == "relay-min") {
        for fleet in scenarios.iter().filter(|s| s.name.starts_with("fleet")) {
            let mut put = |figure: &str, f: f64, r: f64| {
                if r > 0.0 {
                    ratios.insert(format!("{}/relay-min.{figure}", fleet.name), f / r);
                }
            };
            let c = config.concurrency;
            put(
                &format!("throughput_c{c}"),
                fleet.concurrent.throughput_rps,
                relay.concurrent.throughput_rps,
            );
            put(
                "throughput_burst",
                fleet.burst.throughput_rps,
                relay.burst.throughput_rps,
            );
            put("p50_c1", fleet.serial.p50_ms, relay.serial.p50_ms);
            put(
                &format!("p50_c{c}"),
                fleet.concurrent.p50_ms,
                relay.concurrent.p50_ms,
            );
        }
    }
    Ok(BenchReport {
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        mem_total_kib: mem_total_kib(),
        nats_server: fleet_testkit::nats::version(),
        requests: config.requests,
        concurrency: config.concurrency,
        serial_requests: config.serial_requests,
        workers,
        scenarios,
        ratios,
    })
}

/// Starts a fresh server and a relay, and measures it.
async fn relay_scenario(
    config: &BenchConfig,
    variant: Variant,
    about: String,
) -> Result<Scenario, Error> {
    let nats = NatsServer::start()?;
    let name = variant.name.clone();
    let prefix = "relay";
    let relay = relay::start(&nats.url(), prefix, variant).await?;
    let client = client(&nats.url()).await?;
    let pids = vec![("nats-server".to_owned(), nats.pid().unwrap_or(0))];
    let idle = rss_of(&pids);
    let m = measure(config, &client, prefix, &pids).await?;
    drop(relay);
    Ok(Scenario {
        name,
        about,
        processes: figures(&pids, &BTreeMap::new(), &idle, &m),
        burst: m.burst,
        concurrent: m.concurrent,
        serial: m.serial,
    })
}

/// Starts a fresh server and fleet, measures start-up, memory and load.
async fn fleet_scenario(
    config: &BenchConfig,
    name: &str,
    extra: &[(&str, String)],
    about: String,
) -> Result<Scenario, Error> {
    let nats = NatsServer::start()?;
    let logs = TempDir::new(&format!("bench-{name}"))?;
    let settings: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let workers = config.workers.max(1);
    let mut fleet = FleetProcs::new(
        &config.bin_dir,
        logs.path(),
        &nats.url(),
        &settings,
        workers,
    )?;
    let ready = fleet.start_all(READY_TIMEOUT).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut pids = fleet.pids();
    pids.push(("nats-server".to_owned(), nats.pid().unwrap_or(0)));
    let idle = rss_of(&pids);
    let client = client(&nats.url()).await?;
    // The fleet's default prefix.
    let m = measure(config, &client, "fleet", &pids).await?;
    drop(fleet);
    Ok(Scenario {
        name: name.to_owned(),
        about,
        processes: figures(&pids, &ready, &idle, &m),
        burst: m.burst,
        concurrent: m.concurrent,
        serial: m.serial,
    })
}

/// The resident memory of each process now.
fn rss_of(pids: &[(String, u32)]) -> BTreeMap<String, u64> {
    pids.iter()
        .filter_map(|(n, pid)| Some((n.clone(), rss_kib(*pid)?)))
        .collect()
}

/// The process figures of a scenario.
fn figures(
    pids: &[(String, u32)],
    ready: &BTreeMap<String, Duration>,
    idle: &BTreeMap<String, u64>,
    measured: &Measured,
) -> Vec<ProcessFigures> {
    pids.iter()
        .map(|(n, _)| n.as_str())
        .chain(std::iter::once("bench"))
        .map(|n| ProcessFigures {
            process: n.to_owned(),
            start_to_ready_ms: ready.get(n).map(|d| d.as_secs_f64() * 1000.0),
            idle_rss_kib: idle.get(n).copied(),
            loaded_rss_kib: measured.loaded.get(n).copied(),
            cpu_us_per_request: measured.cpu.get(n).copied(),
        })
        .collect()
}

/// Warm-up, burst, fixed concurrency, then one at a time, with the peak RSS of `procs` sampled
/// all along.
async fn measure(
    config: &BenchConfig,
    client: &async_nats::Client,
    prefix: &str,
    procs: &[(String, u32)],
) -> Result<Measured, Error> {
    let (n, t) = (config.requests, config.timeout);
    let c = Mode::Concurrent(config.concurrency);
    load::run(client, prefix, "warm", config.warmup, c, t).await?;
    let peaks: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let sampler = {
        let peaks = peaks.clone();
        let procs = procs.to_vec();
        tokio::spawn(async move {
            loop {
                for (name, rss) in rss_of(&procs) {
                    if let Ok(mut map) = peaks.lock() {
                        let peak = map.entry(name).or_insert(0);
                        *peak = (*peak).max(rss);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let measured = async {
        let burst = load::run(client, prefix, "burst", n, Mode::Burst, t).await?;
        let before = cpu_of(procs);
        let concurrent = load::run(client, prefix, "conc", n, c, t).await?;
        let after = cpu_of(procs);
        let cpu: BTreeMap<String, f64> = after
            .iter()
            .filter_map(|(name, end)| {
                let start = before.get(name)?;
                let us = end.saturating_sub(*start) as f64 * 1e6 / CLOCK_TICKS;
                Some((name.clone(), us / concurrent.completed.max(1) as f64))
            })
            .collect();
        let serial = load::run(
            client,
            prefix,
            "one",
            config.serial_requests,
            Mode::Concurrent(1),
            t,
        )
        .await?;
        Ok::<_, Error>((burst, concurrent, serial, cpu))
    }
    .await;
    sampler.abort();
    let (burst, concurrent, serial, cpu) = measured?;
    let loaded = peaks.lock().map(|m| m.clone()).unwrap_or_default();
    Ok(Measured {
        burst,
        concurrent,
        serial,
        loaded,
        cpu,
    })
}

/// What [`measure`] found.
struct Measured {
    burst: LoadResult,
    concurrent: LoadResult,
    serial: LoadResult,
    /// Peak RSS per process, KiB.
    loaded: BTreeMap<String, u64>,
    /// CPU microseconds per request per process, at the fixed concurrency.
    cpu: BTreeMap<String, f64>,
}

/// User + system CPU time of each process (and of this one, as `bench`), in clock ticks.
fn cpu_of(pids: &[(String, u32)]) -> BTreeMap<String, u64> {
    let ticks = |path: &str| -> Option<u64> {
        let stat = std::fs::read_to_string(path).ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    };
    pids.iter()
        .filter_map(|(n, pid)| Some((n.clone(), ticks(&format!("/proc/{pid}/stat"))?)))
        .chain(ticks("/proc/self/stat").map(|t| ("bench".to_owned(), t)))
        .collect()
}

/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

/// The bench's own client connection.
async fn client(url: &str) -> Result<async_nats::Client, Error> {
    async_nats::connect(url)
        .await
        .map_err(|e| Error::nats(format!("connect to {url}"), e))
}

/// `MemTotal` of `/proc/meminfo`, KiB.
fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

// === impl BenchReport ===

impl BenchReport {
    /// The report as text tables.
    pub fn table(&self) -> String {
        let c = self.concurrency;
        let mut out = format!(
            "machine: {} cores, {:.1} GiB, {}\nburst of {n}; {n} requests at {c} in flight; {} at 1 in flight; fleet = dispatcher + {} workers\n\n",
            self.nproc,
            self.mem_total_kib as f64 / 1024.0 / 1024.0,
            self.nats_server,
            self.serial_requests,
            self.workers,
            n = self.requests,
        );
        out.push_str(&format!(
            "{:<22} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}\n",
            "scenario",
            "burst r/s",
            format!("c{c} r/s"),
            "p50 ms",
            "p99 ms",
            "c1 p50",
            "c1 p99"
        ));
        for s in &self.scenarios {
            out.push_str(&format!(
                "{:<22} {:>10.0} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                s.name,
                s.burst.throughput_rps,
                s.concurrent.throughput_rps,
                s.concurrent.p50_ms,
                s.concurrent.p99_ms,
                s.serial.p50_ms,
                s.serial.p99_ms,
            ));
        }
        out.push_str(&format!(
            "\n{:<22} {:<14} {:>14} {:>12} {:>14} {:>12}\n",
            "scenario", "process", "start→ready ms", "idle RSS MiB", "loaded RSS MiB", "CPU µs/req"
        ));
        let mib =
            |k: Option<u64>| k.map_or("-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
        for s in &self.scenarios {
            for p in &s.processes {
                out.push_str(&format!(
                    "{:<22} {:<14} {:>14} {:>12} {:>14} {:>12}\n",
                    s.name,
                    p.process,
                    p.start_to_ready_ms
                        .map_or("-".to_owned(), |t| format!("{t:.0}")),
                    mib(p.idle_rss_kib),
                    mib(p.loaded_rss_kib),
                    p.cpu_us_per_request
                        .map_or("-".to_owned(), |us| format!("{us:.0}")),
                ));
            }
        }
        if !self.ratios.is_empty() {
            out.push_str("\nratios (same run):\n");
        }
        for (k, v) in &self.ratios {
            out.push_str(&format!("{k:<40} {v:>7.3}\n"));
        }
        out
    }
}
