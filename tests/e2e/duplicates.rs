//! Scenario 4: the same id twice runs once and stores one result.

use std::time::Duration;

use fleet_tests::{Repo, TestEnv, WAIT, assert_outcome};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_id_runs_once_and_stores_one_result() {
    let env = TestEnv::start().await;
    // Slow enough that the second copy arrives while the first is still running.
    env.github.set(
        "dup-org/dup",
        Repo::new().stars(5).delay(Duration::from_millis(800)),
    );
    let request = json!({
        "id": "dup-1",
        "task": "github.repo_info",
        "input": {"owner": "dup-org", "repo": "dup"},
    });

    // Body id only (no Nats-Msg-Id), so it is the fleet, not the stream, that deduplicates.
    env.client.publish_json(&request).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.client.publish_json(&request).await;

    let result = env.client.wait_result("dup-1", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    let first = env
        .client
        .result_message("dup-1")
        .await
        .expect("the stored result");

    // Once more after the result exists.
    env.client.publish_json(&request).await;
    // Give any wrongly scheduled second run time to happen.
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(
        env.client.result_count("dup-1").await,
        1,
        "exactly one result stored"
    );
    let last = env
        .client
        .result_message("dup-1")
        .await
        .expect("the stored result");
    assert_eq!(
        first.sequence, last.sequence,
        "the stored result was replaced by a second one"
    );
    assert_eq!(
        env.github.requests("dup-org/dup"),
        1,
        "the task ran more than once"
    );
    env.client.wait_state("dup-1", "succeeded").await;
}
