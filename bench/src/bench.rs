//! `fleet-bench bench`: the fleet against the broker's own limit, measured in one run.
//!
//! Every scenario gets a fresh `nats-server` (same binary, same machine), a warm-up, then the
//! same requests twice: in a burst and at a fixed concurrency. The relays of [`crate::relay`]
//! give the broker's limit for the fleet's exact round trips (`relay-full`) and for one publish
//! and one ack per hop (`relay-min`); the variants in between show what each kind of round trip
//! costs. The fleet runs as real processes with 1, 2 and 4 workers, and with settings variants.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::{
    Error,
    load::{self, LoadResult, Mode},
    proc::{self, FleetProcs},
    relay::{self, PullStyle, Variant},
};
use fleet_testkit::{NatsServer, TempDir, process::rss_kib};

/// The sizes of a bench run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Where the release-built `dispatcher` and `worker` are.
    pub bin_dir: PathBuf,
    /// Requests per measurement (the burst and the fixed-concurrency run each send this many).
    pub requests: usize,
    /// Requests in flight in the fixed-concurrency run.
    pub concurrency: usize,
    /// Requests sent before measuring, to warm connections and streams.
    pub warmup: usize,
    /// The worker counts to run the fleet with.
    pub workers: Vec<usize>,
    /// `FLEET_CONCURRENCY` of the fleet's processes, and the relays' per-stage concurrency.
    pub stage_concurrency: usize,
    /// Run the profiling variants (relay and fleet) besides the main comparison.
    pub variants: bool,
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
    /// Highest resident memory seen during the fixed-concurrency run, KiB.
    pub loaded_rss_kib: Option<u64>,
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Its name, such as `relay-full` or `fleet-1w`.
    pub name: String,
    /// What it is, in words.
    pub about: String,
    /// All requests at once.
    pub burst: LoadResult,
    /// At the fixed concurrency.
    pub concurrent: LoadResult,
    /// Process figures (fleet scenarios; nats-server always).
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
    /// Requests per measurement.
    pub requests: usize,
    /// In flight in the fixed-concurrency runs.
    pub concurrency: usize,
    /// `FLEET_CONCURRENCY` and relay stage concurrency.
    pub stage_concurrency: usize,
    /// Every scenario, in run order.
    pub scenarios: Vec<Scenario>,
    /// Fleet ÷ relay ratios, from this run: `<fleet>/<relay>.<figure>`.
    pub ratios: BTreeMap<String, f64>,
}

/// Runs every scenario and returns the figures.
///
/// # Errors
///
/// When a binary is missing, a process fails, or a measurement times out.
pub async fn run(config: &BenchConfig) -> Result<BenchReport, Error> {
    proc::check_binaries(&config.bin_dir)?;
    let c = config.stage_concurrency;
    let mut relays = vec![
        (
            Variant::minimal(c),
            "1 publish + 1 ack per hop, tiny bodies",
        ),
        (Variant::full(c), "the fleet's round trips one to one"),
    ];
    if config.variants {
        let mut headers = Variant::minimal(c);
        headers.name = "relay-min-headers".into();
        headers.headers = true;
        let mut json = headers.clone();
        json.name = "relay-nostatus".into();
        json.json = true;
        let mut stream = Variant::full(c);
        stream.name = "relay-full-stream".into();
        stream.pull = PullStyle::Stream;
        let mut wide = Variant::full(config.concurrency.max(c));
        wide.name = format!("relay-full-c{}", config.concurrency.max(c));
        relays.extend([
            (
                headers,
                "relay-min + Nats-Msg-Id / expected-last-subject-seq headers",
            ),
            (json, "relay-full without the 4 status writes"),
            (stream, "relay-full with a continuous pull stream"),
            (
                wide,
                "relay-full with stage concurrency = client concurrency",
            ),
        ]);
    }

    let mut scenarios = Vec::new();
    let nats_version = fleet_testkit::nats::version();
    let wanted = |name: &str| config.only.is_empty() || config.only.iter().any(|o| o == name);
    // The continuous pull stream showed no gain over the bounded loop; it only runs when asked
    // for by name (`--only relay-full-stream`).
    relays.retain(|(v, _)| {
        wanted(&v.name) && (v.pull == PullStyle::Bounded || config.only.contains(&v.name))
    });
    for (variant, about) in relays {
        let nats = NatsServer::start()?;
        let name = variant.name.clone();
        eprintln!("bench: {name}");
        let prefix = name.replace("relay-", "r");
        let relay = relay::start(&nats.url(), &prefix, variant).await?;
        let client = client(&nats.url()).await?;
        let (burst, concurrent, loaded) =
            measure(config, &client, &prefix, &[("nats-server", nats.pid())]).await?;
        drop(relay);
        scenarios.push(Scenario {
            name,
            about: about.into(),
            burst,
            concurrent,
            processes: vec![nats_figures(&nats, &loaded)],
        });
    }

    let mut fleets: Vec<FleetSpec> = config
        .workers
        .iter()
        .map(|&w| FleetSpec {
            name: format!("fleet-{w}w"),
            workers: w,
            extra: vec![],
            about: format!("dispatcher + {w} worker(s), FLEET_CONCURRENCY={c}"),
        })
        .collect();
    if config.variants {
        let wide = config.concurrency.max(c);
        fleets.push(FleetSpec {
            name: format!("fleet-1w-c{wide}"),
            workers: 1,
            extra: vec![("FLEET_CONCURRENCY", wide.to_string())],
            about: format!("fleet-1w with FLEET_CONCURRENCY={wide}"),
        });
        fleets.push(FleetSpec {
            name: "fleet-1w-warnlog".into(),
            workers: 1,
            extra: vec![("RUST_LOG", "warn".into())],
            about: "fleet-1w with RUST_LOG=warn (no per-request info logs)".into(),
        });
    }
    fleets.retain(|f| wanted(&f.name));
    for spec in fleets {
        eprintln!("bench: {}", spec.name);
        scenarios.push(fleet_scenario(config, spec).await?);
    }

    let mut ratios = BTreeMap::new();
    let find = |n: &str| scenarios.iter().find(|s| s.name == n);
    if let Some(fleet) = find("fleet-1w") {
        for relay in ["relay-full", "relay-min"] {
            let Some(r) = find(relay) else { continue };
            let mut put = |figure: &str, f: f64, r: f64| {
                if r > 0.0 {
                    ratios.insert(format!("fleet-1w/{relay}.{figure}"), f / r);
                }
            };
            put(
                "throughput_c",
                fleet.concurrent.throughput_rps,
                r.concurrent.throughput_rps,
            );
            put(
                "throughput_burst",
                fleet.burst.throughput_rps,
                r.burst.throughput_rps,
            );
            put("p50_c", fleet.concurrent.p50_ms, r.concurrent.p50_ms);
            put("p99_c", fleet.concurrent.p99_ms, r.concurrent.p99_ms);
        }
    }
    Ok(BenchReport {
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        mem_total_kib: mem_total_kib(),
        nats_server: nats_version,
        requests: config.requests,
        concurrency: config.concurrency,
        stage_concurrency: c,
        scenarios,
        ratios,
    })
}

/// One fleet scenario to run.
struct FleetSpec {
    /// Its name in the tables.
    name: String,
    /// Worker processes.
    workers: usize,
    /// Settings on top of the bench's.
    extra: Vec<(&'static str, String)>,
    /// What it is, in words.
    about: String,
}

/// Starts a fresh server and fleet, measures start-up, memory and load.
async fn fleet_scenario(config: &BenchConfig, spec: FleetSpec) -> Result<Scenario, Error> {
    let FleetSpec {
        name,
        workers,
        extra,
        about,
    } = spec;
    let name = name.as_str();
    let nats = NatsServer::start()?;
    let logs = TempDir::new(name)?;
    let c = config.stage_concurrency.to_string();
    let mut settings: Vec<(&str, &str)> = vec![
        ("FLEET_PREFIX", "bench"),
        ("FLEET_CONCURRENCY", &c),
        ("FLEET_TASKS", "text.transform"),
        ("RUST_LOG", "info"),
    ];
    for (k, v) in &extra {
        settings.retain(|(key, _)| key != k);
        settings.push((k, v));
    }
    let mut fleet = FleetProcs::new(
        &config.bin_dir,
        logs.path(),
        &nats.url(),
        &settings,
        workers,
    )?;
    let ready_timeout = Duration::from_secs(30);
    let mut ready = BTreeMap::new();
    for slot in 0..workers {
        fleet.start_worker(slot)?;
        let t = fleet.wait_worker_ready(slot, ready_timeout).await?;
        ready.insert(format!("worker w{slot}"), t);
    }
    fleet.start_dispatcher()?;
    ready.insert(
        "dispatcher".to_owned(),
        fleet.wait_dispatcher_ready(ready_timeout).await?,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut pids = fleet.pids();
    pids.push(("nats-server".to_owned(), nats.pid().unwrap_or(0)));
    let idle: BTreeMap<String, Option<u64>> = pids
        .iter()
        .map(|(n, pid)| (n.clone(), rss_kib(*pid)))
        .collect();
    let client = client(&nats.url()).await?;
    let named: Vec<(&str, Option<u32>)> =
        pids.iter().map(|(n, p)| (n.as_str(), Some(*p))).collect();
    let (burst, concurrent, loaded) = measure(config, &client, "bench", &named).await?;
    let processes = pids
        .iter()
        .map(|(n, _)| ProcessFigures {
            process: n.clone(),
            start_to_ready_ms: ready.get(n).map(|d| d.as_secs_f64() * 1000.0),
            idle_rss_kib: idle.get(n).copied().flatten(),
            loaded_rss_kib: loaded.get(n).copied(),
        })
        .collect();
    drop(fleet);
    Ok(Scenario {
        name: name.to_owned(),
        about,
        burst,
        concurrent,
        processes,
    })
}

/// Warm-up, burst, then the fixed-concurrency run with the peak RSS of `procs` sampled.
async fn measure(
    config: &BenchConfig,
    client: &async_nats::Client,
    prefix: &str,
    procs: &[(&str, Option<u32>)],
) -> Result<(LoadResult, LoadResult, BTreeMap<String, u64>), Error> {
    let n = config.requests;
    let t = config.timeout;
    load::run(
        client,
        prefix,
        "warm",
        config.warmup,
        Mode::Concurrent(config.concurrency),
        t,
    )
    .await?;
    let burst = load::run(client, prefix, "burst", n, Mode::Burst, t).await?;
    let peaks: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let sampler = {
        let peaks = peaks.clone();
        let procs: Vec<(String, u32)> = procs
            .iter()
            .filter_map(|(n, p)| p.map(|p| ((*n).to_owned(), p)))
            .collect();
        tokio::spawn(async move {
            loop {
                for (name, pid) in &procs {
                    if let (Some(rss), Ok(mut map)) = (rss_kib(*pid), peaks.lock()) {
                        let peak = map.entry(name.clone()).or_insert(0);
                        *peak = (*peak).max(rss);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let concurrent = load::run(
        client,
        prefix,
        "conc",
        n,
        Mode::Concurrent(config.concurrency),
        t,
    )
    .await;
    sampler.abort();
    let loaded = peaks.lock().map(|m| m.clone()).unwrap_or_default();
    Ok((burst, concurrent?, loaded))
}

/// The nats-server's memory figures of a relay scenario.
fn nats_figures(nats: &NatsServer, loaded: &BTreeMap<String, u64>) -> ProcessFigures {
    ProcessFigures {
        process: "nats-server".into(),
        start_to_ready_ms: None,
        idle_rss_kib: None,
        loaded_rss_kib: loaded
            .get("nats-server")
            .copied()
            .or_else(|| nats.pid().and_then(rss_kib)),
    }
}

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
        let mut out = format!(
            "machine: {} cores, {:.1} GiB, {}; {} requests per run, {} in flight, FLEET_CONCURRENCY={}\n\n",
            self.nproc,
            self.mem_total_kib as f64 / 1024.0 / 1024.0,
            self.nats_server,
            self.requests,
            self.concurrency,
            self.stage_concurrency,
        );
        out.push_str(&format!(
            "{:<22} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9}\n",
            "scenario", "burst r/s", "p50 ms", "p99 ms", "conc r/s", "p50 ms", "p99 ms"
        ));
        for s in &self.scenarios {
            out.push_str(&format!(
                "{:<22} {:>10.0} {:>9.1} {:>9.1} {:>10.0} {:>9.1} {:>9.1}\n",
                s.name,
                s.burst.throughput_rps,
                s.burst.p50_ms,
                s.burst.p99_ms,
                s.concurrent.throughput_rps,
                s.concurrent.p50_ms,
                s.concurrent.p99_ms
            ));
        }
        out.push_str(&format!(
            "\n{:<22} {:<14} {:>14} {:>12} {:>14}\n",
            "scenario", "process", "start→ready ms", "idle RSS MiB", "loaded RSS MiB"
        ));
        let mib =
            |k: Option<u64>| k.map_or("-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
        for s in &self.scenarios {
            for p in &s.processes {
                out.push_str(&format!(
                    "{:<22} {:<14} {:>14} {:>12} {:>14}\n",
                    s.name,
                    p.process,
                    p.start_to_ready_ms
                        .map_or("-".to_owned(), |t| format!("{t:.0}")),
                    mib(p.idle_rss_kib),
                    mib(p.loaded_rss_kib),
                ));
            }
        }
        out.push('\n');
        for (k, v) in &self.ratios {
            out.push_str(&format!("{k:<40} {v:>6.2}\n"));
        }
        out
    }
}
