//! Scenario 5: retryable errors (5xx, 429 with Retry-After) are retried until they succeed.

use std::time::Duration;

use fleet_tests::{Repo, TestEnv, WAIT, assert_outcome};
use serde_json::json;

/// A `github.repo_info` request for `owner/repo` with id `id`.
fn repo_request(id: &str, owner: &str, repo: &str) -> serde_json::Value {
    json!({"id": id, "task": "github.repo_info", "input": {"owner": owner, "repo": repo}})
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_retried_until_success() {
    let env = TestEnv::start_with(|b| b.env("FLEET_MAX_ATTEMPTS", "5")).await;
    env.github.set(
        "flaky-org/flaky",
        Repo::new().stars(3).contributors(2).fail_first(2, 503),
    );
    let watch = env.client.watch_status("retry-503").await;
    env.client
        .publish_json(&repo_request("retry-503", "flaky-org", "flaky"))
        .await;

    let result = env.client.wait_result("retry-503", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["attempts"], 3, "two 503s then 200: {result:#}");
    assert_eq!(result["output"]["stars"], 3, "{result:#}");
    assert_eq!(env.github.requests("flaky-org/flaky"), 3);
    assert_eq!(env.client.result_count("retry-503").await, 1);

    let final_status = watch.wait_for_state("succeeded", WAIT).await;
    let states = watch.states();
    // A fast first attempt may skip `running` (SPEC: a state that lasts a few milliseconds
    // may be skipped); a retry is always visible, and so is the redelivery that runs it again.
    let retrying = states.iter().position(|s| s == "retrying");
    let running_again = retrying.and_then(|r| states[r..].iter().position(|s| s == "running"));
    assert!(
        retrying.is_some() && running_again.is_some(),
        "expected retrying, then running again, saw {states:?}"
    );
    let rank = |s: &str| match s {
        "received" => 0,
        "queued" => 3,
        "running" | "retrying" => 4,
        _ => 5,
    };
    assert!(
        states.windows(2).all(|w| rank(&w[1]) >= rank(&w[0])),
        "states only move forward: {states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("succeeded"),
        "nothing after the final state: {states:?}"
    );
    assert_eq!(
        final_status["errors"].as_array().map(Vec::len),
        Some(2),
        "one error per failed attempt: {final_status:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_is_retried_after_retry_after() {
    let env = TestEnv::start_with(|b| b.env("FLEET_MAX_ATTEMPTS", "5")).await;
    env.github
        .set("busy-org/busy", Repo::new().stars(9).fail_first(1, 429));
    env.client
        .publish_json(&repo_request("retry-429", "busy-org", "busy"))
        .await;

    let result = env.client.wait_result("retry-429", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["attempts"], 2, "{result:#}");
    assert_eq!(result["output"]["stars"], 9, "{result:#}");
    let times = env.github.request_times("busy-org/busy");
    assert_eq!(times.len(), 2, "one 429, one success");
    // Retry-After: 1 is honoured (a lower bound, not a speed assertion).
    let gap = times[1].duration_since(times[0]);
    assert!(
        gap >= Duration::from_millis(900),
        "retried {gap:?} after a 429 with Retry-After: 1"
    );
}
