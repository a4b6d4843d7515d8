//! A short chaos run (the long one is `fleet-bench chaos`): requests flow while workers are
//! killed with SIGKILL and restarted, the dispatcher is restarted, and nats-server restarts once;
//! at the end every request has exactly one result.

use std::time::Duration;

use fleet_bench::chaos::{ChaosConfig, run};

#[tokio::test(flavor = "multi_thread")]
async fn chaos_loses_and_duplicates_nothing() {
    let bin_dir = fleet_tests::binary("worker")
        .parent()
        .expect("the binaries' directory")
        .to_path_buf();
    let report = run(&ChaosConfig {
        bin_dir,
        requests: 300,
        duration: Duration::from_secs(8),
        dispatcher_restarts: 1,
        nats_restart: true,
        settle_timeout: Duration::from_secs(60),
        ..ChaosConfig::default()
    })
    .await
    .expect("the chaos run completes");
    eprintln!("{}", report.table());
    assert!(
        report.passed(),
        "lost or duplicated results:\n{}",
        report.table()
    );
}
