//! `fleet eval FILE.jsonl`: routing quality on labelled requests.
//!
//! Each line is `{"text": …, "task": expected task, "args": {key: expected value}}`. Every
//! request is sent through the fleet as it is (so the running dispatcher's classifier, LLM or
//! rules, decides), each result is read, and a request counts as correct when the result's task
//! is the expected one and each expected argument is in its input with that value.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    time::Duration,
};

use async_nats::HeaderMap;
use fleet_common::{
    messages::{MSG_ID_HEADER, TaskResult},
    topology::Fleet,
};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{EXIT_FAILED, EXIT_NO_NATS, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE, progress::Progress};

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
}

/// Per-task tally.
#[derive(Debug, Default)]
struct Tally {
    /// Requests whose expected task is this one.
    total: usize,
    /// Routed to the right task.
    task_ok: usize,
    /// Right task and right arguments.
    correct: usize,
}

/// Runs `fleet eval`.
pub(crate) async fn eval(
    fleet: &Fleet,
    file: &Path,
    timeout: Duration,
    json_out: bool,
    show_misses: bool,
    min_accuracy: f64,
) -> i32 {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("fleet: cannot read {}: {e}", file.display());
            return EXIT_USAGE;
        }
    };
    let mut cases = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<Case>(line) {
            Ok(c) => cases.push(c),
            Err(e) => {
                eprintln!(
                    "fleet: {}:{}: not a labelled request ({e})",
                    file.display(),
                    n + 1
                );
                return EXIT_USAGE;
            }
        }
    }
    let run = nuid::next().to_string();
    let ids: Vec<String> = (0..cases.len())
        .map(|i| format!("eval-{run}-{i}"))
        .collect();

    // Subscribe before publishing, so no result is missed.
    let mut results = match fleet.subscribe_results().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fleet: cannot subscribe to results: {e}");
            return EXIT_NO_NATS;
        }
    };
    for (case, id) in cases.iter().zip(&ids) {
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID_HEADER, id.as_str());
        if let Err(e) = fleet.submit(headers, case.text.clone().into()).await {
            eprintln!("fleet: the request was not accepted by NATS: {e}");
            return EXIT_NO_NATS;
        }
    }

    let mut got: HashMap<String, TaskResult> = HashMap::new();
    let mut timed_out = false;
    let deadline = tokio::time::Instant::now() + timeout;
    let progress = Progress::spinner(format!("results: 0 of {}", ids.len()));
    while got.len() < ids.len() {
        match tokio::time::timeout_at(deadline, results.next()).await {
            Ok(Some(msg)) => {
                if let Ok(r) = serde_json::from_slice::<TaskResult>(&msg.payload)
                    && r.request_id.starts_with(&format!("eval-{run}-"))
                {
                    got.insert(r.request_id.clone(), r);
                    progress.set_message(format!("results: {} of {}", got.len(), ids.len()));
                }
            }
            Ok(None) => break,
            Err(_) => {
                progress.clear();
                eprintln!(
                    "fleet: {} of {} results after {timeout:?}; the figures count the missing ones as wrong",
                    got.len(),
                    ids.len()
                );
                timed_out = true;
                break;
            }
        }
    }

    progress.clear();

    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut misses = Vec::new();
    for (case, id) in cases.iter().zip(&ids) {
        let tally = tallies.entry(case.task.clone()).or_default();
        tally.total += 1;
        let Some(result) = got.get(id) else { continue };
        let task_ok = result.task.as_deref() == Some(case.task.as_str());
        let input = result.input.clone().unwrap_or(Value::Null);
        let args_ok = case.args.iter().all(|(k, v)| input.get(k) == Some(v));
        if task_ok {
            tally.task_ok += 1;
        }
        if task_ok && args_ok {
            tally.correct += 1;
        } else {
            misses.push(json!({
                "text": case.text,
                "expected": {"task": case.task, "args": case.args},
                "got": {"task": result.task, "input": result.input, "classified_by": result.classified_by},
            }));
        }
    }
    let total: usize = tallies.values().map(|t| t.total).sum();
    let correct: usize = tallies.values().map(|t| t.correct).sum();
    let task_ok: usize = tallies.values().map(|t| t.task_ok).sum();
    let pct = |a: usize, b: usize| {
        if b == 0 {
            0.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };

    if json_out {
        let per_task: Map<String, Value> = tallies
            .iter()
            .map(|(name, t)| {
                (name.clone(), json!({"total": t.total, "task_correct": t.task_ok, "correct": t.correct, "accuracy": pct(t.correct, t.total)}))
            })
            .collect();
        println!(
            "{}",
            json!({"total": total, "correct": correct, "task_correct": task_ok, "accuracy": pct(correct, total), "task_accuracy": pct(task_ok, total), "per_task": per_task, "misses": misses})
        );
    } else {
        println!(
            "{:<20} {:>6} {:>12} {:>14}",
            "task", "total", "task right", "task+args right"
        );
        for (name, t) in &tallies {
            println!(
                "{:<20} {:>6} {:>11.1}% {:>13.1}%",
                name,
                t.total,
                pct(t.task_ok, t.total),
                pct(t.correct, t.total)
            );
        }
        println!(
            "{:<20} {:>6} {:>11.1}% {:>13.1}%",
            "overall",
            total,
            pct(task_ok, total),
            pct(correct, total)
        );
        if show_misses {
            for m in &misses {
                println!("miss: {m}");
            }
        }
    }
    if timed_out {
        EXIT_TIMEOUT
    } else if pct(correct, total) >= min_accuracy {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}
