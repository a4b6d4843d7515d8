//! Scenario 2: explicit tasks over NATS and through the `fleet` CLI.

use fleet_tests::{TestEnv, WAIT, assert_outcome, nats::free_port, run_cli};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn explicit_task_skips_the_classifier_and_carries_metadata() {
    let env = TestEnv::start().await;

    let request = json!({
        "id": "explicit-1",
        "task": "text.transform",
        "input": {"text": "abc", "op": "upper"},
        "metadata": {"k": "v"},
    });
    env.client.publish_json(&request).await;
    let result = env.client.wait_result("explicit-1", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["request_id"], "explicit-1");
    assert_eq!(result["task"], "text.transform");
    assert_eq!(result["input"], json!({"text": "abc", "op": "upper"}));
    assert_eq!(result["output"], json!({"text": "ABC"}));
    assert_eq!(result["classified_by"], "explicit", "{result:#}");
    assert_eq!(result["metadata"], json!({"k": "v"}), "{result:#}");
    assert_eq!(result["attempts"], 1, "{result:#}");
    let trace_id = result["trace_id"].as_str().unwrap_or_default();
    assert!(
        trace_id.len() == 32
            && trace_id.chars().all(|c| c.is_ascii_hexdigit())
            && trace_id.chars().any(|c| c != '0'),
        "trace_id should be a W3C trace id: {result:#}"
    );
    let status = env.client.wait_state("explicit-1", "succeeded").await;
    assert_eq!(status["task"], "text.transform", "{status:#}");
    for field in ["created_at", "updated_at"] {
        assert!(
            status[field].is_string(),
            "status lacks {field}: {status:#}"
        );
    }
    assert_eq!(status["trace_id"], result["trace_id"], "{status:#}");
    assert_eq!(env.client.result_count("explicit-1").await, 1);

    // The Nats-Msg-Id header wins over the body's id.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "header-id");
    let body =
        json!({"id": "body-id", "task": "text.transform", "input": {"text": "Q", "op": "lower"}});
    env.client.publish(headers, body.to_string().into()).await;
    let result = env.client.wait_result("header-id", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["output"], json!({"text": "q"}));
    assert!(env.client.result("body-id").await.is_none());

    // A caller's `traceparent` makes the request part of the caller's trace.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "traced-1");
    headers.insert(
        "traceparent",
        format!("00-{caller_trace}-00f067aa0ba902b7-01").as_str(),
    );
    let body = json!({"task": "text.transform", "input": {"text": "t", "op": "upper"}});
    env.client.publish(headers, body.to_string().into()).await;
    let result = env.client.wait_result("traced-1", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["trace_id"], caller_trace, "{result:#}");

    // `fleet trace ID` prints the Jaeger link of the request's trace.
    let out = env.cli(&["trace", "traced-1"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout.contains(&format!("/trace/{caller_trace}")),
        "{out}"
    );

    // `fleet submit --task ... --wait --json` prints only the result.
    let out = env
        .cli(&[
            "submit",
            "--task",
            "text.transform",
            "--input",
            r#"{"text":"Hi","op":"lower"}"#,
            "--wait",
            "--json",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{out}");
    let result = out.json();
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["output"], json!({"text": "hi"}), "{out}");
    assert_eq!(result["classified_by"], "explicit", "{out}");

    // `fleet submit --wait TEXT` shows the states, then the result.
    let out = env
        .cli(&["submit", "--wait", "Make the letter x uppercase"])
        .await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout.lines().filter(|l| !l.trim().is_empty()).count() >= 2,
        "expected state lines then the result: {out}"
    );
    assert!(out.stdout.contains("succeeded"), "{out}");
    assert!(out.stdout.contains('X'), "{out}");

    // `fleet submit --id ID TEXT` without --wait prints the id.
    let out = env.cli(&["submit", "--id", "cli-1", "lowercase ABC"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("cli-1"), "{out}");
    let result = env.client.wait_result("cli-1", WAIT).await;
    assert_eq!(result["output"], json!({"text": "abc"}), "{result:#}");

    // A rejected request exits 1.
    let out = env
        .cli(&[
            "submit",
            "--id",
            "cli-bad",
            "--task",
            "text.transform",
            "--input",
            r#"{"text":"a","op":"sideways"}"#,
            "--wait",
            "--json",
        ])
        .await;
    assert_eq!(out.code, Some(1), "{out}");
    assert_outcome(&out.json(), "rejected", Some("invalid_input"));

    // `fleet status ID --json`: {"status": {...}, "result": {...}}.
    let out = env.cli(&["status", "explicit-1", "--json"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    let status = out.json();
    assert_eq!(status["status"]["state"], "succeeded", "{out}");
    assert_eq!(status["result"]["request_id"], "explicit-1", "{out}");
    assert_eq!(status["result"]["output"], json!({"text": "ABC"}), "{out}");

    // `fleet watch ID` on a finished request shows its final state and exits 0.
    let out = env.cli(&["watch", "explicit-1"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("succeeded"), "{out}");

    // `fleet catalog --json` lists the built-in tasks.
    let out = env.cli(&["catalog", "--json"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    let catalog = out.json().to_string();
    for task in fleet_tests::BUILTIN_TASKS {
        assert!(catalog.contains(task), "catalog misses {task}: {out}");
    }

    // Usage errors exit 2; --help exits 0.
    let out = env.cli(&["submit", "--no-such-flag"]).await;
    assert_eq!(out.code, Some(2), "{out}");
    let out = env.cli(&["--help"]).await;
    assert_eq!(out.code, Some(0), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_exits_4_when_nats_is_unreachable() {
    // A port nobody listens on.
    let url = format!("nats://127.0.0.1:{}", free_port());
    let out = run_cli(&url, &["status", "some-id"]).await;
    assert_eq!(out.code, Some(4), "{out}");
}
