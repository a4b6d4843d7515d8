//! NATS authentication: the fleet's processes and the `fleet` client log in with
//! `NATS_USER`/`NATS_PASSWORD` or `NATS_TOKEN`; a wrong secret is a clear error that never
//! shows the secret.

use fleet_tests::{Client, Fleet, NatsServer, WAIT, assert_outcome, run_cli};
use serde_json::json;

const USER: &str = "fleet";
const PASSWORD: &str = "pw-8d1f3c";
const TOKEN: &str = "tok-77aa19e2";

#[tokio::test(flavor = "multi_thread")]
async fn user_and_password_log_the_fleet_in() {
    let nats = NatsServer::start_with(
        &["--user", USER, "--pass", PASSWORD],
        &format!("{USER}:{PASSWORD}"),
    );
    let _fleet = Fleet::builder(&nats)
        .env("NATS_URL", &nats.plain_url())
        .env("NATS_USER", USER)
        .env("NATS_PASSWORD", PASSWORD)
        .start()
        .await;
    let client = Client::connect(&nats.url()).await;
    let request =
        json!({"id": "auth-1", "task": "text.transform", "input": {"text": "a", "op": "upper"}});
    client
        .publish_with_id(
            request["id"].as_str().unwrap_or_default(),
            request.to_string(),
        )
        .await;
    let result = client.wait_result("auth-1", WAIT).await;
    assert_outcome(&result, "succeeded", None);

    let ok = run_cli(
        &nats.plain_url(),
        &[
            "--nats-user",
            USER,
            "--nats-password",
            PASSWORD,
            "status",
            "auth-1",
            "--json",
        ],
    )
    .await;
    assert_eq!(ok.code, Some(0), "{ok:?}");

    let wrong = run_cli(
        &nats.plain_url(),
        &[
            "--nats-user",
            USER,
            "--nats-password",
            "not-the-password",
            "catalog",
        ],
    )
    .await;
    assert_eq!(wrong.code, Some(4), "cannot reach NATS: {wrong:?}");
    assert!(
        !wrong.stderr.contains("not-the-password"),
        "the secret never shows: {}",
        wrong.stderr
    );
    assert!(!wrong.stderr.is_empty(), "a clear error: {wrong:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_logs_the_fleet_in() {
    let nats = NatsServer::start_with(&["--auth", TOKEN], TOKEN);
    let _fleet = Fleet::builder(&nats)
        .env("NATS_URL", &nats.plain_url())
        .env("NATS_TOKEN", TOKEN)
        .start()
        .await;
    let client = Client::connect(&nats.url()).await;
    let request =
        json!({"id": "tok-1", "task": "text.transform", "input": {"text": "B", "op": "lower"}});
    client
        .publish_with_id(
            request["id"].as_str().unwrap_or_default(),
            request.to_string(),
        )
        .await;
    let result = client.wait_result("tok-1", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["output"]["text"], "b");
}
