//! The worker's lifecycle rules, one delivery at a time.

use std::time::Duration;

use fleet_common::{
    lifecycle::Replayed,
    messages::{ClassifiedBy, Outcome, State, TaskResult},
};
use fleet_tests::Repo;
use futures::StreamExt;

use super::rig::{Rig, TASK, next, one};

const ACK_WAIT: Duration = Duration::from_secs(30);

/// A result another worker stored first.
fn stored_elsewhere(id: &str, status: Outcome) -> TaskResult {
    TaskResult {
        request_id: id.to_owned(),
        status,
        task: Some(TASK.to_owned()),
        input: None,
        output: None,
        error: None,
        attempts: 1,
        classified_by: Some(ClassifiedBy::Explicit),
        routing: None,
        trace_id: None,
        metadata: None,
        given_id: None,
        worker: Some("faster-worker".into()),
        finished_at: None,
    }
}

/// The worker that loses the race to store a result takes the stored one: its own outcome
/// (here a permanent failure) never reaches the status beside a `succeeded` result.
#[tokio::test(flavor = "multi_thread")]
async fn the_loser_of_a_result_race_takes_the_stored_outcome() {
    let rig = Rig::start().await;
    rig.github.set("lost/race", Repo::new().not_found());
    let consumer = rig.task_consumer(ACK_WAIT).await;
    rig.queue("race-1", "lost/race", 1).await;
    rig.fleet
        .conclude(stored_elsewhere("race-1", Outcome::Succeeded))
        .await
        .expect("the faster worker's result");

    let worker = rig.worker("slow-worker", 5, ACK_WAIT);
    worker.deliver(one(&consumer).await).await;

    assert_eq!(rig.github.requests("lost/race"), 1, "the task ran");
    let result = rig.result("race-1").await.expect("a result");
    assert_eq!(result.status, Outcome::Succeeded);
    assert_eq!(rig.result_count("race-1").await, 1);
    let status = rig.status("race-1").await.expect("a status");
    assert_eq!(
        status["state"], "succeeded",
        "the stored result's: {status:#}"
    );
    assert!(
        next(&consumer, Duration::from_millis(300)).await.is_none(),
        "acknowledged"
    );
}

/// A slow task shows `running`, but never over a final state another worker wrote meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn running_never_steps_back_over_a_final_state() {
    let rig = Rig::start().await;
    rig.github
        .set("slow/one", Repo::new().delay(Duration::from_millis(700)));
    let consumer = rig.task_consumer(ACK_WAIT).await;
    rig.queue("slow-1", "slow/one", 1).await;
    let kv = rig.js.get_key_value("fleet-status").await.expect("bucket");
    let mut watch = kv.watch("slow-1").await.expect("watch");

    let worker = rig.worker("w1", 5, ACK_WAIT);
    let msg = one(&consumer).await;
    let handler = worker.handler.clone();
    let run = tokio::spawn(async move { handler.handle(msg).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    rig.fleet
        .conclude(stored_elsewhere("slow-1", Outcome::Succeeded))
        .await
        .expect("another worker finishes first");
    run.await.expect("handler");
    worker.settled().await;

    let mut states = Vec::new();
    while let Ok(Some(Ok(entry))) =
        tokio::time::timeout(Duration::from_millis(300), watch.next()).await
    {
        let record: serde_json::Value = serde_json::from_slice(&entry.value).expect("json");
        states.push(record["state"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        states.last().map(String::as_str),
        Some("succeeded"),
        "{states:?}"
    );
    let first_final = states.iter().position(|s| s == "succeeded");
    assert!(
        first_final.is_some_and(|f| states[f..].iter().all(|s| s == "succeeded")),
        "nothing after the final state: {states:?}"
    );
}

/// A results outage delays the work; redeliveries during it never use attempts up.
#[tokio::test(flavor = "multi_thread")]
async fn an_outage_never_turns_work_into_dead() {
    let rig = Rig::start().await;
    rig.github.set("out/age", Repo::new().stars(5));
    let consumer = rig.task_consumer(ACK_WAIT).await;
    rig.queue("outage-1", "out/age", 1).await;
    let worker = rig.worker("w1", 2, ACK_WAIT);

    rig.js
        .delete_stream("FLEET_RESULTS")
        .await
        .expect("the results store goes away");
    // Three deliveries during the outage (a read of the missing store waits out the
    // JetStream request timeout, 10 s): more than the two attempts allowed.
    for _ in 0..3 {
        worker.deliver(one(&consumer).await).await;
    }
    // The store comes back (as a restarted process would set it up).
    let _ = super::rig::open(&rig.nats.url()).await;
    worker.deliver(one(&consumer).await).await;

    let result = rig.result("outage-1").await.expect("a result");
    assert_eq!(result.status, Outcome::Succeeded, "{result:?}");
    assert_eq!(result.attempts, 1, "one run ended, in success: {result:?}");
    let status = rig.status("outage-1").await.expect("status");
    assert_eq!(status["state"], "succeeded");
}

/// A task given back at shutdown is not an attempt: the next delivery runs the same attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_hand_back_at_shutdown_counts_nothing() {
    let rig = Rig::start().await;
    rig.github
        .set("hand/back", Repo::new().delay(Duration::from_millis(800)));
    let consumer = rig.task_consumer(ACK_WAIT).await;
    rig.queue("handback-1", "hand/back", 1).await;

    let stopping = rig.worker("w1", 1, ACK_WAIT);
    let msg = one(&consumer).await;
    let handler = stopping.handler.clone();
    let run = tokio::spawn(async move { handler.handle(msg).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    stopping.hard_stop.cancel();
    run.await.expect("handler");
    stopping.settled().await;
    let record = rig.record("handback-1").await.expect("status");
    assert_eq!(record.state, State::Retrying, "{record:?}");
    assert!(record.errors.is_empty(), "nothing counted: {record:?}");

    let next_worker = rig.worker("w2", 1, ACK_WAIT);
    next_worker.deliver(one(&consumer).await).await;
    let result = rig.result("handback-1").await.expect("a result");
    assert_eq!(result.status, Outcome::Succeeded, "{result:?}");
    assert_eq!(result.attempts, 1);
}

/// A worker lost mid-run (killed, or stopped past the ack wait) used up an attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_worker_counts_as_an_attempt() {
    let rig = Rig::start().await;
    rig.github
        .set("lost/worker", Repo::new().delay(Duration::from_secs(3)));
    let ack_wait = Duration::from_secs(1);
    let consumer = rig.task_consumer(ack_wait).await;
    rig.queue("lost-1", "lost/worker", 1).await;

    let doomed = rig.worker("doomed", 1, ack_wait);
    let msg = one(&consumer).await;
    let handler = doomed.handler.clone();
    let run = tokio::spawn(async move { handler.handle(msg).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.abort();

    let survivor = rig.worker("survivor", 1, ack_wait);
    survivor.deliver(one(&consumer).await).await;
    let result = rig.result("lost-1").await.expect("a result");
    assert_eq!(result.status, Outcome::Dead, "{result:?}");
    let message = result.error.map(|e| e.message).unwrap_or_default();
    assert!(message.contains("stopped before it finished"), "{message}");
    let (letters, _) = rig
        .fleet
        .dead_letters(Some(TASK), 1, 10)
        .await
        .expect("dlq");
    assert_eq!(letters.len(), 1);
}

/// Replay takes the newest dead letter of an id, only over a `dead` result; twice runs once.
#[tokio::test(flavor = "multi_thread")]
async fn replay_runs_a_dead_request_once() {
    let rig = Rig::start().await;
    rig.github.set("dead/end", Repo::new().always_fail(503));
    let consumer = rig.task_consumer(ACK_WAIT).await;
    rig.queue("replay-1", "dead/end", 1).await;
    let worker = rig.worker("w1", 1, ACK_WAIT);
    worker.deliver(one(&consumer).await).await;
    assert_eq!(
        rig.result("replay-1").await.map(|r| r.status),
        Some(Outcome::Dead)
    );

    // A second dead letter for the same id (an older series): replay still runs one task.
    let (letters, _) = rig
        .fleet
        .dead_letters(Some(TASK), 1, 10)
        .await
        .expect("dlq");
    let letter = letters.first().expect("a dead letter");
    stray_dead_letter(&rig, "replay-1", letter.payload.clone()).await;

    rig.github.set("dead/end", Repo::new().stars(1));
    assert_eq!(
        rig.fleet.replay("replay-1").await.expect("replay"),
        Replayed::Queued {
            task: TASK.to_owned()
        }
    );
    assert_ne!(
        rig.fleet.replay("replay-1").await.expect("replay again"),
        Replayed::Queued {
            task: TASK.to_owned()
        },
        "a second replay queues nothing"
    );
    let record = rig.record("replay-1").await.expect("status");
    assert_eq!(record.state, State::Queued);
    assert!(record.errors.is_empty(), "a new attempt series: {record:?}");
    let (left, _) = rig
        .fleet
        .dead_letters(Some(TASK), 1, 10)
        .await
        .expect("dlq");
    assert!(left.is_empty(), "the id's dead letters are gone: {left:?}");

    worker.deliver(one(&consumer).await).await;
    assert!(
        next(&consumer, Duration::from_millis(500)).await.is_none(),
        "one task was queued, not two"
    );
    let result = rig.result("replay-1").await.expect("a result");
    assert_eq!(result.status, Outcome::Succeeded);
    assert_eq!(rig.result_count("replay-1").await, 1);

    // A stray dead letter of a request that has since succeeded replays nothing.
    stray_dead_letter(&rig, "replay-1", letter.payload.clone()).await;
    assert_eq!(
        rig.fleet.replay("replay-1").await.expect("replay"),
        Replayed::NotDead(Some(State::Succeeded))
    );
    assert_eq!(
        rig.result("replay-1").await.map(|r| r.status),
        Some(Outcome::Succeeded),
        "the succeeded result is untouched"
    );
}

/// Publishes a raw task message on `subject`, as anyone with publish rights could.
async fn publish_raw(rig: &Rig, subject: &str, id: &str, task: &str, input: serde_json::Value) {
    let body = serde_json::json!({
        "request_id": id, "task": task, "input": input, "classified_by": "explicit",
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    rig.js
        .publish_with_headers(subject.to_owned(), headers, body.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

/// The worker runs what the subject says, and checks the input against the task's schema
/// itself: a message published behind the dispatcher's back runs nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_worker_checks_the_subject_and_the_schema_itself() {
    let rig = Rig::start().await;
    rig.github.set_default(Repo::new().stars(1));
    let consumer = rig.task_consumer(ACK_WAIT).await;
    let worker = rig.worker("w1", 5, ACK_WAIT);

    publish_raw(
        &rig,
        "fleet.tasks.github.repo_info",
        "wrong-task",
        "text.transform",
        serde_json::json!({"text": "a", "op": "upper"}),
    )
    .await;
    worker.deliver(one(&consumer).await).await;
    let result = rig.result("wrong-task").await.expect("a result");
    assert_eq!(result.status, Outcome::Failed, "{result:?}");

    publish_raw(
        &rig,
        "fleet.tasks.github.repo_info",
        "bad-input",
        TASK,
        serde_json::json!({"owner": "x", "repo": 5}),
    )
    .await;
    worker.deliver(one(&consumer).await).await;
    let result = rig.result("bad-input").await.expect("a result");
    assert_eq!(result.status, Outcome::Failed, "{result:?}");
    assert_eq!(
        result.error.map(|e| e.kind),
        Some(fleet_common::messages::ErrorKind::InvalidInput)
    );
    assert!(
        rig.github.request_counts().is_empty(),
        "nothing reached GitHub: {:?}",
        rig.github.request_counts()
    );
}

/// One attempt runs at most its timeout: past it the attempt is a failed one (and its HTTP call
/// is dropped), so a hung task ends in the dead-letter queue instead of running forever.
#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_past_its_timeout_fails_and_counts() {
    let rig = Rig::start().await;
    rig.github
        .set("hung/call", Repo::new().delay(Duration::from_secs(5)));
    let consumer = rig.task_consumer(ACK_WAIT).await;
    rig.queue("timeout-1", "hung/call", 1).await;
    let worker = rig.worker_with_timeout("w1", 1, ACK_WAIT, Duration::from_millis(400));
    let started = std::time::Instant::now();
    worker.deliver(one(&consumer).await).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let result = rig.result("timeout-1").await.expect("a result");
    assert_eq!(result.status, Outcome::Dead, "{result:?}");
    let message = result.error.map(|e| e.message).unwrap_or_default();
    assert!(
        message.contains("ran longer than its 400ms limit"),
        "{message}"
    );
}

/// Publishes a dead letter for `id` behind the fleet's back (an older series' leftover).
async fn stray_dead_letter(rig: &Rig, id: &str, payload: bytes::Bytes) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Fleet-Request-Id", id);
    rig.js
        .publish_with_headers("fleet.dlq.github.repo_info", headers, payload)
        .await
        .expect("publish")
        .await
        .expect("stored");
}
