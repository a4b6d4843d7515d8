//! Scenario 8: a worker killed mid-task; another worker finishes it, one result.

use std::time::Duration;

use fleet_tests::{Repo, TestEnv, WAIT, assert_outcome};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn killed_worker_task_is_redelivered_and_finished_once() {
    // FLEET_ACK_WAIT=2s while a task takes ~3 s: in-progress acks must keep it alive.
    let mut env = TestEnv::start_with(|b| b.workers(&["a", "b"])).await;
    env.github.set(
        "slow-org/slow",
        Repo::new().stars(1).delay(Duration::from_secs(3)),
    );
    let watch = env.client.watch_status("kill-1").await;
    env.client
        .publish_json(&json!({
            "id": "kill-1",
            "task": "github.repo_info",
            "input": {"owner": "slow-org", "repo": "slow"},
        }))
        .await;

    let running = watch.wait_for_state("running", WAIT).await;
    let owner = running["worker"]
        .as_str()
        .unwrap_or_else(|| panic!("running status names no worker: {running:#}"))
        .to_string();
    assert!(
        owner == "a" || owner == "b",
        "status `worker` should be the FLEET_WORKER_ID (a or b): {running:#}"
    );
    let survivor = if owner == "a" { "b" } else { "a" };
    // Kill it mid-task: once its GitHub call is under way.
    fleet_tests::poll_until(WAIT, || async {
        (env.github.requests("slow-org/slow") >= 1).then_some(())
    })
    .await
    .expect("the worker called GitHub");
    env.fleet.kill_worker(&owner);

    let result = env.client.wait_result("kill-1", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(env.client.result_count("kill-1").await, 1);
    assert!(
        env.github.requests("slow-org/slow") >= 2,
        "redelivered after the kill"
    );
    let status = env.client.wait_state("kill-1", "succeeded").await;
    assert_eq!(status["worker"], survivor, "{status:#}");

    // Nothing more happens later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.client.result_count("kill-1").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_progress_acks_keep_a_slow_task_alive() {
    // One worker, a task longer than FLEET_ACK_WAIT: it must run once, not be redelivered.
    let env = TestEnv::start().await;
    env.github.set(
        "slow-org/steady",
        Repo::new().stars(2).delay(Duration::from_secs(3)),
    );
    // Submitted through the CLI, which gives up waiting first: exit code 3.
    let out = env
        .cli(&[
            "submit",
            "--id",
            "slow-1",
            "--task",
            "github.repo_info",
            "--input",
            r#"{"owner":"slow-org","repo":"steady"}"#,
            "--wait",
            "--timeout",
            "1s",
        ])
        .await;
    assert_eq!(out.code, Some(3), "timed out waiting: {out}");
    let result = env.client.wait_result("slow-1", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["attempts"], 1, "{result:#}");
    assert_eq!(
        env.github.requests("slow-org/steady"),
        1,
        "redelivered despite in-progress acks"
    );
}
