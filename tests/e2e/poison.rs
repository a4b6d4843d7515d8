//! A flood of poison: every kind of bad input, mixed, with headers that once made dead letters
//! loop, must not stop good requests, and each poison message ends with exactly one result.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use fleet_tests::{TestEnv, assert_outcome};
use serde_json::json;

/// How many poison messages the flood sends.
const POISON: usize = 2000;
/// How many good requests go in among them.
const GOOD: usize = 40;

/// The `n`th poison message: its body and whether it carries a control header.
fn poison(n: usize) -> (Bytes, bool) {
    let body: Bytes = match n % 10 {
        0 => Bytes::from_static(&[0xff, 0xfe, b'x', 0x80]),
        1 => "{\"text\": ".into(),
        2 => "[1, 2, 3]".into(),
        3 => json!({"text": 42}).to_string().into(),
        4 => json!({"metadata": {"k": "v"}}).to_string().into(),
        5 => json!({"task": "no.such.task", "input": {}})
            .to_string()
            .into(),
        6 => json!({"task": "text.transform", "input": {"text": 1}})
            .to_string()
            .into(),
        7 => Bytes::from(vec![b'a'; 10_000]),
        8 => Bytes::new(),
        _ => json!({"task": "text.transform", "input": "not an object"})
            .to_string()
            .into(),
    };
    (body, n.is_multiple_of(3))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_flood_ends_each_message_once_and_serves_good_requests() {
    let env = TestEnv::start_with(|b| b.env("FLEET_MAX_REQUEST_BYTES", "1024")).await;
    let js = env.client.jetstream().clone();
    let mut acks = Vec::with_capacity(POISON);
    for n in 0..POISON {
        let (body, control) = poison(n);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("poison-{n}").as_str());
        headers.insert("X-Caller", "flood");
        if control {
            // Valid on the requests stream, refused on any other: a dead letter that copied it
            // was refused by the DLQ and the request was NAKed forever.
            headers.insert("Nats-Expected-Stream", "FLEET_REQUESTS");
        }
        acks.push(
            js.publish_with_headers("fleet.requests", headers, body)
                .await
                .expect("publish"),
        );
        if n.is_multiple_of(POISON / GOOD) {
            let id = format!("good-{n}");
            env.client
                .publish_json(&json!({"id": id, "task": "text.transform", "input": {"text": "ok", "op": "upper"}}))
                .await;
        }
    }
    for ack in acks {
        ack.await.expect("stored");
    }

    let wait = Duration::from_secs(120);
    for n in (0..POISON).step_by(POISON / GOOD) {
        let result = env.client.wait_result(&format!("good-{n}"), wait).await;
        assert_outcome(&result, "succeeded", None);
    }
    for n in 0..POISON {
        let id = format!("poison-{n}");
        let result = env.client.wait_result(&id, wait).await;
        assert_eq!(result["status"], "rejected", "{id}: {result:#}");
    }
    let counts = env.client.result_counts().await;
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert_eq!(counts.len(), POISON + GOOD, "one result per message");

    let letters = env.client.dead_letters().await;
    let unreadable = letters
        .iter()
        .filter(|d| d.subject.ends_with(".unreadable"))
        .count();
    assert!(
        unreadable >= POISON / 10,
        "non-UTF-8 bytes are kept: {unreadable}"
    );
    assert!(
        letters.iter().all(|d| d.payload.len() <= 4096),
        "unreadable bytes are kept truncated"
    );
}
