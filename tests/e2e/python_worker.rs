//! A worker written in Python (examples/python-worker, nats-py) joins a running fleet with
//! nothing but the wire contract: it publishes its catalog entry with its own patterns, and
//! requests in words reach it through the patterns (no LLM) and through the LLM (the scripted
//! OpenAI-compatible server), with no change to the dispatcher.

use std::time::Duration;

use fleet_tests::{FakeOpenAi, PYTHON_TASK, PythonWorker, Reply, TestEnv, WAIT, assert_outcome};
use serde_json::{Value, json};

/// Waits until the dispatcher can route to the Python worker's task: the catalog lists it.
async fn until_in_catalog(env: &TestEnv) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = env.cli(&["catalog", "--json"]).await;
        if out.stdout.contains(PYTHON_TASK) {
            // The dispatcher's catalog watch sees the same entry a moment later.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{PYTHON_TASK} never reached the catalog: {}",
            out.stdout
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn request(env: &TestEnv, id: &str, text: &str) -> Value {
    env.client.publish_with_id(id, text.to_string()).await;
    let result = env.client.wait_result(id, WAIT).await;
    assert_eq!(env.client.result_count(id).await, 1, "one result for {id}");
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_worker_joins_and_is_routed_to_by_its_patterns() {
    let env = TestEnv::start().await;
    let worker = PythonWorker::start(&env.url()).await;
    until_in_catalog(&env).await;

    let result = request(&env, "py-1", "Count the words in 'the quick brown fox'").await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(
        result["task"],
        PYTHON_TASK,
        "{result:#}\n{}",
        worker.log_tail()
    );
    assert_eq!(result["classified_by"], "patterns", "{result:#}");
    assert_eq!(result["input"], json!({"text": "the quick brown fox"}));
    assert_eq!(result["output"], json!({"words": 4, "characters": 19}));
    assert_eq!(result["worker"], "py-test", "{result:#}");
    assert!(
        result["routing"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(PYTHON_TASK)),
        "{result:#}"
    );

    // The built-in tasks still route as before beside it.
    let result = request(&env, "py-2", "Make the letter `x` uppercase").await;
    assert_eq!(result["output"], json!({"text": "X"}), "{result:#}");

    // An explicit request with input that breaks its schema is rejected by the dispatcher
    // (the schema came from the Python worker's catalog entry).
    env.client
        .publish_with_id(
            "py-3",
            json!({"task": PYTHON_TASK, "input": {"words": 3}}).to_string(),
        )
        .await;
    let result = env.client.wait_result("py-3", WAIT).await;
    assert_outcome(&result, "rejected", Some("invalid_input"));

    // `fleet status` reads the result the Python worker stored.
    let out = env.cli(&["status", "py-1", "--json"]).await;
    assert!(out.stdout.contains("succeeded"), "{}", out.stdout);

    // The Python worker writes no status: the dispatcher's settler writes the final state in
    // the record itself, from the stored result.
    let record = env.client.wait_state("py-1", "succeeded").await;
    assert_eq!(record["task"], PYTHON_TASK, "{record:#}");
    assert_eq!(record["attempt"], 1, "{record:#}");
    let out = env.cli(&["list", "--state", "succeeded", "--json"]).await;
    assert!(out.stdout.contains("py-1"), "{}", out.stdout);
    // The Rust worker's result says it wrote the status itself (the settler skips it); the
    // Python worker's does not.
    let header = |id: &'static str| {
        let client = &env.client;
        async move {
            client
                .result_message(id)
                .await
                .and_then(|m| m.headers.get("Fleet-Status").map(|v| v.as_str().to_owned()))
        }
    };
    assert_eq!(header("py-2").await.as_deref(), Some("written"));
    assert_eq!(header("py-1").await, None);
    env.client.wait_state("py-2", "succeeded").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_workers_task_is_routed_by_the_llm_when_no_pattern_is_sure() {
    let openai = FakeOpenAi::start().await;
    let env = TestEnv::start_with(|b| b.openai(&openai)).await;
    let _worker = PythonWorker::start(&env.url()).await;
    until_in_catalog(&env).await;

    let text = "number of words in \"small models need help\"";
    openai.push(Reply::route(
        PYTHON_TASK,
        json!({"text": "small models need help"}),
    ));
    let result = request(&env, "py-llm-1", text).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    assert_eq!(result["task"], PYTHON_TASK, "{result:#}");
    assert_eq!(result["output"]["words"], 4, "{result:#}");
    let calls = openai.routing_calls_for(text);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert!(
        calls[0].task_enum().iter().any(|t| t == PYTHON_TASK),
        "the LLM's choices come from the catalog, the Python worker's task included"
    );
    let system = &calls[0].messages()[0];
    assert!(
        system.0 == "system" && system.1.contains("Count the words"),
        "the prompt carries the Python worker's description and examples: {system:?}"
    );

    // Its patterns decide without the LLM.
    let before = openai.routing_calls().len();
    let result = request(&env, "py-llm-2", "word count: a b c").await;
    assert_eq!(result["classified_by"], "patterns", "{result:#}");
    assert_eq!(result["output"]["words"], 3, "{result:#}");
    assert_eq!(openai.routing_calls().len(), before, "no LLM call");
}
