//! Prometheus counters move with the traffic: the dispatcher's requests received, classified
//! by method and rejected by kind; the worker's tasks started, succeeded and retried by task,
//! and its task duration histogram.

use std::time::Duration;

use fleet_tests::{Repo, Scrape, TestEnv, WAIT, assert_outcome, poll_until};
use serde_json::json;

/// What must have moved between two scrapes: (metric, labels, expected increase).
type Expected = [(&'static str, &'static [(&'static str, &'static str)], f64)];

/// Scrapes `port` until every metric in `expected` has grown by its amount since `before`
/// (counters may trail the results by a moment), then asserts the exact increases.
async fn assert_moved(process: &str, port: u16, before: &Scrape, expected: &Expected) {
    let delta = |after: &Scrape, name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let after = poll_until(Duration::from_secs(10), || async {
        let after = Scrape::fetch(port).await;
        expected
            .iter()
            .all(|(name, labels, want)| delta(&after, name, labels) >= *want)
            .then_some(after)
    })
    .await;
    let after = match after {
        Some(after) => after,
        None => Scrape::fetch(port).await,
    };
    for (name, labels, want) in expected {
        assert_eq!(
            delta(&after, name, labels),
            *want,
            "{process}: {name}{labels:?} should have grown by {want}; /metrics now:\n{}",
            after.text
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_move_with_the_traffic() {
    let env = TestEnv::start_with(|b| b.env("FLEET_MAX_ATTEMPTS", "5")).await;
    env.github
        .set("flaky-org/flaky", Repo::new().stars(3).fail_first(1, 503));
    let dispatcher = env
        .fleet
        .metrics_port("dispatcher")
        .await
        .expect("the dispatcher logs its metrics port");
    let worker = env
        .fleet
        .metrics_port("w1")
        .await
        .expect("the worker logs its metrics port");
    let d0 = Scrape::fetch(dispatcher).await;
    let w0 = Scrape::fetch(worker).await;

    // Two explicit requests, one routed by the rules, one rejected, one retried once.
    env.client
        .publish_json(&json!({"id": "m-exp", "task": "text.transform",
            "input": {"text": "m", "op": "upper"}}))
        .await;
    env.client
        .publish_with_id("m-rules", "Make the letter `x` uppercase")
        .await;
    env.client
        .publish_json(&json!({"id": "m-unknown", "task": "no.such.task", "input": {}}))
        .await;
    env.client
        .publish_json(&json!({"id": "m-retry", "task": "github.repo_info",
            "input": {"owner": "flaky-org", "repo": "flaky"}}))
        .await;
    for (id, status) in [
        ("m-exp", "succeeded"),
        ("m-rules", "succeeded"),
        ("m-unknown", "rejected"),
        ("m-retry", "succeeded"),
    ] {
        let result = env.client.wait_result(id, WAIT).await;
        assert_outcome(&result, status, None);
    }
    assert_eq!(
        env.client
            .result("m-retry")
            .await
            .map(|r| r["attempts"].clone()),
        Some(json!(2))
    );

    assert_moved(
        "dispatcher",
        dispatcher,
        &d0,
        &[
            ("fleet_requests_received_total", &[], 4.0),
            (
                "fleet_requests_classified_total",
                &[("method", "explicit")],
                2.0,
            ),
            (
                "fleet_requests_classified_total",
                &[("method", "patterns")],
                1.0,
            ),
            ("fleet_requests_classified_total", &[("method", "llm")], 0.0),
            (
                "fleet_requests_rejected_total",
                &[("kind", "unknown_task")],
                1.0,
            ),
            ("fleet_requests_rejected_total", &[], 1.0),
        ],
    )
    .await;
    assert_moved(
        "worker",
        worker,
        &w0,
        &[
            (
                "fleet_tasks_started_total",
                &[("task", "text.transform")],
                2.0,
            ),
            (
                "fleet_tasks_started_total",
                &[("task", "github.repo_info")],
                2.0,
            ),
            (
                "fleet_tasks_succeeded_total",
                &[("task", "text.transform")],
                2.0,
            ),
            (
                "fleet_tasks_succeeded_total",
                &[("task", "github.repo_info")],
                1.0,
            ),
            (
                "fleet_tasks_retried_total",
                &[("task", "github.repo_info")],
                1.0,
            ),
            (
                "fleet_tasks_retried_total",
                &[("task", "text.transform")],
                0.0,
            ),
            ("fleet_tasks_failed_total", &[], 0.0),
            ("fleet_tasks_dead_total", &[], 0.0),
            (
                "fleet_task_duration_seconds_count",
                &[("task", "text.transform")],
                2.0,
            ),
            (
                "fleet_task_duration_seconds_count",
                &[("task", "github.repo_info")],
                2.0,
            ),
        ],
    )
    .await;
}
