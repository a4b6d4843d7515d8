//! Scenario 10: the nats-server restarts in the middle of a burst; nothing lost or duplicated.

use std::time::Duration;

use fleet_tests::TestEnv;
use serde_json::json;

/// How many requests in the burst.
const BURST: usize = 200;

#[tokio::test(flavor = "multi_thread")]
async fn server_restart_mid_burst_loses_and_duplicates_nothing() {
    let mut env = TestEnv::start().await;
    let ids: Vec<String> = (0..BURST).map(|i| format!("burst-{i}")).collect();

    for (i, id) in ids.iter().enumerate() {
        if i == BURST / 2 {
            env.nats.restart();
        }
        // Retries until acked, so publishes ride out the restart (body id only: a publish
        // retried after a lost ack is a duplicate the fleet must absorb).
        env.client
            .publish_json(&json!({
                "id": id,
                "task": "text.transform",
                "input": {"text": format!("item {i}"), "op": "upper"},
            }))
            .await;
    }

    let all_done = fleet_tests::poll_until(Duration::from_secs(60), || async {
        let counts = env.client.result_counts().await;
        ids.iter().all(|id| counts.contains_key(id)).then_some(())
    })
    .await;
    let counts = env.client.result_counts().await;
    let missing: Vec<&String> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
    if all_done.is_none() {
        eprintln!("---- nats-server ----\n{}", env.nats.log_tail(30));
    }
    assert!(
        missing.is_empty(),
        "{} requests have no result: {missing:?}",
        missing.len()
    );

    let duplicated: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        duplicated.is_empty(),
        "results stored more than once: {duplicated:?}"
    );

    for (i, id) in ids.iter().enumerate() {
        let result = env.client.result(id).await.expect("stored result");
        assert_eq!(result["status"], "succeeded", "{result:#}");
        assert_eq!(
            result["output"],
            json!({"text": format!("ITEM {i}")}),
            "{result:#}"
        );
        env.client.wait_state(id, "succeeded").await;
    }
}
