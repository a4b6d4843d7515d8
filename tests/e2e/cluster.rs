//! A short chaos run on a three-node NATS cluster with R3 streams (the long one is
//! `fleet-bench chaos --cluster`): `fleet-bench` runs it as a child process, as in `chaos.rs`.
//! The fleet runs with `FLEET_STREAM_REPLICAS=3`; while requests flow, two nodes are killed
//! (SIGKILL, then SIGTERM) and started again, each the leader of one of the fleet's streams or
//! consumers, besides the worker kills, a worker freeze and a dispatcher restart. At the end
//! every request has exactly one stored result and its final status in the bucket equals the
//! result's.
//!
//! Every process gets the three nodes' URLs in one comma-separated `NATS_URL`, as a user of a
//! cluster gives them.
//!
//! The cluster runs the current nats-server that `scripts/test.sh` names in
//! `NATS_SERVER_CURRENT_BIN` (`scripts/ensure-nats.sh --current`); without it the test fails and
//! says how to get one: clustered JetStream needs 2.9.21 or later, and Debian ships 2.9.10.

use std::time::{Duration, Instant};

use crate::chaos::{SHORT_RUN_FAULTS, run_bench};

/// How long the whole run may take before the test gives up (about 25 s on 2 cores: 14 s of
/// chaos, a few seconds of settling; a leader killed by SIGKILL is replaced after 4–7 s).
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// Requests in the short run.
const REQUESTS: u64 = 300;

/// Node kills in the short run: the leader of the results stream, then of the workers'
/// consumer.
const NODE_KILLS: u64 = 2;

#[tokio::test(flavor = "multi_thread")]
async fn cluster_chaos_loses_and_duplicates_nothing() {
    let current = fleet_testkit::cluster::current_nats_server_bin()
        .unwrap_or_else(|e| panic!("no current nats-server for the cluster test: {e}"));
    let bench = fleet_tests::binary("fleet-bench");
    let requests = REQUESTS.to_string();
    let kills = NODE_KILLS.to_string();
    let started = Instant::now();
    let mut command = tokio::process::Command::new(&bench);
    command
        .env(fleet_testkit::cluster::CURRENT_BIN_VAR, &current)
        .arg("--bin-dir")
        .arg(fleet_tests::target_dir())
        .args(["chaos", "--cluster"])
        .args(["--requests", &requests])
        .args([
            "--duration",
            "14s",
            "--node-kills",
            &kills,
            "--node-down",
            "1500ms",
        ])
        .args(SHORT_RUN_FAULTS);
    let run = run_bench(command, RUN_LIMIT).await;
    eprintln!(
        "{}\n(took {:.1} s)",
        run.stdout,
        started.elapsed().as_secs_f64()
    );
    let summary = &run.summary;
    assert_eq!(
        run.figure("nats_nodes"),
        3,
        "a three-node cluster: {summary:#}"
    );
    assert_eq!(run.figure("stream_replicas"), 3, "R3 streams: {summary:#}");
    run.assert_promises_kept(REQUESTS);
    assert_eq!(
        run.figure("node_kills"),
        NODE_KILLS,
        "nodes were killed: {summary:#}"
    );
    assert!(
        run.figure("leader_kills") >= 1,
        "a stream's or consumer's leader was killed: {summary:#}"
    );
    assert!(
        run.status.success(),
        "fleet-bench chaos --cluster exited with {}:\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
}
