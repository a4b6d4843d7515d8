//! `fleet eval FILE.jsonl`: routing quality on labelled requests.
//!
//! Each line is `{"text": …, "task": expected task, "args": {key: expected value}, "split":
//! "tune" | "heldout", "kind": …}`. Every request is sent through the running fleet as it is
//! (so the dispatcher's tiers decide: patterns, then the LLM when one is configured), at most
//! `--in-flight` at a time, each result is read, and a request counts as correct when the
//! result's task is the expected one and each expected argument is in its input with that
//! value. The report: accuracy per task, per tier and per split (the held-out part is never
//! tuned on), a confusion matrix, the share of requests that reached the LLM, and the p50 and
//! p95 routing latency the dispatcher recorded.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::Duration,
};

use async_nats::HeaderMap;
use fleet_common::{
    messages::{ClassifiedBy, MSG_ID_HEADER, TaskResult},
    topology::Fleet,
};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{EXIT_FAILED, EXIT_NO_NATS, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE, progress::Progress};

/// The tasks every fleet has built in: the figures on them hold whichever other workers run.
const BUILT_IN: &[&str] = &["chat", "github.repo_info", "text.transform"];

/// `fleet eval` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct EvalArgs {
    /// The labelled requests, one JSON object per line.
    file: PathBuf,
    /// Give up waiting for results after this long (exit code 3).
    #[arg(long, default_value = "600s", value_parser = fleet_common::config::parse_duration)]
    timeout: Duration,
    /// Requests sent before their results are in (1 measures routing latency alone).
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Which labelled requests to send: `all`, `tune` or `heldout`.
    #[arg(long, default_value = "all")]
    split: String,
    /// Print JSON, misses included.
    #[arg(long)]
    json: bool,
    /// Print each request that was routed wrong.
    #[arg(long)]
    misses: bool,
    /// Exit 1 when the overall accuracy (task and arguments) is below this percentage.
    #[arg(long, default_value_t = 0.0)]
    min_accuracy: f64,
}

/// One labelled request.
#[derive(Debug, Deserialize)]
struct Case {
    /// The request, in words.
    text: String,
    /// The task it should route to.
    task: String,
    /// Arguments the input must carry.
    #[serde(default)]
    args: Map<String, Value>,
    /// `tune` (patterns and descriptions were written looking at it) or `heldout` (never).
    #[serde(default = "tune")]
    split: String,
    /// What the case tests (`everyday`, `rephrased`, `trap`, …), for reading misses.
    #[serde(default)]
    kind: String,
}

fn tune() -> String {
    "tune".into()
}

/// Right and total of a group.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Requests in the group.
    total: usize,
    /// Routed to the right task.
    task_ok: usize,
    /// Right task and right arguments.
    correct: usize,
}

// === impl Tally ===

impl Tally {
    fn add(&mut self, task_ok: bool, correct: bool) {
        self.total += 1;
        self.task_ok += usize::from(task_ok);
        self.correct += usize::from(correct);
    }

    fn json(&self) -> Value {
        json!({"total": self.total, "task_correct": self.task_ok, "correct": self.correct,
               "task_accuracy": pct(self.task_ok, self.total), "accuracy": pct(self.correct, self.total)})
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{:<28} {:>6} {:>11.1}% {:>13.1}%",
            name,
            self.total,
            pct(self.task_ok, self.total),
            pct(self.correct, self.total)
        )
    }
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

/// The tier a result says decided: `explicit`, `patterns` (a certain match), `llm`, or
/// `fallback` (the patterns' best guess or `chat` after no usable LLM answer, or without one).
fn tier(result: &TaskResult) -> &'static str {
    match result.classified_by {
        Some(ClassifiedBy::Llm) => "llm",
        Some(ClassifiedBy::Explicit) => "explicit",
        Some(ClassifiedBy::Patterns) => match &result.routing {
            Some(r) if r.reason.starts_with("certain pattern") => "patterns",
            _ => "fallback",
        },
        None => "none",
    }
}

/// The `q`-quantile of sorted `values` (nearest rank).
fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

/// Runs `fleet eval`.
pub(crate) async fn eval(fleet: &Fleet, args: EvalArgs) -> i32 {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("fleet: cannot read {}: {e}", args.file.display());
            return EXIT_USAGE;
        }
    };
    if !["all", "tune", "heldout"].contains(&args.split.as_str()) {
        eprintln!("fleet: --split is all, tune or heldout");
        return EXIT_USAGE;
    }
    let mut cases = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
    {
        match serde_json::from_str::<Case>(line) {
            Ok(c) if args.split == "all" || c.split == args.split => cases.push(c),
            Ok(_) => {}
            Err(e) => {
                eprintln!(
                    "fleet: {}:{}: not a labelled request ({e})",
                    args.file.display(),
                    n + 1
                );
                return EXIT_USAGE;
            }
        }
    }
    let run = nuid::next().to_string();
    let prefix = format!("eval-{run}-");
    let ids: Vec<String> = (0..cases.len()).map(|i| format!("{prefix}{i}")).collect();

    // Subscribe before publishing, so no result is missed.
    let mut results = match fleet.subscribe_results().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fleet: cannot subscribe to results: {e}");
            return EXIT_NO_NATS;
        }
    };
    let in_flight = args.in_flight.max(1);
    let mut got: HashMap<String, TaskResult> = HashMap::new();
    let mut sent = 0;
    let mut timed_out = false;
    let deadline = tokio::time::Instant::now() + args.timeout;
    let progress = Progress::spinner(format!("routed 0 of {}", ids.len()));
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::io::IsTerminal::is_terminal(&std::io::stdout());
    while got.len() < ids.len() {
        while sent < ids.len() && sent - got.len().min(sent) < in_flight {
            let mut headers = HeaderMap::new();
            headers.insert(MSG_ID_HEADER, ids[sent].as_str());
            if let Err(e) = fleet.submit(headers, cases[sent].text.clone().into()).await {
                progress.clear();
                eprintln!("fleet: the request was not accepted by NATS: {e}");
                return EXIT_NO_NATS;
            }
            sent += 1;
        }
        match tokio::time::timeout_at(deadline, results.next()).await {
            Ok(Some(msg)) => {
                if let Ok(r) = serde_json::from_slice::<TaskResult>(&msg.payload)
                    && r.request_id.starts_with(&prefix)
                {
                    got.insert(r.request_id.clone(), r);
                    let right = cases
                        .iter()
                        .zip(&ids)
                        .filter(|(c, id)| got.get(*id).is_some_and(|r| is_correct(c, r).1))
                        .count();
                    let line = format!(
                        "routed {} of {} ({right} right so far)",
                        got.len(),
                        ids.len()
                    );
                    // Off a terminal (no spinner), a line every 25 results.
                    if !tty && (got.len().is_multiple_of(25) || got.len() == ids.len()) {
                        eprintln!("fleet eval: {line}");
                    }
                    progress.set_message(line);
                }
            }
            Ok(None) => break,
            Err(_) => {
                progress.clear();
                eprintln!(
                    "fleet: {} of {} results after {:?}; the figures count the missing ones as wrong",
                    got.len(),
                    ids.len(),
                    args.timeout
                );
                timed_out = true;
                break;
            }
        }
    }
    progress.clear();

    let report = Report::new(&cases, &ids, &got);
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text(args.misses));
    }
    if timed_out {
        EXIT_TIMEOUT
    } else if pct(report.all.correct, report.all.total) >= args.min_accuracy {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// Whether `result` has the right task, and the right task and arguments, for `case`.
fn is_correct(case: &Case, result: &TaskResult) -> (bool, bool) {
    let task_ok = result.task.as_deref() == Some(case.task.as_str());
    let input = result.input.clone().unwrap_or(Value::Null);
    let args_ok = case.args.iter().all(|(k, v)| input.get(k) == Some(v));
    (task_ok, task_ok && args_ok)
}

/// The figures of one run.
#[derive(Debug, Default)]
struct Report {
    /// Every request.
    all: Tally,
    /// By split (`tune`, `heldout`).
    splits: BTreeMap<String, Tally>,
    /// The built-in tasks' requests of the held-out part.
    heldout_built_in: Tally,
    /// By expected task.
    tasks: BTreeMap<String, Tally>,
    /// By the tier that decided.
    tiers: BTreeMap<&'static str, Tally>,
    /// Expected task -> routed task -> count.
    confusion: BTreeMap<String, BTreeMap<String, usize>>,
    /// Requests whose routing called the LLM (or found its answer in the cache).
    reached_llm: usize,
    /// Routing latency of each result that recorded one, sorted.
    latencies: Vec<u64>,
    /// Routing latency of the requests that reached the LLM, sorted.
    llm_latencies: Vec<u64>,
    /// Requests the LLM routed (its answer used).
    llm_routed: usize,
    /// Of those, the ones recorded grounded whose task ran or failed in it (never rejected).
    llm_valid_grounded: usize,
    /// What went wrong.
    misses: Vec<Value>,
}

// === impl Report ===

impl Report {
    fn new(cases: &[Case], ids: &[String], got: &HashMap<String, TaskResult>) -> Self {
        let mut r = Report::default();
        for (case, id) in cases.iter().zip(ids) {
            let result = got.get(id);
            let (task_ok, correct) = result.map_or((false, false), |res| is_correct(case, res));
            let routed = result
                .and_then(|res| res.task.clone())
                .unwrap_or_else(|| "(none)".into());
            let tier = result.map_or("none", tier);
            r.all.add(task_ok, correct);
            r.splits
                .entry(case.split.clone())
                .or_default()
                .add(task_ok, correct);
            if case.split == "heldout" && BUILT_IN.contains(&case.task.as_str()) {
                r.heldout_built_in.add(task_ok, correct);
            }
            r.tasks
                .entry(case.task.clone())
                .or_default()
                .add(task_ok, correct);
            r.tiers.entry(tier).or_default().add(task_ok, correct);
            *r.confusion
                .entry(case.task.clone())
                .or_default()
                .entry(routed)
                .or_default() += 1;
            if let Some(routing) = result.and_then(|res| res.routing.as_ref()) {
                if routing.llm_calls > 0 || routing.cache_hit {
                    r.reached_llm += 1;
                    r.llm_latencies.push(routing.latency_ms);
                }
                r.latencies.push(routing.latency_ms);
            }
            if let Some(res) = result.filter(|res| res.classified_by == Some(ClassifiedBy::Llm)) {
                r.llm_routed += 1;
                let grounded = res.routing.as_ref().and_then(|x| x.grounded) == Some(true);
                if grounded && res.status != fleet_common::messages::Outcome::Rejected {
                    r.llm_valid_grounded += 1;
                }
            }
            if !correct {
                r.misses.push(json!({
                    "text": case.text,
                    "split": case.split,
                    "kind": case.kind,
                    "expected": {"task": case.task, "args": case.args},
                    "got": result.map(|res| json!({
                        "task": res.task, "input": res.input, "classified_by": res.classified_by,
                        "status": res.status, "routing": res.routing,
                    })),
                }));
            }
        }
        r.latencies.sort_unstable();
        r.llm_latencies.sort_unstable();
        r
    }

    fn json(&self) -> Value {
        let map = |m: &BTreeMap<String, Tally>| -> Value {
            m.iter().map(|(k, t)| (k.clone(), t.json())).collect()
        };
        let tiers: Map<String, Value> = self
            .tiers
            .iter()
            .map(|(k, t)| ((*k).to_owned(), t.json()))
            .collect();
        json!({
            "total": self.all.total,
            "correct": self.all.correct,
            "task_correct": self.all.task_ok,
            "accuracy": pct(self.all.correct, self.all.total),
            "task_accuracy": pct(self.all.task_ok, self.all.total),
            "splits": map(&self.splits),
            "heldout_built_in": self.heldout_built_in.json(),
            "per_task": map(&self.tasks),
            "per_tier": tiers,
            "confusion": self.confusion,
            "reached_llm": self.reached_llm,
            "reached_llm_share": pct(self.reached_llm, self.all.total),
            "latency_ms": {"p50": quantile(&self.latencies, 0.5), "p95": quantile(&self.latencies, 0.95)},
            "llm_latency_ms": {"p50": quantile(&self.llm_latencies, 0.5), "p95": quantile(&self.llm_latencies, 0.95)},
            "llm_routed": self.llm_routed,
            "llm_routed_valid_grounded": self.llm_valid_grounded,
            "misses": self.misses,
        })
    }

    fn text(&self, show_misses: bool) -> String {
        let mut out = String::new();
        let header = format!(
            "{:<28} {:>6} {:>12} {:>14}\n",
            "", "total", "task right", "task+args right"
        );
        out.push_str(&format!("{:<28}{}", "per task", &header[28..]));
        for (name, t) in &self.tasks {
            out.push_str(&t.line(name));
            out.push('\n');
        }
        out.push_str(&format!(
            "\n{:<28}{}",
            "per tier (who decided)",
            &header[28..]
        ));
        for (name, t) in &self.tiers {
            out.push_str(&t.line(name));
            out.push('\n');
        }
        out.push_str(&format!("\n{:<28}{}", "per split", &header[28..]));
        for (name, t) in &self.splits {
            out.push_str(&t.line(name));
            out.push('\n');
        }
        out.push_str(&self.heldout_built_in.line("heldout, built-in tasks"));
        out.push('\n');
        out.push_str(&self.all.line("whole set"));
        out.push('\n');

        // Confusion matrix: rows expected, columns routed.
        let mut columns: Vec<&String> = self.confusion.values().flat_map(|m| m.keys()).collect();
        columns.sort();
        columns.dedup();
        out.push_str("\nconfusion (rows: expected task, columns: routed task)\n");
        out.push_str(&format!("{:<20}", ""));
        for c in &columns {
            out.push_str(&format!(" {:>16}", clip(c, 16)));
        }
        out.push('\n');
        for (expected, row) in &self.confusion {
            out.push_str(&format!("{:<20}", clip(expected, 20)));
            for c in &columns {
                out.push_str(&format!(" {:>16}", row.get(*c).copied().unwrap_or(0)));
            }
            out.push('\n');
        }
        let ms = |v: &[u64], q: f64| quantile(v, q).map_or("-".into(), |v| v.to_string());
        out.push_str(&format!(
            "\nreached the LLM: {} of {} ({:.1}%)\nrouting latency: p50 {} ms, p95 {} ms (of those that reached the LLM: p50 {} ms, p95 {} ms)\nrouted by the LLM: {}, of which catalog-valid and grounded: {}\n",
            self.reached_llm,
            self.all.total,
            pct(self.reached_llm, self.all.total),
            ms(&self.latencies, 0.5),
            ms(&self.latencies, 0.95),
            ms(&self.llm_latencies, 0.5),
            ms(&self.llm_latencies, 0.95),
            self.llm_routed,
            self.llm_valid_grounded,
        ));
        if show_misses {
            for m in &self.misses {
                out.push_str(&format!("miss: {m}\n"));
            }
        }
        out
    }
}

fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.95), Some(95));
        assert_eq!(quantile(&[7], 0.95), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
