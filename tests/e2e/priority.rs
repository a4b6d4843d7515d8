//! Priority: a high request starts ahead of a low backlog; low work still progresses while high
//! work keeps coming; `fleet stats` shows the backlog per priority.
//!
//! One worker with `FLEET_CONCURRENCY=1` runs `github.repo_info` against the fake GitHub, whose
//! answers are delayed (a slow task). The order the tasks start in is the order their calls
//! reach the fake.

use std::time::Duration;

use fleet_tests::{Repo, TestEnv, WAIT, assert_outcome};
use serde_json::{Value, json};

/// A `github.repo_info` request for `prio/<repo>` at `priority`.
fn request(id: &str, priority: &str) -> Value {
    json!({
        "id": id,
        "task": "github.repo_info",
        "input": {"owner": "prio", "repo": id},
        "priority": priority,
    })
}

/// A fleet with one worker running one task at a time, each task taking about `task_time`.
async fn one_slot(task_time: Duration) -> TestEnv {
    let env = TestEnv::start_with(|b| b.env("FLEET_CONCURRENCY", "1")).await;
    env.github
        .set_default(Repo::new().stars(1).delay(task_time));
    env
}

/// Asserts that every task ran once: a message waiting for a slot is reported in progress
/// (more often than the tests' 2 s ack wait), so it is never redelivered meanwhile.
fn ran_once(env: &TestEnv, ids: &[String]) {
    for id in ids {
        assert_eq!(
            env.github.requests(&format!("prio/{id}")),
            1,
            "{id} ran twice"
        );
    }
}

/// The request ids (= repo names) in the order their tasks started.
fn start_order(env: &TestEnv, ids: &[String]) -> Vec<String> {
    let mut starts: Vec<(std::time::Instant, String)> = ids
        .iter()
        .filter_map(|id| {
            let first = env
                .github
                .request_times(&format!("prio/{id}"))
                .into_iter()
                .min()?;
            Some((first, id.clone()))
        })
        .collect();
    starts.sort();
    starts.into_iter().map(|(_, id)| id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_high_request_starts_ahead_of_a_low_backlog() {
    let env = one_slot(Duration::from_millis(600)).await;
    let lows: Vec<String> = (0..8).map(|i| format!("low-{i}")).collect();
    // The backlog arrives as plain `nats pub` JSON with "priority":"low".
    for id in &lows {
        env.client.publish_json(&request(id, "low")).await;
    }
    fleet_tests::poll_until(WAIT, || {
        let started = !env.github.request_times("prio/low-0").is_empty();
        async move { started.then_some(()) }
    })
    .await
    .expect("the first low task starts");

    // `fleet stats` shows the low backlog on its own row of the task.
    let row = env.stats_row("github.repo_info").await;
    let low_waiting = row["priorities"]["low"]["waiting"].as_u64().unwrap_or(0)
        + row["priorities"]["low"]["running"].as_u64().unwrap_or(0);
    assert!(low_waiting >= 5, "the low backlog per priority: {row:#}");
    assert_eq!(row["priorities"]["high"]["waiting"], 0, "{row:#}");

    // The high one comes through the CLI, behind the backlog.
    let input = json!({"owner": "prio", "repo": "high-0"}).to_string();
    let submitted = env
        .cli(&[
            "submit",
            "--task",
            "github.repo_info",
            "--input",
            &input,
            "--id",
            "high-0",
            "--priority",
            "high",
        ])
        .await;
    assert_eq!(submitted.code, Some(0), "{submitted}");
    let submitted_at = std::time::Instant::now();

    let mut all = lows.clone();
    all.push("high-0".into());
    for id in &all {
        let result = env.client.wait_result(id, WAIT * 2).await;
        assert_outcome(&result, "succeeded", None);
    }
    ran_once(&env, &all);
    let order = start_order(&env, &all);
    let high_at = order
        .iter()
        .position(|id| id == "high-0")
        .unwrap_or_else(|| panic!("high-0 never started: {order:?}"));
    // Once high-0 is in, at most the low running then and the one already waiting at the
    // worker's gate start before it (a slow machine may route it after one more finished);
    // the rest of the backlog comes after it.
    let high_started = env
        .github
        .request_times("prio/high-0")
        .into_iter()
        .min()
        .expect("high-0 started");
    let slipped = lows
        .iter()
        .filter(|id| {
            env.github
                .request_times(&format!("prio/{id}"))
                .into_iter()
                .min()
                .is_some_and(|t| t >= submitted_at && t < high_started)
        })
        .count();
    assert!(
        slipped <= 2,
        "{slipped} low tasks started between high-0's submission and its start: {order:?}"
    );
    assert!(
        order.len() - high_at > 4,
        "high-0 started after {high_at} low tasks: {order:?}"
    );
    let status = env.client.status("high-0").await.unwrap_or_default();
    assert_eq!(status["priority"], "high", "{status:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn low_work_still_progresses_while_high_work_keeps_coming() {
    let env = one_slot(Duration::from_millis(250)).await;
    let highs: Vec<String> = (0..20).map(|i| format!("high-{i}")).collect();
    let lows: Vec<String> = (0..3).map(|i| format!("low-{i}")).collect();
    for id in &highs {
        env.client.publish_json(&request(id, "high")).await;
    }
    for id in &lows {
        env.client.publish_json(&request(id, "low")).await;
    }
    let all: Vec<String> = highs.iter().chain(&lows).cloned().collect();
    for id in &all {
        let result = env.client.wait_result(id, WAIT * 2).await;
        assert_outcome(&result, "succeeded", None);
    }
    ran_once(&env, &all);
    let order = start_order(&env, &all);
    let mut positions: Vec<usize> = lows
        .iter()
        .filter_map(|id| order.iter().position(|o| o == id))
        .collect();
    positions.sort_unstable();
    assert_eq!(positions.len(), 3, "{order:?}");
    // Strict priority would start the lows last (positions 20-22). The worker gives waiting low
    // work one slot in every five (PASS_OVER_LIMIT = 4): the first low starts within a few
    // highs of its arrival, each next one at most five starts after the one before, all before
    // the highs run out.
    assert!(
        positions[0] <= 10,
        "low tasks starved behind high ones: {order:?}"
    );
    for pair in positions.windows(2) {
        assert!(
            pair[1] - pair[0] <= 5,
            "a low task waited more than five starts: {order:?}"
        );
    }
    assert!(positions[2] < 22, "{order:?}");
}
