//! Requests published before any worker is up wait in their stream and are routed once the
//! workers have published the catalog: none is rejected because the catalog was still filling.

use std::time::Duration;

use fleet_tests::{Client, FakeGithub, Fleet, NatsServer, Repo, WAIT, assert_outcome, poll_until};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn requests_sent_before_the_workers_start_are_all_routed() {
    let nats = NatsServer::start();
    let github = FakeGithub::start().await;
    github.set("octo/hello", Repo::new().stars(5));
    // The dispatcher alone: it waits for a catalog.
    let mut fleet = Fleet::builder(&nats)
        .github(&github)
        .workers(&[])
        .start_unready();
    let waiting = poll_until(Duration::from_secs(15), || {
        let logs = fleet.logs();
        async move { logs.contains("waiting for workers").then_some(()) }
    })
    .await;
    assert!(
        waiting.is_some(),
        "the dispatcher never said it waits for the catalog:\n{}",
        fleet.logs()
    );
    let client = Client::connect(&nats.url()).await;

    let mut ids = Vec::new();
    for i in 0..8 {
        let id = format!("early-explicit-{i}");
        client
            .publish_json(&json!({"id": id, "task": "text.transform",
                "input": {"text": format!("e{i}"), "op": "upper"}}))
            .await;
        ids.push((id, json!({"text": format!("E{i}")})));
    }
    for i in 0..4 {
        let id = format!("early-text-{i}");
        client
            .publish_with_id(&id, format!("Make the letter `t{i}` uppercase"))
            .await;
        ids.push((id, json!({"text": format!("T{i}")})));
    }
    client
        .publish_json(&json!({"id": "early-github", "task": "github.repo_info",
            "input": {"owner": "octo", "repo": "hello"}}))
        .await;

    // Now the worker comes up and publishes its three tasks.
    fleet.start_worker("w1");
    for (id, output) in &ids {
        let result = client.wait_result(id, WAIT).await;
        assert_outcome(&result, "succeeded", None);
        assert_eq!(&result["output"], output, "{result:#}");
    }
    let result = client.wait_result("early-github", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["output"]["stars"], 5, "{result:#}");
    fleet.assert_running();
}

/// A `FLEET_MAX_REQUEST_BYTES` larger than the server's `max_payload` could never be honoured:
/// the dispatcher refuses to start and says what to change.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_limit_beyond_the_servers_max_payload_is_refused_at_start() {
    let dir = fleet_tests::TempDir::new("max-payload").expect("temp dir");
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, "max_payload: 4096\n").expect("write config");
    let conf = conf.display().to_string();
    let nats = NatsServer::start_with(&["-c", &conf], "");
    let bin = fleet_testkit::binary(&fleet_testkit::bin_dir(), "dispatcher").expect("built");
    let out = tokio::process::Command::new(bin)
        .env("NATS_URL", nats.url())
        .env("FLEET_METRICS_PORT", "0")
        .env("FLEET_MAX_REQUEST_BYTES", "65536")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("exits at once")
        .expect("runs");
    assert!(!out.status.success(), "it must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("max_payload") && stderr.contains("4096"),
        "says why: {stderr}"
    );
}
