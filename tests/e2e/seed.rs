//! Scenario 1: the seed requests, published as plain text, routed by the catalog's patterns.

use std::collections::HashSet;

use fleet_tests::{Client, Repo, TestEnv, WAIT, assert_outcome, is_valid_id};
use serde_json::{Value, json};

/// Waits for a result whose request id is not in `seen` (for requests whose id the fleet
/// generated), and remembers it.
async fn next_new_result(client: &Client, seen: &mut HashSet<String>) -> Value {
    let known = seen.clone();
    let result = client
        .wait_any_result(WAIT, |r| {
            r["request_id"]
                .as_str()
                .is_some_and(|id| !known.contains(id))
        })
        .await;
    let id = result["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    seen.insert(id);
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_requests_in_plain_text_are_routed_by_patterns() {
    let env = TestEnv::start().await;
    env.github.set(
        "ranfysvalle02/ai-self-attention",
        Repo::new().stars(42).contributors(150),
    );
    env.github.set(
        "rust-lang/rust",
        Repo::new().stars(100_000).contributors(250),
    );
    let mut seen = HashSet::new();

    // The first seed request, exactly as `nats pub fleet.requests "..."` would send it.
    env.client
        .publish_text("Give me the stars and contributors for ranfysvalle02/ai-self-attention")
        .await;
    let result = next_new_result(&env.client, &mut seen).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["task"], "github.repo_info", "{result:#}");
    assert_eq!(result["classified_by"], "patterns", "{result:#}");
    assert_eq!(result["input"]["owner"], "ranfysvalle02", "{result:#}");
    assert_eq!(result["input"]["repo"], "ai-self-attention", "{result:#}");
    assert_eq!(
        result["output"]["full_name"],
        "ranfysvalle02/ai-self-attention"
    );
    assert_eq!(result["output"]["stars"], 42, "{result:#}");
    assert_eq!(
        result["output"]["contributors"], 150,
        "contributors must be counted over all pages: {result:#}"
    );
    assert_eq!(
        env.github
            .contributor_requests("ranfysvalle02/ai-self-attention"),
        1,
        "150 contributors are counted in one call (per_page=1 and the `last` link)"
    );
    let id = result["request_id"]
        .as_str()
        .expect("request_id is a string");
    assert!(is_valid_id(id), "generated id {id:?} breaks the id rule");
    env.client.wait_state(id, "succeeded").await;
    assert_eq!(env.client.result_count(id).await, 1);

    // The second seed request.
    env.client
        .publish_text("Make the letter `x` uppercase")
        .await;
    let result = next_new_result(&env.client, &mut seen).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["task"], "text.transform", "{result:#}");
    assert_eq!(result["classified_by"], "patterns", "{result:#}");
    assert_eq!(result["input"]["op"], "upper", "{result:#}");
    assert_eq!(result["output"], json!({"text": "X"}), "{result:#}");

    // Everyday rephrasings, with the id in the Nats-Msg-Id header.
    env.client
        .publish_with_id("lower-1", "lowercase HELLO WORLD")
        .await;
    let result = env.client.wait_result("lower-1", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["request_id"], "lower-1");
    assert_eq!(result["task"], "text.transform", "{result:#}");
    assert_eq!(
        result["output"],
        json!({"text": "hello world"}),
        "{result:#}"
    );

    env.client
        .publish_with_id("stars-1", "how many stars does rust-lang/rust have?")
        .await;
    let result = env.client.wait_result("stars-1", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["task"], "github.repo_info", "{result:#}");
    assert_eq!(result["classified_by"], "patterns", "{result:#}");
    assert_eq!(
        result["input"],
        json!({"owner": "rust-lang", "repo": "rust"}),
        "{result:#}"
    );
    assert_eq!(result["output"]["stars"], 100_000, "{result:#}");
    assert_eq!(result["output"]["contributors"], 250, "{result:#}");

    // Nothing fits: the chat fallback, which without an LLM fails with `no_llm`.
    env.client
        .publish_with_id("chat-1", "What is the capital of France?")
        .await;
    let result = env.client.wait_result("chat-1", WAIT).await;
    assert_outcome(&result, "failed", Some("no_llm"));
    assert_eq!(result["task"], "chat", "{result:#}");
    env.client.wait_state("chat-1", "failed").await;
}
