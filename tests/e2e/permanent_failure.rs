//! Scenario 6: a permanent error (404) fails at once, without retries.

use std::time::Duration;

use fleet_tests::{TestEnv, WAIT, assert_outcome};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn not_found_fails_without_retry() {
    let env = TestEnv::start().await;
    // `ghost-org/ghost-repo` is not scripted: the fake answers 404.
    env.client
        .publish_json(&json!({
            "id": "missing-1",
            "task": "github.repo_info",
            "input": {"owner": "ghost-org", "repo": "ghost-repo"},
        }))
        .await;

    let result = env.client.wait_result("missing-1", WAIT).await;
    let message = assert_outcome(&result, "failed", Some("task_error"));
    assert_eq!(result["attempts"], 1, "{result:#}");
    assert!(
        message.contains("ghost-org/ghost-repo"),
        "the message should name the repo: {message:?}"
    );
    env.client.wait_state("missing-1", "failed").await;

    // No retry happens later either, and nothing goes to the DLQ.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.github.requests("ghost-org/ghost-repo"), 1);
    assert_eq!(env.client.result_count("missing-1").await, 1);
    assert!(
        env.client
            .dead_letters()
            .await
            .iter()
            .all(|d| d.request_id() != Some("missing-1")),
        "a permanent failure is not a dead letter"
    );
}
