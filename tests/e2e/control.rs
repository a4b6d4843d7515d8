//! People and requests: `fleet cancel` ends a request in any state that is not final (a
//! running task is stopped, its result is `cancelled` once); a task that `requires_approval`
//! waits in `awaiting_approval` for `fleet approve` or `fleet deny`, with its deadline still
//! running; `fleet list` pages requests by state and task.

use std::time::{Duration, Instant};

use fleet_tests::{Repo, TempDir, TestEnv, WAIT, assert_outcome};
use serde_json::{Value, json};

fn note(id: &str, text: &str) -> Value {
    json!({"id": id, "task": "note.append", "input": {"note": "ops", "text": text}})
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_running_task_and_a_scheduled_one_never_runs() {
    let env = TestEnv::start().await;
    env.github
        .set("slow/cancel", Repo::new().delay(Duration::from_secs(30)));
    env.client
        .publish_json(&json!({
            "id": "to-cancel",
            "task": "github.repo_info",
            "input": {"owner": "slow", "repo": "cancel"},
        }))
        .await;
    env.client.wait_state("to-cancel", "running").await;

    let asked = Instant::now();
    let out = env.cli(&["cancel", "to-cancel", "--as", "tester"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    let result = env.client.wait_result("to-cancel", WAIT).await;
    let message = assert_outcome(&result, "cancelled", Some("cancelled"));
    assert!(message.contains("tester"), "{message}");
    // The worker was told: it settles the request (its final state write) at once, long before
    // the 30 s call would have ended, and its own result never replaces the cancellation.
    let status = env.client.wait_state("to-cancel", "cancelled").await;
    assert!(asked.elapsed() < Duration::from_secs(5), "{status:#}");
    let worker_done = fleet_tests::poll_until(Duration::from_secs(5), || async {
        env.fleet
            .logs()
            .contains("the running task was stopped")
            .then_some(())
    })
    .await;
    assert!(
        worker_done.is_some(),
        "the worker stops the task when told:\n{}",
        env.fleet.logs()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.client.result_count("to-cancel").await, 1);
    assert_eq!(
        env.client.result("to-cancel").await.expect("result")["status"],
        "cancelled"
    );

    // Cancelling a finished request says so and changes nothing.
    let again = env.cli(&["cancel", "to-cancel", "--json"]).await;
    assert_eq!(again.code, Some(1), "{again}");
    assert_eq!(again.json()["changed"], false, "{again}");
    assert_eq!(env.client.result_count("to-cancel").await, 1);
    let unknown = env.cli(&["cancel", "never-sent"]).await;
    assert_eq!(unknown.code, Some(1), "{unknown}");

    // A scheduled request: cancelled while it waits, it never runs.
    env.client
        .publish_json(&json!({
            "id": "scheduled-cancel",
            "task": "text.transform",
            "input": {"text": "x", "op": "upper"},
            "delay": "2s",
        }))
        .await;
    env.client.wait_state("scheduled-cancel", "scheduled").await;
    let out = env.cli(&["cancel", "scheduled-cancel"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let result = env.client.result("scheduled-cancel").await.expect("result");
    assert_outcome(&result, "cancelled", Some("cancelled"));
    assert_eq!(result["attempts"], 0);
    assert_eq!(env.client.result_count("scheduled-cancel").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_is_asked_for_and_approve_runs_deny_rejects_deadline_expires() {
    let notes = TempDir::new("notes").expect("temp dir");
    let dir = notes.path().to_string_lossy().into_owned();
    let env = TestEnv::start_with(|b| b.env("FLEET_NOTES_DIR", &dir)).await;
    let file = notes.path().join("ops.md");

    // Approved: it runs once approved, and only then.
    env.client
        .publish_json(&note("approve-me", "deployed"))
        .await;
    let waiting = env
        .client
        .wait_state("approve-me", "awaiting_approval")
        .await;
    assert_eq!(waiting["task"], "note.append", "{waiting:#}");
    assert_eq!(waiting["input"]["text"], "deployed", "{waiting:#}");
    assert!(waiting["approvers"].is_string(), "{waiting:#}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(env.client.result("approve-me").await.is_none());
    assert!(!file.exists(), "nothing is written before approval");
    let status = env.cli(&["status", "approve-me"]).await;
    assert!(status.stdout.contains("awaiting_approval"), "{status}");

    let out = env
        .cli(&["approve", "approve-me", "--as", "alice", "--json"])
        .await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.json()["status"]["approved_by"], "alice", "{out}");
    let result = env.client.wait_result("approve-me", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(
        std::fs::read_to_string(&file).expect("note written"),
        "deployed\n"
    );
    let approved = env.client.wait_state("approve-me", "succeeded").await;
    assert_eq!(
        approved["approved_by"], "alice",
        "the final record says who approved it: {approved:#}"
    );
    let again = env.cli(&["approve", "approve-me"]).await;
    assert_eq!(again.code, Some(1), "{again}");

    // A denial that has claimed the record (its compare-and-set done, its result not stored
    // yet) wins over an approval racing it: the approval runs nothing.
    env.client.publish_json(&note("claimed", "race")).await;
    env.client.wait_state("claimed", "awaiting_approval").await;
    env.client
        .change_status("claimed", |r| r["denied_by"] = json!("carol"))
        .await;
    let raced = env.cli(&["approve", "claimed", "--as", "alice"]).await;
    assert_ne!(raced.code, Some(0), "{raced}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(env.client.result("claimed").await.is_none(), "nothing ran");
    let out = env.cli(&["deny", "claimed", "--as", "carol"]).await;
    assert_eq!(out.code, Some(0), "the claiming denial completes: {out}");
    assert_outcome(
        &env.client.wait_result("claimed", WAIT).await,
        "rejected",
        Some("denied"),
    );

    // Denied: rejected with kind `denied` and the reason; never runs.
    env.client.publish_json(&note("deny-me", "rm -rf")).await;
    env.client.wait_state("deny-me", "awaiting_approval").await;
    let out = env
        .cli(&["deny", "deny-me", "--reason", "not today", "--as", "bob"])
        .await;
    assert_eq!(out.code, Some(0), "{out}");
    let result = env.client.wait_result("deny-me", WAIT).await;
    let message = assert_outcome(&result, "rejected", Some("denied"));
    assert!(
        message.contains("not today") && message.contains("bob"),
        "{message}"
    );
    assert_eq!(result["attempts"], 0);
    env.client.wait_state("deny-me", "rejected").await;
    assert_eq!(
        env.cli(&["approve", "deny-me"]).await.code,
        Some(1),
        "a denied request cannot be approved"
    );

    // The deadline still applies while it waits for approval.
    let mut late = note("expire-me", "too slow");
    late["deadline"] = json!("2s");
    env.client.publish_json(&late).await;
    env.client
        .wait_state("expire-me", "awaiting_approval")
        .await;
    let result = env.client.wait_result("expire-me", WAIT).await;
    assert_outcome(&result, "expired", Some("deadline_exceeded"));
    assert_eq!(
        env.cli(&["approve", "expire-me"]).await.code,
        Some(1),
        "an expired request cannot be approved"
    );

    // Cancelled while it awaits approval: it ends `cancelled` and can no longer be approved.
    env.client.publish_json(&note("cancel-me", "never")).await;
    env.client
        .wait_state("cancel-me", "awaiting_approval")
        .await;
    let out = env.cli(&["cancel", "cancel-me"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_outcome(
        &env.client.wait_result("cancel-me", WAIT).await,
        "cancelled",
        Some("cancelled"),
    );
    assert_eq!(env.cli(&["approve", "cancel-me"]).await.code, Some(1));

    // A task published straight on fleet.tasks.note.append, skipping the dispatcher, never
    // runs unapproved.
    let task = json!({
        "request_id": "sneaky",
        "task": "note.append",
        "input": {"note": "ops", "text": "sneaky"},
        "classified_by": "explicit",
    });
    let ack = env
        .client
        .jetstream()
        .publish("fleet.tasks.note.append", task.to_string().into())
        .await
        .expect("publish");
    ack.await.expect("stored");
    let result = env.client.wait_result("sneaky", WAIT).await;
    assert_outcome(&result, "rejected", Some("denied"));
    assert_eq!(
        std::fs::read_to_string(&file).expect("note"),
        "deployed\n",
        "only the approved line is in the note"
    );

    // `fleet list`: by state and task, newest first, paged.
    env.client.publish_json(&note("list-1", "a")).await;
    env.client.wait_state("list-1", "awaiting_approval").await;
    env.client.publish_json(&note("list-2", "b")).await;
    env.client.wait_state("list-2", "awaiting_approval").await;
    let listed = env
        .cli(&["list", "--state", "awaiting_approval", "--json"])
        .await;
    assert_eq!(listed.code, Some(0), "{listed}");
    let listed = listed.json();
    let ids: Vec<&str> = listed["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    assert_eq!(ids, ["list-2", "list-1"], "{listed:#}");
    let page = env
        .cli(&[
            "list",
            "--task",
            "note.append",
            "--limit",
            "2",
            "--page",
            "2",
            "--json",
        ])
        .await
        .json();
    assert_eq!(page["total"], 8, "{page:#}");
    assert_eq!(
        page["requests"].as_array().map(Vec::len),
        Some(2),
        "{page:#}"
    );
    let text = env.cli(&["list", "--state", "rejected"]).await;
    assert!(
        text.stdout.contains("deny-me") && text.stdout.contains("sneaky"),
        "{text}"
    );
    assert!(!text.stdout.contains("approve-me"), "{text}");
}

/// Approval is the catalog's policy, not the router's: a request the LLM routes to a task that
/// requires approval waits for it like any other, and the LLM's answer cannot change that.
#[tokio::test(flavor = "multi_thread")]
async fn an_llm_routed_request_still_waits_for_approval() {
    let openai = fleet_tests::FakeOpenAi::start().await;
    let notes = TempDir::new("notes").expect("temp dir");
    let dir = notes.path().to_string_lossy().into_owned();
    let env = TestEnv::start_with(|b| b.openai(&openai).env("FLEET_NOTES_DIR", &dir)).await;
    openai.push(fleet_tests::Reply::route(
        "note.append",
        json!({"note": "release", "text": "ship it"}),
    ));
    env.client
        .publish_json(
            &json!({"id": "llm-note", "text": "Could you jot down ship it in the release note?"}),
        )
        .await;
    let waiting = env.client.wait_state("llm-note", "awaiting_approval").await;
    assert_eq!(waiting["task"], "note.append", "{waiting:#}");
    assert_eq!(waiting["classified_by"], "llm", "{waiting:#}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(env.client.result("llm-note").await.is_none());
    assert!(!notes.path().join("release.md").exists());
    let out = env.cli(&["deny", "llm-note"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_outcome(
        &env.client.wait_result("llm-note", WAIT).await,
        "rejected",
        Some("denied"),
    );
}

/// Everything `fleet cancel`, `approve` and `deny` do works from a plain `nats pub` / `nats req`
/// on `fleet.cancel.<id>`, `fleet.approve.<id>` and `fleet.deny.<id>` (the body is the reason).
#[tokio::test(flavor = "multi_thread")]
async fn plain_nats_cancels_approves_and_denies() {
    let notes = TempDir::new("notes").expect("temp dir");
    let dir = notes.path().to_string_lossy().into_owned();
    let env = TestEnv::start_with(|b| b.env("FLEET_NOTES_DIR", &dir)).await;
    let nats = env.client.nats();
    let ask = |subject: String, body: &'static str| async move {
        let reply = nats
            .request(subject, body.into())
            .await
            .expect("an answer from a dispatcher");
        serde_json::from_slice::<Value>(&reply.payload).expect("JSON answer")
    };

    env.client
        .publish_json(&note("nats-approve", "via nats"))
        .await;
    env.client
        .wait_state("nats-approve", "awaiting_approval")
        .await;
    let answer = ask("fleet.approve.nats-approve".into(), "").await;
    assert_eq!(answer["changed"], true, "{answer:#}");
    assert_outcome(
        &env.client.wait_result("nats-approve", WAIT).await,
        "succeeded",
        None,
    );

    env.client.publish_json(&note("nats-deny", "nope")).await;
    env.client
        .wait_state("nats-deny", "awaiting_approval")
        .await;
    let answer = ask("fleet.deny.nats-deny".into(), "no ticket").await;
    assert_eq!(answer["changed"], true, "{answer:#}");
    let message = assert_outcome(
        &env.client.wait_result("nats-deny", WAIT).await,
        "rejected",
        Some("denied"),
    );
    assert!(message.contains("no ticket"), "{message}");

    // A plain publish, no reply: the scheduled request is cancelled and never runs.
    env.client
        .publish_json(&json!({
            "id": "nats-cancel",
            "task": "text.transform",
            "input": {"text": "x", "op": "upper"},
            "delay": "2s",
        }))
        .await;
    env.client.wait_state("nats-cancel", "scheduled").await;
    nats.publish("fleet.cancel.nats-cancel", "".into())
        .await
        .expect("publish");
    let result = env.client.wait_result("nats-cancel", WAIT).await;
    assert_outcome(&result, "cancelled", Some("cancelled"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.client.result_count("nats-cancel").await, 1);
    let answer = ask("fleet.cancel.nats-cancel".into(), "").await;
    assert_eq!(answer["changed"], false, "{answer:#}");
}
