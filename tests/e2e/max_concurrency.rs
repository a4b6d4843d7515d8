//! A task's catalog `max_concurrency` holds across the whole fleet: two workers, each allowed
//! eight tasks at once, never run more than two `github.repo_info` tasks together, whatever
//! the requests' priorities.
//!
//! The limit comes from `FLEET_TASK_MAX_CONCURRENCY=github.repo_info=2` (the catalog entry
//! says so); the fake GitHub delays each answer, and when each call reached it shows how many
//! tasks ran at once. A worker started with another limit updates the consumers' cap.

use std::time::{Duration, Instant};

use fleet_tests::{Repo, TestEnv, WAIT, assert_outcome};
use serde_json::json;

/// How long each task's GitHub call takes.
const TASK_TIME: Duration = Duration::from_millis(500);

/// The most intervals `[start, start + len)` that overlap at one moment.
fn most_at_once(starts: &[Instant], len: Duration) -> usize {
    starts
        .iter()
        .map(|s| {
            starts
                .iter()
                .filter(|t| **t <= *s && *s < **t + len)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn max_concurrency_holds_across_two_workers() {
    let env = TestEnv::start_with(|b| {
        b.workers(&["w1", "w2"])
            .env("FLEET_CONCURRENCY", "8")
            .env("FLEET_TASK_MAX_CONCURRENCY", "github.repo_info=2")
    })
    .await;
    env.github
        .set_default(Repo::new().stars(1).delay(TASK_TIME));
    let entry = env
        .client
        .catalog_entry("github.repo_info")
        .await
        .expect("the catalog entry");
    assert_eq!(entry["max_concurrency"], 2, "{entry:#}");

    let ids: Vec<String> = (0..12).map(|i| format!("limited-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        // Every priority: the limit holds across them too.
        let priority = ["high", "normal", "low"][i % 3];
        env.client
            .publish_json(&json!({
                "id": id,
                "task": "github.repo_info",
                "input": {"owner": "limit", "repo": id},
                "priority": priority,
            }))
            .await;
    }
    // Meanwhile `fleet stats` shows the limit and never more than it running.
    let row = env.stats_row("github.repo_info").await;
    assert_eq!(row["max_concurrency"], 2, "{row:#}");
    assert!(row["running"].as_u64().unwrap_or(0) <= 2, "{row:#}");

    let mut workers = std::collections::BTreeSet::new();
    for id in &ids {
        let result = env.client.wait_result(id, WAIT * 2).await;
        assert_outcome(&result, "succeeded", None);
        if let Some(w) = result["worker"].as_str() {
            workers.insert(w.to_owned());
        }
    }
    let starts: Vec<Instant> = ids
        .iter()
        .filter_map(|id| {
            env.github
                .request_times(&format!("limit/{id}"))
                .into_iter()
                .min()
        })
        .collect();
    assert_eq!(starts.len(), ids.len());
    let most = most_at_once(&starts, TASK_TIME);
    assert!(most <= 2, "{most} tasks ran at once (workers {workers:?})");
    // The limit is used, not only kept: two did run together.
    assert_eq!(most, 2, "never two at once (workers {workers:?})");
    eprintln!("max_concurrency: at most {most} at once; ran on {workers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_limit_updates_the_consumers_of_every_priority() {
    let mut env = TestEnv::start().await;
    let cap = |consumer: &'static str| {
        let js = env.client.jetstream().clone();
        async move {
            let stream = js.get_stream_no_info("FLEET_TASKS").await.ok()?;
            let info = stream.consumer_info(consumer).await.ok()?;
            Some(info.config.max_ack_pending)
        }
    };
    let before = cap("worker-github_repo_info").await;
    assert!(
        before.is_some_and(|n| n != 3),
        "no limit yet: the server's default ({before:?})"
    );
    // A worker with a new limit starts: it updates the consumers it finds (create or update)
    // and the catalog entry.
    env.fleet.kill_worker("w1");
    env.fleet.start_worker_with(
        "w2",
        &[("FLEET_TASK_MAX_CONCURRENCY", "github.repo_info=3")],
    );
    let consumers = [
        "worker-github_repo_info",
        "high-worker-github_repo_info",
        "low-worker-github_repo_info",
    ];
    let updated = fleet_tests::poll_until(WAIT, || {
        let caps = futures::future::join_all(consumers.map(cap));
        let entry = env.client.catalog_entry("github.repo_info");
        async move {
            let caps = caps.await;
            let entry = entry.await?;
            (caps.iter().all(|c| *c == Some(3)) && entry["max_concurrency"] == 3).then_some(caps)
        }
    })
    .await;
    assert!(
        updated.is_some(),
        "consumers' max_ack_pending: {:?}",
        futures::future::join_all(consumers.map(cap)).await
    );
    // Other tasks keep no limit.
    assert_ne!(cap("worker-text_transform").await, Some(3));
}

#[test]
fn overlap_is_counted() {
    let t = Instant::now();
    let ms = Duration::from_millis;
    assert_eq!(most_at_once(&[t, t + ms(100), t + ms(600)], ms(500)), 2);
    assert_eq!(most_at_once(&[t, t + ms(500), t + ms(1000)], ms(500)), 1);
    assert_eq!(most_at_once(&[], ms(500)), 0);
}
