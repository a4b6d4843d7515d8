//! Time: `delay` / `not_before` keep a request `scheduled` until its time, across restarts of
//! the dispatcher and of nats-server; `deadline` ends a request `expired`, whether it is still
//! waiting (it never runs) or running (the task is stopped).

use std::time::{Duration, Instant};

use fleet_tests::{Repo, TestEnv, WAIT, assert_outcome};
use serde_json::json;

/// How late a delayed request may start on an idle test fleet (SPEC: within a second; the
/// margin is for a loaded CI machine).
const LATE: Duration = Duration::from_secs(3);

fn upper(id: &str, text: &str) -> serde_json::Value {
    json!({"id": id, "task": "text.transform", "input": {"text": text, "op": "upper"}})
}

#[tokio::test(flavor = "multi_thread")]
async fn delayed_request_is_scheduled_then_runs_at_its_time() {
    let env = TestEnv::start().await;
    let mut request = upper("later", "later");
    request["delay"] = json!("2s");
    let sent = Instant::now();
    // A plain JetStream publish, as `nats pub` would send it.
    env.client.publish_json(&request).await;

    let scheduled = env.client.wait_state("later", "scheduled").await;
    assert!(
        scheduled["not_before"].is_string(),
        "the record says when it runs: {scheduled:#}"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        env.client.result("later").await.is_none(),
        "nothing runs before its time"
    );
    let result = env.client.wait_result("later", WAIT).await;
    let waited = sent.elapsed();
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["output"]["text"], "LATER");
    assert!(waited >= Duration::from_secs(2), "ran early: {waited:?}");
    assert!(
        waited < Duration::from_secs(2) + LATE,
        "ran late: {waited:?}"
    );

    // `not_before` as an RFC 3339 time, through the CLI's --delay as well.
    let at = time::OffsetDateTime::now_utc() + Duration::from_secs(2);
    let at = at
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let mut request = upper("at-time", "at");
    request["not_before"] = json!(at);
    env.client.publish_json(&request).await;
    let out = env
        .cli(&[
            "submit",
            "--id",
            "cli-delay",
            "--task",
            "text.transform",
            "--input",
            r#"{"text":"cli","op":"upper"}"#,
            "--delay",
            "1s",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_outcome(
        &env.client.wait_result("at-time", WAIT).await,
        "succeeded",
        None,
    );
    assert_outcome(
        &env.client.wait_result("cli-delay", WAIT).await,
        "succeeded",
        None,
    );

    // A delay that is not a duration or a time is a `rejected` request, not ignored.
    let mut bad = upper("bad-delay", "x");
    bad["delay"] = json!("whenever");
    env.client.publish_json(&bad).await;
    let result = env.client.wait_result("bad-delay", WAIT).await;
    let message = assert_outcome(&result, "rejected", Some("bad_request"));
    assert!(message.contains("delay"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delayed_request_survives_restarts_of_the_dispatcher_and_nats_server() {
    let mut env = TestEnv::start().await;
    let mut request = upper("survivor", "still here");
    request["delay"] = json!("6s");
    let sent = Instant::now();
    env.client.publish_json(&request).await;
    env.client.wait_state("survivor", "scheduled").await;

    env.fleet.start_dispatcher();
    env.nats.restart();
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.fleet.start_dispatcher();

    let result = env.client.wait_result("survivor", WAIT).await;
    let waited = sent.elapsed();
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["output"]["text"], "STILL HERE");
    assert!(waited >= Duration::from_secs(6), "ran early: {waited:?}");
    assert!(
        waited < Duration::from_secs(6) + Duration::from_secs(8),
        "ran far too late: {waited:?}"
    );
    assert_eq!(env.client.result_count("survivor").await, 1);
    env.client.wait_state("survivor", "succeeded").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deadline_expires_a_waiting_request_unrun_and_stops_a_running_one() {
    let env = TestEnv::start().await;

    // Waiting: its deadline comes before its time. It never runs.
    let mut request = upper("too-late", "x");
    request["delay"] = json!("30s");
    request["deadline"] = json!("1s");
    let sent = Instant::now();
    env.client.publish_json(&request).await;
    let result = env.client.wait_result("too-late", WAIT).await;
    assert_outcome(&result, "expired", Some("deadline_exceeded"));
    assert_eq!(result["attempts"], 0, "{result:#}");
    assert!(sent.elapsed() < Duration::from_secs(1) + LATE);
    env.client.wait_state("too-late", "expired").await;

    // Already past at receipt: expired at once.
    let mut request = upper("past", "x");
    request["deadline"] = json!("2020-01-01T00:00:00Z");
    env.client.publish_json(&request).await;
    assert_outcome(
        &env.client.wait_result("past", WAIT).await,
        "expired",
        Some("deadline_exceeded"),
    );

    // Running: the GitHub call takes 20 s, the deadline is 2 s away: the task is stopped.
    env.github
        .set("slow/repo", Repo::new().delay(Duration::from_secs(20)));
    let sent = Instant::now();
    env.client
        .publish_json(&json!({
            "id": "slow-deadline",
            "task": "github.repo_info",
            "input": {"owner": "slow", "repo": "repo"},
            "deadline": "2s",
        }))
        .await;
    let result = env.client.wait_result("slow-deadline", WAIT).await;
    let took = sent.elapsed();
    assert_outcome(&result, "expired", Some("deadline_exceeded"));
    assert!(
        took < Duration::from_secs(2) + LATE,
        "stopped at its deadline, not when the call ended: {took:?}"
    );
    assert_eq!(result["attempts"], 1, "{result:#}");
    env.client.wait_state("slow-deadline", "expired").await;
    assert_eq!(env.client.result_count("slow-deadline").await, 1);

    // A deadline that is met changes nothing.
    let mut request = upper("in-time", "fine");
    request["deadline"] = json!("1m");
    env.client.publish_json(&request).await;
    assert_outcome(
        &env.client.wait_result("in-time", WAIT).await,
        "succeeded",
        None,
    );
}
