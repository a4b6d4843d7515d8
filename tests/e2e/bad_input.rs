//! Scenario 3: every kind of bad input gets a `rejected` result, and nothing is dropped.

use fleet_tests::{TestEnv, WAIT, assert_outcome, is_valid_id};
use serde_json::{Value, json};

/// Waits for the result of `id` and checks it is `rejected` with `kind`, never run.
async fn assert_rejected(env: &TestEnv, id: &str, kind: &str) -> Value {
    let result = env.client.wait_result(id, WAIT).await;
    assert_outcome(&result, "rejected", Some(kind));
    assert_eq!(result["request_id"], id, "{result:#}");
    assert_eq!(
        result["attempts"], 0,
        "a rejected request never runs: {result:#}"
    );
    env.client.wait_state(id, "rejected").await;
    assert_eq!(env.client.result_count(id).await, 1, "one result for {id}");
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_rejected_with_a_clear_error() {
    let env = TestEnv::start_with(|b| b.env("FLEET_MAX_REQUEST_BYTES", "1024")).await;
    let raw_bad_bytes: &[u8] = &[0xff, 0xfe, b'h', b'i', 0x80, 0x00];

    // Publish everything first, then look at the outcomes.
    env.client
        .publish_with_id("bad-utf8", bytes::Bytes::from_static(raw_bad_bytes))
        .await;
    env.client.publish_with_id("bad-json", "{not json").await;
    env.client.publish_with_id("bad-array", "[1, 2, 3]").await;
    env.client
        .publish_json(&json!({"id": "bad-empty", "metadata": {"k": "v"}}))
        .await;
    let big = json!({"id": "too-big", "text": "a".repeat(2000)}).to_string();
    env.client.publish_with_id("too-big", big).await;
    env.client
        .publish_json(&json!({"id": "has space!", "text": "Make the letter x uppercase"}))
        .await;
    env.client
        .publish_json(&json!({"id": "unknown-task", "task": "no.such.task", "input": {}}))
        .await;
    env.client
        .publish_json(&json!({
            "id": "bad-op",
            "task": "text.transform",
            "input": {"text": "a", "op": "sideways"},
        }))
        .await;
    env.client
        .publish_json(&json!({
            "id": "no-text",
            "task": "text.transform",
            "input": {"op": "upper"},
        }))
        .await;
    // A priority that is not one.
    env.client
        .publish_json(&json!({
            "id": "bad-priority",
            "text": "Make the letter x uppercase",
            "priority": "urgent",
        }))
        .await;
    // The id only in the Nats-Msg-Id header, for an explicit request with bad input.
    env.client
        .publish_with_id(
            "header-only",
            json!({"task": "text.transform", "input": {"text": 5, "op": "upper"}}).to_string(),
        )
        .await;

    // Not UTF-8: rejected, and the raw bytes are kept in the DLQ.
    assert_rejected(&env, "bad-utf8", "bad_request").await;
    let letter = env
        .client
        .wait_dead_letter(WAIT, |d| d.request_id() == Some("bad-utf8"))
        .await;
    assert_eq!(letter.subject, "fleet.dlq.unreadable", "{letter:?}");
    assert_eq!(
        letter.payload.as_ref(),
        raw_bad_bytes,
        "raw bytes kept: {letter:?}"
    );

    // Not JSON: rejected and kept.
    assert_rejected(&env, "bad-json", "bad_request").await;
    let letter = env
        .client
        .wait_dead_letter(WAIT, |d| d.request_id() == Some("bad-json"))
        .await;
    assert_eq!(letter.subject, "fleet.dlq.unreadable", "{letter:?}");
    assert_eq!(letter.payload.as_ref(), b"{not json", "{letter:?}");

    // JSON that is not a request object.
    assert_rejected(&env, "bad-array", "bad_request").await;
    assert_rejected(&env, "bad-empty", "bad_request").await;
    let result = env.client.result("bad-empty").await.expect("result");
    assert_eq!(
        result["metadata"],
        json!({"k": "v"}),
        "metadata carried even when rejected: {result:#}"
    );

    // A priority other than high, normal, low: the error says which are.
    let result = assert_rejected(&env, "bad-priority", "bad_request").await;
    let message = result["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("priority") && message.contains("\"low\""),
        "{result:#}"
    );

    // Larger than FLEET_MAX_REQUEST_BYTES.
    assert_rejected(&env, "too-big", "too_large").await;

    // A bad id: a generated id, and `given_id` quotes the bad one.
    let result = env
        .client
        .wait_any_result(WAIT, |r| r["given_id"] == "has space!")
        .await;
    assert_outcome(&result, "rejected", Some("bad_request"));
    assert_eq!(result["attempts"], 0, "{result:#}");
    let id = result["request_id"]
        .as_str()
        .expect("a generated request_id");
    assert!(is_valid_id(id), "generated id {id:?} breaks the id rule");
    assert_ne!(id, "has space!");
    env.client.wait_state(id, "rejected").await;

    // Unknown task and input failing the schema.
    assert_rejected(&env, "unknown-task", "unknown_task").await;
    assert_rejected(&env, "bad-op", "invalid_input").await;
    assert_rejected(&env, "no-text", "invalid_input").await;
    assert_rejected(&env, "header-only", "invalid_input").await;

    // None of them ran.
    for result in env.client.results().await {
        assert_ne!(
            result["status"], "succeeded",
            "nothing here should have run: {result:#}"
        );
    }
}
