//! Scenario 7: attempts exhausted → `dead` and a dead letter; `fleet dlq replay` revives it.

use fleet_tests::{Repo, TestEnv, WAIT, assert_outcome};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_request_goes_to_dlq_and_replays() {
    // FLEET_MAX_ATTEMPTS=3 (the fast settings).
    let env = TestEnv::start().await;
    env.github
        .set("broken-org/broken", Repo::new().always_fail(500));
    env.client
        .publish_json(&json!({
            "id": "dead-1",
            "task": "github.repo_info",
            "input": {"owner": "broken-org", "repo": "broken"},
            "metadata": {"ticket": 7},
        }))
        .await;

    let result = env.client.wait_result("dead-1", WAIT).await;
    assert_outcome(&result, "dead", Some("exhausted"));
    assert_eq!(result["attempts"], 3, "{result:#}");
    assert_eq!(result["metadata"], json!({"ticket": 7}), "{result:#}");
    assert_eq!(env.github.requests("broken-org/broken"), 3);
    env.client.wait_state("dead-1", "dead").await;

    let letter = env
        .client
        .wait_dead_letter(WAIT, |d| d.request_id() == Some("dead-1"))
        .await;
    assert_eq!(letter.subject, "fleet.dlq.github.repo_info", "{letter:?}");
    let errors = letter.errors();
    assert_eq!(
        errors.as_array().map(Vec::len),
        Some(3),
        "Fleet-Errors: one entry per attempt: {letter:?}"
    );
    let body: Value =
        serde_json::from_slice(&letter.payload).expect("dead letter body is the task JSON");
    assert_eq!(body["request_id"], "dead-1", "{body:#}");
    assert_eq!(
        env.client
            .dead_letters()
            .await
            .iter()
            .filter(|d| d.request_id() == Some("dead-1"))
            .count(),
        1,
        "one dead letter per exhausted request"
    );

    let out = env.cli(&["dlq", "list", "--json"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    let list = out.json();
    assert!(
        list.as_array()
            .is_some_and(|l| l.iter().any(|e| e["request_id"] == "dead-1")),
        "dlq list should show dead-1: {out}"
    );

    // A second dead request, for `--task` and `--all`.
    env.github
        .set("broken-org/other", Repo::new().always_fail(503));
    env.client
        .publish_json(&json!({
            "id": "dead-2",
            "task": "github.repo_info",
            "input": {"owner": "broken-org", "repo": "other"},
        }))
        .await;
    let result = env.client.wait_result("dead-2", WAIT).await;
    assert_outcome(&result, "dead", Some("exhausted"));
    let out = env
        .cli(&["dlq", "list", "--task", "github.repo_info", "--json"])
        .await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json().as_array().map(Vec::len), Some(2), "{out}");
    let out = env
        .cli(&["dlq", "list", "--task", "text.transform", "--json"])
        .await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json(), json!([]), "{out}");

    // GitHub recovers; replay one by id, then the rest with --all.
    env.github
        .set("broken-org/broken", Repo::new().stars(11).contributors(4));
    env.github.set("broken-org/other", Repo::new().stars(12));
    let out = env.cli(&["dlq", "replay", "dead-1"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout.contains("dead-1"),
        "one line per replayed id: {out}"
    );

    let result = env
        .client
        .wait_result_where("dead-1", WAIT, |r| r["status"] != "dead")
        .await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["output"]["stars"], 11, "{result:#}");
    assert_eq!(result["output"]["contributors"], 4, "{result:#}");
    assert_eq!(
        env.client.result_count("dead-1").await,
        1,
        "after a replay the new outcome is the one stored result"
    );
    env.client.wait_state("dead-1", "succeeded").await;

    let out = env.cli(&["dlq", "list", "--json"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    let list = out.json();
    assert!(
        list.as_array()
            .is_some_and(|l| l.len() == 1 && l[0]["request_id"] == "dead-2"),
        "only dead-2 left after replaying dead-1: {out}"
    );

    let out = env.cli(&["dlq", "replay", "--all"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("dead-2"), "{out}");
    let result = env
        .client
        .wait_result_where("dead-2", WAIT, |r| r["status"] != "dead")
        .await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["output"]["stars"], 12, "{result:#}");
    assert_eq!(env.client.result_count("dead-2").await, 1);

    let out = env.cli(&["dlq", "list", "--json"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json(), json!([]), "DLQ empty after the replays: {out}");
}
