//! Counting, once the fleet has settled, what happened to every request id: from the results
//! stream, the status bucket, the DLQ stream, the tasks stream and the fake GitHub's hits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream::Stream};
use fleet_testkit::FakeGithub;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::report::{ChaosReport, EXAMPLES};
use super::run::{PREFIX, REPO_OWNER, request_id};
use crate::Error;

/// How long a status that does not yet equal its result may take to catch up: the final
/// status is written after the result is stored, so right after the results are all there a
/// few may still be on their way.
const STATUS_GRACE: Duration = Duration::from_secs(10);

/// The header a dead letter names its request with.
const REQUEST_ID_HEADER: &str = "Fleet-Request-Id";

/// Fills the report's per-id figures for the requests `0..n`.
///
/// # Errors
///
/// [`Error::Nats`] when a stream or the bucket cannot be read.
pub(super) async fn count(
    js: &jetstream::Context,
    github: &FakeGithub,
    n: usize,
    report: &mut ChaosReport,
) -> Result<(), Error> {
    let upper = PREFIX.to_uppercase();
    let ids: Vec<String> = (0..n).map(request_id).collect();

    // Stored results per id, from the stream's count per subject.
    let results = js
        .get_stream(format!("{upper}_RESULTS"))
        .await
        .map_err(|e| Error::nats("open results stream", e))?;
    let results_prefix = format!("{PREFIX}.results.");
    let per_subject: HashMap<String, usize> = results
        .info_with_subjects(format!("{results_prefix}>"))
        .await
        .map_err(|e| Error::nats("results per subject", e))?
        .try_collect()
        .await
        .map_err(|e| Error::nats("results per subject", e))?;
    report.results = per_subject.len();
    for id in &ids {
        match per_subject.get(&format!("{results_prefix}{id}")) {
            None => note(&mut report.lost, &mut report.lost_ids, id.clone()),
            Some(&c) if c > 1 => note(
                &mut report.stored_twice,
                &mut report.stored_twice_ids,
                id.clone(),
            ),
            Some(_) => {}
        }
    }

    // Each stored result's status and attempts.
    let mut status_of: HashMap<String, String> = HashMap::new();
    let mut attempts_of: HashMap<String, u64> = HashMap::new();
    for msg in read_all(&results).await? {
        let result: Value = serde_json::from_slice(&msg.payload).unwrap_or(Value::Null);
        let attempts = result.get("attempts").and_then(Value::as_u64).unwrap_or(0);
        if attempts > 1 {
            report.redelivered += 1;
        }
        report.max_attempts = report.max_attempts.max(attempts);
        let status = result
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("<unreadable>");
        if status != "succeeded" {
            report.not_succeeded += 1;
        }
        if let Some(id) = msg.subject.as_str().strip_prefix(&results_prefix) {
            status_of.insert(id.to_owned(), status.to_owned());
            attempts_of.insert(id.to_owned(), attempts);
        }
    }

    status_mismatches(js, &status_of, report).await?;
    dead_letters(js, report).await?;

    // Runs per task, from the fake GitHub.
    let hits = github.request_counts();
    for id in &ids {
        let runs = hits
            .get(&format!("{REPO_OWNER}/{id}"))
            .copied()
            .unwrap_or(0);
        report.max_runs = report.max_runs.max(runs);
        if runs > 1 {
            note(
                &mut report.ran_twice,
                &mut report.ran_twice_ids,
                format!("{id} ({runs})"),
            );
        }
        if let Some(&attempts) = attempts_of.get(id)
            && attempts < runs as u64
        {
            note(
                &mut report.attempts_below_runs,
                &mut report.attempts_below_runs_ids,
                format!("{id}: attempts={attempts} runs={runs}"),
            );
        }
    }

    // Task messages beyond one per request.
    let mut tasks = js
        .get_stream(format!("{upper}_TASKS"))
        .await
        .map_err(|e| Error::nats("open tasks stream", e))?;
    let last = tasks
        .info()
        .await
        .map_err(|e| Error::nats("tasks stream info", e))?
        .state
        .last_sequence;
    report.extra_tasks = last as i64 - n as i64;
    Ok(())
}

/// Compares each stored result's status with the final `state` in `<prefix>-status`, giving
/// late status writes [`STATUS_GRACE`] to land.
async fn status_mismatches(
    js: &jetstream::Context,
    status_of: &HashMap<String, String>,
    report: &mut ChaosReport,
) -> Result<(), Error> {
    let bucket = js
        .get_key_value(format!("{PREFIX}-status"))
        .await
        .map_err(|e| Error::nats("open the status bucket", e))?;
    let started = Instant::now();
    let mut pending: Vec<(&String, &String)> = status_of.iter().collect();
    let mut last_seen: HashMap<String, String> = HashMap::new();
    loop {
        let checks = futures::stream::iter(pending.iter().copied())
            .map(|(id, status)| {
                let bucket = bucket.clone();
                async move {
                    let state = match bucket.get(id.as_str()).await {
                        Ok(Some(bytes)) => serde_json::from_slice::<Value>(&bytes)
                            .ok()
                            .and_then(|v| v.get("state").and_then(Value::as_str).map(str::to_owned))
                            .unwrap_or_else(|| "<unreadable>".to_owned()),
                        Ok(None) => "<none>".to_owned(),
                        Err(e) => return Err(Error::nats("read a status", e)),
                    };
                    Ok((id, status, state))
                }
            })
            .buffer_unordered(64)
            .try_collect::<Vec<_>>()
            .await?;
        pending = checks
            .into_iter()
            .filter(|(_, status, state)| *status != state)
            .map(|(id, status, state)| {
                last_seen.insert(id.clone(), state);
                (id, status)
            })
            .collect();
        if pending.is_empty() || started.elapsed() > STATUS_GRACE {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    pending.sort();
    for (id, status) in pending {
        let state = last_seen.get(id).map_or("?", String::as_str);
        note(
            &mut report.status_mismatch,
            &mut report.status_mismatches,
            format!("{id}: state={state} result={status}"),
        );
    }
    Ok(())
}

/// Counts the dead letters per request id (the DLQ stream exists once a worker has started).
async fn dead_letters(js: &jetstream::Context, report: &mut ChaosReport) -> Result<(), Error> {
    let Ok(dlq) = js
        .get_stream(format!("{}_DLQ", PREFIX.to_uppercase()))
        .await
    else {
        return Ok(());
    };
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for msg in read_all(&dlq).await? {
        report.dead_letters += 1;
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(REQUEST_ID_HEADER))
            .map_or_else(|| "<no id>".to_owned(), |v| v.as_str().to_owned());
        *per_id.entry(id).or_default() += 1;
    }
    let mut several: Vec<(String, usize)> = per_id.into_iter().filter(|(_, c)| *c > 1).collect();
    several.sort();
    report.max_dead_letters_per_id = several
        .iter()
        .map(|(_, c)| *c)
        .max()
        .unwrap_or(usize::from(report.dead_letters > 0));
    for (id, c) in several {
        note(
            &mut report.several_dead_letters,
            &mut report.several_dead_letters_ids,
            format!("{id} ({c})"),
        );
    }
    Ok(())
}

/// Every message of `stream`, through an ordered consumer.
async fn read_all(stream: &Stream) -> Result<Vec<jetstream::Message>, Error> {
    let total = stream.cached_info().state.messages;
    let consumer = stream
        .create_consumer(pull::OrderedConfig::default())
        .await
        .map_err(|e| Error::nats("read a stream", e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| Error::nats("read a stream", e))?;
    let mut out = Vec::new();
    while (out.len() as u64) < total {
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        let Ok(Some(Ok(msg))) = next else { break };
        out.push(msg);
    }
    Ok(out)
}

/// Counts one more and keeps the first [`EXAMPLES`] examples.
fn note(count: &mut usize, examples: &mut Vec<String>, example: String) {
    *count += 1;
    if examples.len() < EXAMPLES {
        examples.push(example);
    }
}
