//! LLM routing against a scripted OpenAI-compatible server: the dispatcher's real async-openai
//! client asks `POST /v1/chat/completions` with a strict `json_schema` response format built
//! from the catalog, only for requests no certain catalog pattern decides; invalid answers (not
//! JSON, not a task, failing the schema, not grounded in the request's words, cut at
//! `max_tokens`) get one corrective retry with a short error, then the patterns' best guess
//! routes; 429, 5xx and timeouts never lose a request; a failing LLM opens a circuit; repeats
//! come from a cache; the `chat` task answers through the same server.

use std::time::Duration;

use fleet_tests::{
    DefaultRoute, FakeOpenAi, FleetBuilder, LlmCall, Reply, Repo, Scrape, TestEnv, WAIT,
    assert_outcome,
};
use serde_json::{Value, json};

/// The model name the fleet is told to use (and the fake echoes back).
const MODEL: &str = "fake-router-1";

/// Starts a fleet whose dispatcher and workers use `openai`, configured further by `configure`.
async fn start(
    openai: &FakeOpenAi,
    configure: impl FnOnce(FleetBuilder) -> FleetBuilder,
) -> TestEnv {
    TestEnv::start_with(|b| configure(b.openai(openai).env("FLEET_LLM_MODEL", MODEL))).await
}

/// Publishes `text` with id `id` and waits for its one result.
async fn request(env: &TestEnv, id: &str, text: &str) -> Value {
    env.client.publish_with_id(id, text.to_string()).await;
    let result = env.client.wait_result(id, WAIT).await;
    assert_eq!(
        env.client.result_count(id).await,
        1,
        "exactly one result for {id}"
    );
    result
}

/// Asserts a routing call asked for strict `json_schema` output whose `task` is an enum of the
/// catalog's names.
fn assert_json_schema_call(call: &LlmCall) {
    assert_eq!(call.body["model"], MODEL, "{:#}", call.body);
    assert_eq!(
        call.response_format(),
        Some("json_schema"),
        "{:#}",
        call.body
    );
    assert_eq!(
        call.body["response_format"]["json_schema"]["strict"], true,
        "strict structured output: {:#}",
        call.body["response_format"]
    );
    let mut names = call.task_enum();
    names.sort();
    assert_eq!(
        names,
        ["chat", "github.repo_info", "note.append", "text.transform"],
        "the task field is an enum of the catalog's names: {:#}",
        call.body["response_format"]
    );
}

/// Asserts `call` is the corrective retry of an answer `bad`: the system prompt, the request,
/// and one short user message saying what was wrong (containing `why`); the bad answer itself
/// is never sent back (a small model's rambling would overflow its context).
fn assert_corrective_retry(call: &LlmCall, bad: &str, why: &str) {
    let messages = call.messages();
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert_eq!(messages[2].0, "user", "{messages:#?}");
    assert!(
        messages[2]
            .1
            .starts_with("Your previous answer was not usable: ")
            && messages[2].1.contains(why),
        "the correction says what is wrong ({why}): {:?}",
        messages[2].1
    );
    assert!(
        messages[2].1.len() < 600,
        "the correction is short: {} bytes",
        messages[2].1.len()
    );
    assert!(
        bad.len() < 20 || messages.iter().all(|(_, m)| !m.contains(bad)),
        "the bad answer is not sent back: {messages:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn certain_patterns_skip_the_llm_and_other_words_reach_it() {
    let openai = FakeOpenAi::start().await;
    let env = start(&openai, |b| b).await;
    env.github.set(
        "ranfysvalle02/ai-self-attention",
        Repo::new().stars(42).contributors(150),
    );

    // The seed request: a certain catalog pattern decides, the LLM is never asked.
    let text = "Give me the stars and contributors for ranfysvalle02/ai-self-attention";
    let result = request(&env, "llm-seed-1", text).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "patterns", "{result:#}");
    assert_eq!(result["output"]["stars"], 42, "{result:#}");
    assert!(
        result["routing"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("certain pattern (github.repo_info")),
        "the result says which tier decided and why: {result:#}"
    );
    assert_eq!(result["routing"]["llm_calls"], 0, "{result:#}");
    assert!(
        openai.routing_calls().is_empty(),
        "a certain pattern skips the LLM"
    );
    let status = env.client.wait_state("llm-seed-1", "succeeded").await;
    assert!(status["llm"].is_null(), "no tokens spent: {status:#}");
    assert_eq!(status["routing"]["reason"], result["routing"]["reason"]);

    // Words no pattern is sure of reach the LLM.
    let text = "Could you look at ranfysvalle02/ai-self-attention for me";
    openai.push(
        Reply::route(
            "github.repo_info",
            json!({"owner": "ranfysvalle02", "repo": "ai-self-attention"}),
        )
        .usage(321, 17),
    );
    let result = request(&env, "llm-seed-2", text).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    assert_eq!(result["task"], "github.repo_info", "{result:#}");
    assert_eq!(result["output"]["contributors"], 150, "{result:#}");
    assert_eq!(result["routing"]["grounded"], true, "{result:#}");
    assert_eq!(result["routing"]["model"], MODEL, "{result:#}");
    assert_eq!(result["routing"]["llm_calls"], 1, "{result:#}");
    let status = env.client.wait_state("llm-seed-2", "succeeded").await;
    assert_eq!(
        status["llm"],
        json!({"model": MODEL, "input_tokens": 321, "output_tokens": 17}),
        "the status record says what the classification cost: {status:#}"
    );
    let calls = openai.routing_calls();
    assert_eq!(calls.len(), 1, "one call for one valid answer: {calls:#?}");
    assert_json_schema_call(&calls[0]);
    assert_eq!(calls[0].last_user_message().as_deref(), Some(text));
    assert_eq!(
        calls[0].messages()[0].0,
        "system",
        "{:#?}",
        calls[0].messages()
    );

    // A hint (an op word and a quoted text) is not certain: the LLM decides.
    openai.push(Reply::route(
        "text.transform",
        json!({"text": "x", "op": "upper"}),
    ));
    let result = request(&env, "llm-seed-3", "I'd like `x` in uppercase").await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    assert_eq!(result["output"], json!({"text": "X"}), "{result:#}");
    let status = env.client.wait_state("llm-seed-3", "succeeded").await;
    assert_eq!(status["llm"]["input_tokens"], 120, "{status:#}");
    assert_eq!(status["llm"]["output_tokens"], 15, "{status:#}");
    assert_eq!(openai.routing_calls().len(), 2);

    let port = env
        .fleet
        .metrics_port("dispatcher")
        .await
        .expect("the dispatcher logs its metrics port");
    let scrape = Scrape::fetch(port).await;
    for (tier, n) in [("patterns", 1.0), ("llm", 2.0)] {
        assert_eq!(
            scrape.value("fleet_requests_classified_total", &[("method", tier)]),
            n,
            "{}",
            scrape.text
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ungrounded_or_cut_answers_are_not_run() {
    let openai = FakeOpenAi::start().await;
    let env = start(&openai, |b| b).await;

    // An invented argument (SmolLM2-135M's habit: `chat` with a prompt it wrote), then a
    // grounded answer.
    let text = "I'd like `x` in uppercase";
    let bad =
        json!({"task": "chat", "input": {"prompt": "Convert the letter x to upper case please."}})
            .to_string();
    openai.push(Reply::content(&bad));
    openai.push(Reply::route(
        "text.transform",
        json!({"text": "x", "op": "upper"}),
    ));
    let result = request(&env, "ungrounded-1", text).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    assert_eq!(result["output"], json!({"text": "X"}), "{result:#}");
    assert_eq!(result["routing"]["llm_calls"], 2, "{result:#}");
    let calls = openai.routing_calls_for(text);
    assert_eq!(calls.len(), 2, "one call and one corrective retry");
    assert_corrective_retry(&calls[1], &bad, "not the whole request");

    // Ungrounded twice: never run as that task; the patterns' best guess (a hint) routes.
    let text = "I'd like `q` in uppercase";
    for repo in ["rust", "cargo"] {
        openai.push(Reply::route(
            "github.repo_info",
            json!({"owner": "rust-lang", "repo": repo}),
        ));
    }
    let result = request(&env, "ungrounded-2", text).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "patterns", "{result:#}");
    assert_eq!(result["task"], "text.transform", "{result:#}");
    assert_eq!(result["output"], json!({"text": "Q"}), "{result:#}");
    let reason = result["routing"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("not in the request") && reason.contains("best guess"),
        "the result says why the LLM did not decide: {result:#}"
    );

    // An answer cut at max_tokens is not used, even when what came is valid JSON.
    let text = "Could you do the thing with abc";
    openai.push(Reply::route("text.transform", json!({"text": "abc", "op": "lower"})).cut());
    openai.push(Reply::route(
        "text.transform",
        json!({"text": "abc", "op": "upper"}),
    ));
    let result = request(&env, "cut-1", text).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["output"], json!({"text": "ABC"}), "{result:#}");
    let calls = openai.routing_calls_for(text);
    assert_eq!(calls.len(), 2, "one call and one corrective retry");
    assert_corrective_retry(&calls[1], "", "cut at");
    let cap = calls[0].body["max_completion_tokens"].as_u64().unwrap_or(0);
    assert!(
        (96..=1024).contains(&cap),
        "a short request gets a small answer budget: {cap}"
    );

    // No pattern matches and no grounded answer: `chat` with the whole request.
    let text = "Could you do the other thing with def";
    for _ in 0..2 {
        openai.push(Reply::route(
            "chat",
            json!({"prompt": "something else entirely"}),
        ));
    }
    let result = request(&env, "ungrounded-chat", text).await;
    assert_eq!(result["classified_by"], "patterns", "{result:#}");
    assert_eq!(result["task"], "chat", "{result:#}");
    assert_eq!(result["input"], json!({"prompt": text}), "{result:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_answer_gets_one_corrective_retry() {
    let openai = FakeOpenAi::start().await;
    let env = start(&openai, |b| b).await;

    // Not JSON, then a valid answer. No pattern matches these words.
    let text = "Could you do the thing with abc";
    openai.push(Reply::content("Sure! I'd pick text.transform."));
    openai.push(Reply::route(
        "text.transform",
        json!({"text": "abc", "op": "upper"}),
    ));
    let result = request(&env, "fix-json", text).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    assert_eq!(result["output"], json!({"text": "ABC"}), "{result:#}");
    let calls = openai.routing_calls_for(text);
    assert_eq!(calls.len(), 2, "one call and one corrective retry");
    assert_json_schema_call(&calls[1]);
    assert_corrective_retry(&calls[1], "Sure! I'd pick text.transform.", "JSON");
    let status = env.client.wait_state("fix-json", "succeeded").await;
    assert_eq!(
        status["llm"],
        json!({"model": MODEL, "input_tokens": 240, "output_tokens": 30}),
        "both calls are counted: {status:#}"
    );

    // A task that is not in the catalog, then a valid answer.
    let text = "Could you do the other thing with def";
    let bad = json!({"task": "weather.forecast", "input": {"city": "Paris"}}).to_string();
    openai.push(Reply::content(&bad));
    openai.push(Reply::route(
        "text.transform",
        json!({"text": "def", "op": "reverse"}),
    ));
    let result = request(&env, "fix-task", text).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    assert_eq!(result["output"], json!({"text": "fed"}), "{result:#}");
    let calls = openai.routing_calls_for(text);
    assert_eq!(calls.len(), 2, "one call and one corrective retry");
    assert_corrective_retry(&calls[1], &bad, "weather.forecast");

    // Input that breaks the task's schema, then a valid answer.
    let text = "Could you do a third thing with ghi";
    let bad =
        json!({"task": "text.transform", "input": {"text": "ghi", "op": "explode"}}).to_string();
    openai.push(Reply::content(&bad));
    openai.push(Reply::route(
        "text.transform",
        json!({"text": "ghi", "op": "upper"}),
    ));
    let result = request(&env, "fix-input", text).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    assert_eq!(result["output"], json!({"text": "GHI"}), "{result:#}");
    let calls = openai.routing_calls_for(text);
    assert_eq!(calls.len(), 2, "one call and one corrective retry");
    assert_corrective_retry(&calls[1], &bad, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_invalid_twice_are_routed_by_the_patterns_best_guess() {
    let openai = FakeOpenAi::start().await;
    let env = start(&openai, |b| b).await;

    let cases = [
        (
            "twice-json",
            "I'd like `q` in uppercase",
            ["not json".to_string(), "{\"task\": \"text.tr".to_string()],
            json!({"text": "Q"}),
        ),
        (
            "twice-task",
            "I'd like `r` in uppercase",
            [
                json!({"task": "image.generate", "input": {}}).to_string(),
                json!({"task": "weather", "input": {"city": "r"}}).to_string(),
            ],
            json!({"text": "R"}),
        ),
        (
            "twice-input",
            "I'd like `s` in uppercase",
            [
                json!({"task": "text.transform", "input": {"text": "s"}}).to_string(),
                json!({"task": "text.transform", "input": {"text": "s", "op": "louder"}})
                    .to_string(),
            ],
            json!({"text": "S"}),
        ),
    ];
    for (id, text, answers, output) in cases {
        for answer in &answers {
            openai.push(Reply::content(answer));
        }
        let result = request(&env, id, text).await;
        assert_outcome(&result, "succeeded", None);
        assert_eq!(
            result["classified_by"], "patterns",
            "two invalid answers: the patterns' best guess routes: {result:#}"
        );
        assert_eq!(result["task"], "text.transform", "{result:#}");
        assert_eq!(result["output"], output, "{result:#}");
        let calls = openai.routing_calls_for(text);
        assert_eq!(
            calls.len(),
            2,
            "{id}: one call, one corrective retry, no more"
        );
        assert_corrective_retry(&calls[1], &answers[0], "");
        assert_eq!(openai.queued(), 0, "{id}: both scripted answers used");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_answered_only_after_a_retry_does_not_overrule_a_hint() {
    let openai = FakeOpenAi::start().await;
    let env = start(&openai, |b| b).await;

    // A hint (the word "repository" and a repository) names the GitHub task; the model's
    // first answer is unusable, its retry answers `chat` with the whole request: the hint wins.
    let text = "Look into the repository helm/helm for me";
    openai.push(Reply::content("I think this is about helm."));
    openai.push(Reply::route("chat", json!({"prompt": text})));
    let result = request(&env, "retry-chat-hint", text).await;
    assert_eq!(result["classified_by"], "patterns", "{result:#}");
    assert_eq!(result["task"], "github.repo_info", "{result:#}");
    assert_eq!(
        result["input"],
        json!({"owner": "helm", "repo": "helm"}),
        "{result:#}"
    );
    let reason = result["routing"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("after a corrective retry is chat"),
        "the reason says why the answer was not used: {result:#}"
    );
    assert_eq!(openai.routing_calls_for(text).len(), 2);

    // No pattern matches: `chat` after a retry is the model's answer and is used.
    let text = "Could you muse on the thing with jkl";
    openai.push(Reply::content("Hmm."));
    openai.push(Reply::route("chat", json!({"prompt": text})));
    let result = request(&env, "retry-chat-alone", text).await;
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    assert_eq!(result["task"], "chat", "{result:#}");

    // `chat` in the first answer is the model's choice, hint or not.
    let text = "Look into the repository helm/charts for me";
    openai.push(Reply::route("chat", json!({"prompt": text})));
    let result = request(&env, "first-chat-hint", text).await;
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    assert_eq!(result["task"], "chat", "{result:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_and_server_errors_are_retried() {
    let openai = FakeOpenAi::start().await;
    let env = start(&openai, |b| b).await;

    // 429 with Retry-After: 1, then an answer.
    let text = "Could you do the thing with abc";
    openai.push(Reply::error(429, "Rate limit reached for requests").header("Retry-After", "1"));
    openai.push(Reply::route(
        "text.transform",
        json!({"text": "abc", "op": "upper"}),
    ));
    let result = request(&env, "llm-429", text).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    assert_eq!(result["output"], json!({"text": "ABC"}), "{result:#}");
    let calls = openai.routing_calls_for(text);
    assert_eq!(calls.len(), 2, "the 429 and the retry: {calls:#?}");
    let gap = calls[1].at.duration_since(calls[0].at);
    assert!(
        gap >= Duration::from_millis(900),
        "retried {gap:?} after a 429 with Retry-After: 1"
    );

    // 500, then an answer.
    let text = "Could you do the other thing with def";
    openai.push(Reply::error(
        500,
        "The server had an error while processing your request",
    ));
    openai.push(Reply::route(
        "text.transform",
        json!({"text": "def", "op": "reverse"}),
    ));
    let result = request(&env, "llm-500", text).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    assert_eq!(result["output"], json!({"text": "fed"}), "{result:#}");
    assert_eq!(openai.routing_calls_for(text).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_answer_past_the_timeout_is_routed_by_the_patterns() {
    let openai = FakeOpenAi::start().await;
    let env = start(&openai, |b| {
        b.env("FLEET_LLM_TIMEOUT", "1s")
            .env("FLEET_LLM_RETRIES", "0")
    })
    .await;
    let text = "I'd like `t` in uppercase";
    openai.push(
        Reply::route("text.transform", json!({"text": "nope", "op": "lower"}))
            .delay(Duration::from_secs(3)),
    );
    let result = request(&env, "llm-slow", text).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "patterns", "{result:#}");
    assert_eq!(result["output"], json!({"text": "T"}), "{result:#}");
    assert_eq!(
        openai.routing_calls_for(text).len(),
        1,
        "FLEET_LLM_RETRIES=0: one call"
    );
    let status = env.client.wait_state("llm-slow", "succeeded").await;
    assert!(
        status["llm"].is_null(),
        "the patterns cost no tokens: {status:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_json_schema_gets_json_object() {
    let openai = FakeOpenAi::start().await;
    openai.refuse_json_schema();
    let env = start(&openai, |b| b).await;

    let text = "Could you do the thing with abc";
    openai.push(Reply::route(
        "text.transform",
        json!({"text": "abc", "op": "upper"}),
    ));
    let result = request(&env, "no-schema-1", text).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    assert_eq!(result["output"], json!({"text": "ABC"}), "{result:#}");
    let calls = openai.routing_calls_for(text);
    let formats: Vec<Option<&str>> = calls.iter().map(LlmCall::response_format).collect();
    assert_eq!(
        formats,
        [Some("json_schema"), Some("json_object")],
        "refused json_schema, then json_object"
    );
    assert_eq!(calls[0].status, 400);
    let system = &calls[1].messages()[0];
    assert_eq!(system.0, "system");
    for name in ["chat", "github.repo_info", "text.transform"] {
        assert!(
            system.1.contains(&format!("\"{name}\"")),
            "json_object mode spells the answer schema out in the system prompt: {}",
            system.1
        );
    }

    // For the life of the process: straight to json_object.
    let text = "Could you do the other thing with def";
    openai.push(Reply::route(
        "text.transform",
        json!({"text": "def", "op": "reverse"}),
    ));
    let result = request(&env, "no-schema-2", text).await;
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    assert_eq!(result["output"], json!({"text": "fed"}), "{result:#}");
    let formats: Vec<Option<String>> = openai
        .routing_calls_for(text)
        .iter()
        .map(|c| c.response_format().map(str::to_string))
        .collect();
    assert_eq!(formats, [Some("json_object".to_string())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_circuit_opens_after_repeated_failures_and_no_request_is_lost() {
    let openai = FakeOpenAi::start().await;
    openai.set_default(DefaultRoute::Reply(Reply::error(503, "overloaded")));
    let env = start(&openai, |b| {
        b.env("FLEET_LLM_BREAKER_THRESHOLD", "2")
            .env("FLEET_LLM_BREAKER_COOLDOWN", "60s")
            .env("FLEET_LLM_RETRIES", "0")
    })
    .await;

    for (i, letter) in ["a", "b", "c", "d"].iter().enumerate() {
        let id = format!("down-{i}");
        let result = request(&env, &id, &format!("I'd like `{letter}` in uppercase")).await;
        assert_outcome(&result, "succeeded", None);
        assert_eq!(result["classified_by"], "patterns", "{result:#}");
        assert_eq!(
            result["output"],
            json!({"text": letter.to_uppercase()}),
            "{result:#}"
        );
        let expected_calls = (i + 1).min(2);
        assert_eq!(
            openai.routing_calls().len(),
            expected_calls,
            "after request {i}: two failures open the circuit, then no call is made"
        );
    }

    let port = env
        .fleet
        .metrics_port("dispatcher")
        .await
        .expect("the dispatcher logs its metrics port");
    let scrape = Scrape::fetch(port).await;
    assert_eq!(
        scrape.value("fleet_llm_calls_total", &[("outcome", "error")]),
        2.0,
        "{}",
        scrape.text
    );
    assert_eq!(
        scrape.value("fleet_llm_calls_total", &[("outcome", "circuit_open")]),
        2.0,
        "{}",
        scrape.text
    );
    assert_eq!(
        scrape.value("fleet_requests_classified_total", &[("method", "patterns")]),
        4.0,
        "{}",
        scrape.text
    );
    assert_eq!(
        scrape.value("fleet_requests_rejected_total", &[]),
        0.0,
        "{}",
        scrape.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_llm_loses_no_request() {
    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let env = TestEnv::start_with(|b| {
        b.env("OPENAI_BASE_URL", &format!("http://127.0.0.1:{closed}/v1"))
            .env("FLEET_LLM_RETRIES", "1")
    })
    .await;
    let ids: Vec<String> = (0..4).map(|i| format!("unreachable-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        env.client
            .publish_with_id(id, format!("I'd like `{i}` in uppercase"))
            .await;
    }
    for (i, id) in ids.iter().enumerate() {
        let result = env.client.wait_result(id, WAIT).await;
        assert_outcome(&result, "succeeded", None);
        assert_eq!(result["classified_by"], "patterns", "{result:#}");
        assert_eq!(
            result["output"],
            json!({"text": i.to_string()}),
            "{result:#}"
        );
        assert_eq!(env.client.result_count(id).await, 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_request_is_answered_from_the_cache() {
    let openai = FakeOpenAi::start().await;
    let env = start(&openai, |b| b).await;
    let text = "Could you do the thing with abc";
    openai.push(Reply::route("text.transform", json!({"text": "abc", "op": "upper"})).usage(50, 5));
    let first = request(&env, "cache-1", text).await;
    assert_eq!(first["classified_by"], "llm", "{first:#}");
    let second = request(&env, "cache-2", text).await;
    assert_outcome(&second, "succeeded", None);
    assert_eq!(second["classified_by"], "llm", "{second:#}");
    assert_eq!(second["output"], json!({"text": "ABC"}), "{second:#}");
    assert_eq!(
        openai.routing_calls_for(text).len(),
        1,
        "the same text again is answered without a call"
    );

    let port = env
        .fleet
        .metrics_port("dispatcher")
        .await
        .expect("the dispatcher logs its metrics port");
    let scrape = Scrape::fetch(port).await;
    assert_eq!(
        scrape.value("fleet_classify_cache_hits_total", &[]),
        1.0,
        "{}",
        scrape.text
    );
    assert_eq!(
        scrape.value("fleet_classify_cache_misses_total", &[]),
        1.0,
        "{}",
        scrape.text
    );
    assert_eq!(
        scrape.value("fleet_llm_calls_total", &[("outcome", "ok")]),
        1.0,
        "{}",
        scrape.text
    );
    assert_eq!(
        scrape.value("fleet_llm_tokens_total", &[("type", "input")]),
        50.0
    );
    assert_eq!(
        scrape.value("fleet_llm_tokens_total", &[("type", "output")]),
        5.0
    );
    assert_eq!(scrape.value("fleet_llm_duration_seconds_count", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_never_answers_with_another_requests_words() {
    // Two requests that differ only in the case of the text to transform: each must run on its
    // own words (the input is copied from the user's text, so it is not the same answer).
    let openai = FakeOpenAi::start().await;
    let env = start(&openai, |b| b).await;
    openai.push(Reply::route(
        "text.transform",
        json!({"text": "Hello World", "op": "swapcase"}),
    ));
    openai.push(Reply::route(
        "text.transform",
        json!({"text": "hello world", "op": "swapcase"}),
    ));
    let first = request(&env, "case-1", "Swap the case of `Hello World`").await;
    assert_eq!(first["output"], json!({"text": "hELLO wORLD"}), "{first:#}");
    let second = request(&env, "case-2", "Swap the case of `hello world`").await;
    assert_outcome(&second, "succeeded", None);
    assert_eq!(
        second["input"]["text"], "hello world",
        "the second request's input must be its own words, not a cached answer for other words: {second:#}"
    );
    assert_eq!(
        second["output"],
        json!({"text": "HELLO WORLD"}),
        "{second:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_is_answered_through_the_llm() {
    let openai = FakeOpenAi::start().await;
    let env = start(&openai, |b| b).await;
    // The default routing answer sends the request to `chat` with the user's words.
    openai.push_chat(Reply::content("Paris.").usage(12, 2));
    let prompt = "What is the capital of France?";
    let result = request(&env, "chat-llm", prompt).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["task"], "chat", "{result:#}");
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    assert_eq!(result["input"], json!({"prompt": prompt}), "{result:#}");
    assert_eq!(result["output"], json!({"answer": "Paris."}), "{result:#}");

    let chats = openai.chat_calls();
    assert_eq!(
        chats.len(),
        1,
        "one plain completion from the worker: {chats:#?}"
    );
    assert_eq!(chats[0].body["model"], MODEL, "{:#}", chats[0].body);
    assert!(
        chats[0].body["response_format"].is_null(),
        "{:#}",
        chats[0].body
    );
    assert_eq!(chats[0].last_user_message().as_deref(), Some(prompt));
}

#[tokio::test(flavor = "multi_thread")]
async fn llm_waits_are_bounded_by_the_llm_timeout() {
    // FLEET_LLM_RETRIES is 2 (the default): a Retry-After that fits in the timeout is honoured,
    // one that does not is never slept on.
    let openai = FakeOpenAi::start().await;
    let env = start(&openai, |b| b.env("FLEET_LLM_TIMEOUT", "5s")).await;

    // An hour: no retry, the patterns route at once (async-openai alone would sleep the hour).
    let text = "I'd like `h` in uppercase";
    openai.push(Reply::error(429, "Rate limit reached for requests").header("Retry-After", "3600"));
    let started = std::time::Instant::now();
    let result = request(&env, "llm-hour", text).await;
    let took = started.elapsed();
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "patterns", "{result:#}");
    assert_eq!(result["output"], json!({"text": "H"}), "{result:#}");
    assert!(
        took < Duration::from_secs(5),
        "routed within FLEET_LLM_TIMEOUT, not after the hour: {took:?}"
    );
    assert_eq!(
        openai.routing_calls_for(text).len(),
        1,
        "a wait past the timeout is not taken"
    );

    // 3 s each time: the first wait fits in 5 s, the second would end past it.
    let text = "I'd like `k` in uppercase";
    for _ in 0..3 {
        openai
            .push(Reply::error(429, "Rate limit reached for requests").header("Retry-After", "3"));
    }
    let started = std::time::Instant::now();
    let result = request(&env, "llm-three", text).await;
    let took = started.elapsed();
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "patterns", "{result:#}");
    assert_eq!(result["output"], json!({"text": "K"}), "{result:#}");
    let calls = openai.routing_calls_for(text);
    assert_eq!(calls.len(), 2, "one wait of 3 s fits in 5 s, two do not");
    let gap = calls[1].at.duration_since(calls[0].at);
    assert!(
        gap >= Duration::from_millis(2900),
        "Retry-After honoured: {gap:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(openai.queued(), 1, "the third 429 was never asked for");

    // Routing answers are capped.
    let cap = &calls[0].body["max_completion_tokens"];
    assert!(
        cap.as_u64().is_some_and(|n| (64..=8192).contains(&n)),
        "routing calls cap their answer: {:#}",
        calls[0].body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn llm_prompts_show_at_most_4_kib_of_the_request() {
    let openai = FakeOpenAi::start().await;
    let env = start(&openai, |b| b).await;
    let opening = "Tell me a long story about dragons:";
    let text = format!("{opening}{}", " dragons and knights".repeat(1000));
    assert!(text.len() > 16 * 1024);
    // The default reply routes to `chat` with the user message as the prompt: the cut text.
    let result = request(&env, "llm-long", &text).await;
    assert_outcome(&result, "succeeded", None);

    let calls = openai.routing_calls_for(opening);
    assert_eq!(
        calls.len(),
        1,
        "an answer copying the cut text is not retried"
    );
    let shown = calls[0].last_user_message().unwrap_or_default();
    assert!(
        shown.len() <= 4096 + 100,
        "the prompt shows at most 4 KiB of the request: {} bytes",
        shown.len()
    );
    assert!(
        shown.ends_with(&format!(
            "[The request goes on: only its first 4096 of {} bytes are shown.]",
            text.len()
        )),
        "and says so: {}",
        &shown[shown.len().saturating_sub(120)..]
    );
    assert_eq!(
        result["classified_by"], "patterns",
        "an input cut where the prompt was cut never runs: {result:#}"
    );
    assert_eq!(result["task"], "chat", "{result:#}");
    assert_eq!(
        result["input"]["prompt"], text,
        "the fallback passes the whole request on"
    );
}
