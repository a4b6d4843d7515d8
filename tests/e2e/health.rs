//! Every process serves `/healthz`, `/readyz` and Prometheus `/metrics`.

use fleet_tests::{TestEnv, WAIT, http_get};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn every_process_serves_health_and_metrics() {
    let env = TestEnv::start().await;
    // Some traffic first, so the metrics have something to say.
    env.client
        .publish_json(
            &json!({"id": "m-1", "task": "text.transform", "input": {"text": "m", "op": "upper"}}),
        )
        .await;
    env.client.wait_result("m-1", WAIT).await;

    for process in ["dispatcher", "w1"] {
        let port = env.fleet.metrics_port(process).await.unwrap_or_else(|| {
            panic!("{process} never logged its metrics port (FLEET_METRICS_PORT=0)")
        });
        for path in ["/healthz", "/readyz"] {
            let r = http_get(&format!("http://127.0.0.1:{port}{path}")).await;
            assert_eq!(r.status, 200, "{process} {path}: {r:?}");
        }
        let r = http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
        assert_eq!(r.status, 200, "{process} /metrics: {r:?}");
        assert!(
            r.body.contains("# TYPE") || r.body.contains("# HELP"),
            "{process} /metrics is not Prometheus text: {}",
            r.body
        );
    }
}
