//! Scenario 9: SIGTERM drains in-flight work and exits 0; nothing is lost.

use std::time::Duration;

use fleet_tests::{Repo, TestEnv, WAIT, assert_outcome};
use serde_json::json;

/// A `github.repo_info` request for `slow-org/<repo>`.
fn request(id: &str, repo: &str) -> serde_json::Value {
    json!({"id": id, "task": "github.repo_info", "input": {"owner": "slow-org", "repo": repo}})
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_tasks_and_exits_zero() {
    // FLEET_DRAIN_GRACE=5s; each task takes ~2 s, so the drain can finish them.
    let mut env = TestEnv::start_with(|b| b.workers(&["t1"])).await;
    let in_flight: Vec<String> = (1..=4).map(|i| format!("term-{i}")).collect();
    let mut watches = Vec::new();
    for (i, id) in in_flight.iter().enumerate() {
        env.github.set(
            &format!("slow-org/slow-{i}"),
            Repo::new().stars(i as u64).delay(Duration::from_secs(2)),
        );
        watches.push(env.client.watch_status(id).await);
        env.client
            .publish_json(&request(id, &format!("slow-{i}")))
            .await;
    }
    // All four are running on t1 (each ~2 s against the fake) when the SIGTERM comes.
    for watch in &watches {
        watch.wait_for_state("running", WAIT).await;
    }
    let still_running = watches
        .iter()
        .filter(|w| w.states().last().map(String::as_str) == Some("running"))
        .count();

    let status = env
        .fleet
        .terminate_worker("t1", Duration::from_secs(10))
        .await;
    let status = status.expect("worker exits within 10 s of SIGTERM (drain grace 5 s)");
    assert!(
        status.success(),
        "worker exit status after SIGTERM: {status}"
    );
    assert!(
        still_running > 0,
        "test set-up: the SIGTERM was meant to hit a busy worker, but all tasks had finished"
    );

    // Queued while no worker runs.
    let queued: Vec<String> = (1..=2).map(|i| format!("late-{i}")).collect();
    env.github.set("slow-org/fast", Repo::new().stars(99));
    for id in &queued {
        env.client.publish_json(&request(id, "fast")).await;
    }
    env.fleet.start_worker("t2");

    for id in in_flight.iter().chain(&queued) {
        let result = env.client.wait_result(id, WAIT).await;
        assert_outcome(&result, "succeeded", None);
        assert_eq!(env.client.result_count(id).await, 1, "one result for {id}");
    }
    // Every process drains and exits 0 on SIGTERM, the dispatcher and an idle worker too.
    let status = env
        .fleet
        .terminate_dispatcher(Duration::from_secs(10))
        .await
        .expect("dispatcher exits within 10 s of SIGTERM");
    assert!(
        status.success(),
        "dispatcher exit status after SIGTERM: {status}"
    );
    let status = env
        .fleet
        .terminate_worker("t2", Duration::from_secs(10))
        .await
        .expect("idle worker exits within 10 s of SIGTERM");
    assert!(
        status.success(),
        "idle worker exit status after SIGTERM: {status}"
    );

    // The drained tasks finished on t1: none was run a second time.
    for i in 0..in_flight.len() {
        assert_eq!(
            env.github.requests(&format!("slow-org/slow-{i}")),
            1,
            "slow-{i} ran again: the drain did not finish and ack it"
        );
    }
}

/// SIGTERM while a process is still starting (NATS not reachable yet) ends it with 0, not 143.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_start_up_exits_zero() {
    let dir = fleet_testkit::bin_dir();
    // A port nothing listens on: the processes keep trying to connect.
    let port = fleet_testkit::free_port().expect("a free port");
    for name in ["dispatcher", "worker"] {
        let bin = fleet_testkit::binary(&dir, name).expect("built binaries");
        let mut child = std::process::Command::new(bin)
            .env("NATS_URL", format!("nats://127.0.0.1:{port}"))
            .env("FLEET_METRICS_PORT", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start");
        tokio::time::sleep(Duration::from_millis(700)).await;
        let pid = child.id().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "{name} did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            status.code(),
            Some(0),
            "{name} exits 0 on SIGTERM while starting"
        );
    }
}
