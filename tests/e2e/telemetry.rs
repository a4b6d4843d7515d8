//! One trace per request: a real dispatcher and a real worker (separate processes) export their
//! spans over OTLP/gRPC to a receiver in the test; the spans of a request form one tree, from
//! the dispatcher's receive to the worker's result, across NATS and HTTP.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use fleet_tests::{
    CollectedSpan, FakeOpenAi, OtlpReceiver, Reply, Repo, TestEnv, WAIT, assert_outcome,
};
use serde_json::{Value, json};

/// What a span is, told by its kind and semantic-convention attributes (the exported names
/// follow OpenTelemetry's `{destination} {operation}` naming, e.g. `fleet.requests receive`):
/// `receive` (dispatcher `fleet.receive`), `gen_ai` (`gen_ai.chat`), `publish` (`fleet.publish`),
/// `task` (worker `fleet.task`), `http` (`http.get`), `result` (`fleet.result`),
/// `dead_letter` (`fleet.dead_letter`), or `other`.
fn role(span: &CollectedSpan) -> &'static str {
    let operation = span
        .attr("messaging.operation.type")
        .as_str()
        .unwrap_or_default();
    let destination = span
        .attr("messaging.destination.name")
        .as_str()
        .unwrap_or_default();
    match (span.kind, operation) {
        ("consumer", "receive") => "receive",
        ("consumer", "process") => "task",
        ("producer", "publish") if destination.starts_with("fleet.tasks.") => "publish",
        ("producer", "publish") if destination.starts_with("fleet.results.") => "result",
        ("producer", "publish") if destination.starts_with("fleet.dlq.") => "dead_letter",
        ("client", _) if !span.attr("gen_ai.system").is_null() => "gen_ai",
        ("client", _) if !span.attr("http.request.method").is_null() => "http",
        _ => "other",
    }
}

/// The spans of `role` exported by `service`.
fn all<'a>(spans: &'a [CollectedSpan], service: &str, name: &str) -> Vec<&'a CollectedSpan> {
    spans
        .iter()
        .filter(|s| s.service == service && role(s) == name)
        .collect()
}

/// Does the trace have a span of `role` from `service`?
fn has(spans: &[CollectedSpan], service: &str, name: &str) -> bool {
    !all(spans, service, name).is_empty()
}

/// The one span of `role` exported by `service` (panics if there is not exactly one).
fn one<'a>(spans: &'a [CollectedSpan], service: &str, name: &str) -> &'a CollectedSpan {
    let found = all(spans, service, name);
    assert_eq!(
        found.len(),
        1,
        "expected one {name} span from {service}; trace: {}",
        describe(spans)
    );
    found[0]
}

/// One line per span, for failure messages.
fn describe(spans: &[CollectedSpan]) -> String {
    let mut lines: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "\n  {} {} {:?} ({}) span={} parent={:?} kind={} status={} events={:?} attrs={:?}",
                s.start,
                s.service,
                s.name,
                role(s),
                s.span_id,
                s.parent_span_id,
                s.kind,
                s.status,
                s.events,
                s.attributes
            )
        })
        .collect();
    lines.sort();
    lines.concat()
}

/// Asserts the spans form one tree under a single root (or under `external_parent`, the
/// caller's span, which the fleet did not export).
fn assert_one_tree(spans: &[CollectedSpan], external_parent: Option<&str>) {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let traces: HashSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces.len(), 1, "one trace id: {}", describe(spans));
    let tops: Vec<&CollectedSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id.as_deref().is_none_or(|p| !ids.contains(p)))
        .collect();
    assert_eq!(
        tops.len(),
        1,
        "exactly one span without a parent in the trace: {}",
        describe(spans)
    );
    assert_eq!(
        tops[0].parent_span_id.as_deref(),
        external_parent,
        "the top span's parent: {}",
        describe(spans)
    );
    assert_eq!(role(tops[0]), "receive", "{}", describe(spans));
}

/// Is `span` a child of `parent`?
fn is_child(span: &CollectedSpan, parent: &CollectedSpan) -> bool {
    span.parent_span_id.as_deref() == Some(parent.span_id.as_str())
}

/// Sends SIGTERM to every process (spans are flushed on shutdown) and checks they exit 0.
async fn stop_fleet(env: &mut TestEnv) {
    for id in env.fleet.worker_ids() {
        let status = env
            .fleet
            .terminate_worker(&id, Duration::from_secs(15))
            .await;
        assert!(
            status.is_some_and(|s| s.success()),
            "worker {id} after SIGTERM: {status:?}"
        );
    }
    let status = env
        .fleet
        .terminate_dispatcher(Duration::from_secs(15))
        .await;
    assert!(
        status.is_some_and(|s| s.success()),
        "dispatcher after SIGTERM: {status:?}"
    );
}

/// An attribute as an integer, whether exported as an int or as digits (the type itself is
/// checked in `span_attributes_have_their_semantic_convention_types`).
fn int(span: &CollectedSpan, key: &str) -> Option<i64> {
    let value = span.attr(key);
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// One request routed by the (scripted) LLM to `github.repo_info`, traced end to end: the
/// fleet is stopped with SIGTERM and the spans of the request's trace are returned, with the
/// trace id and the `traceparent` headers GitHub received.
async fn traced_llm_request() -> (Vec<CollectedSpan>, String, Vec<Option<String>>) {
    let otlp = OtlpReceiver::start().await;
    let openai = FakeOpenAi::start().await;
    let mut env = TestEnv::start_with(|b| {
        b.otlp(&otlp)
            .openai(&openai)
            .env("FLEET_LLM_MODEL", "traced-model")
    })
    .await;
    env.github
        .set("octo/hello", Repo::new().stars(5).contributors(2));
    openai.push(Reply::route(
        "github.repo_info",
        json!({"owner": "octo", "repo": "hello"}),
    ));
    env.client
        .publish_with_id("trace-1", "How many stars does octo/hello have?")
        .await;
    let result = env.client.wait_result("trace-1", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    let trace_id = result["trace_id"]
        .as_str()
        .expect("the result has a trace id")
        .to_string();
    assert_eq!(trace_id.len(), 32, "a W3C trace id: {trace_id}");
    let status = env.client.wait_state("trace-1", "succeeded").await;
    assert_eq!(status["trace_id"], trace_id.as_str(), "{status:#}");
    stop_fleet(&mut env).await;

    let spans = otlp
        .wait_trace(&trace_id, Duration::from_secs(15), |spans| {
            has(spans, "fleet-worker", "result") && has(spans, "fleet-dispatcher", "publish")
        })
        .await;
    assert!(
        !spans.is_empty(),
        "no span of trace {trace_id} arrived; all spans: {}",
        describe(&otlp.spans())
    );
    let sent = env.github.traceparents("octo/hello");
    (spans, trace_id, sent)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_request_is_one_trace_across_processes() {
    let (spans, trace_id, sent) = traced_llm_request().await;
    assert_one_tree(&spans, None);

    let receive = one(&spans, "fleet-dispatcher", "receive");
    assert!(
        receive.is_root(),
        "no traceparent on the request: the receive span is the root"
    );

    let llm = one(&spans, "fleet-dispatcher", "gen_ai");
    assert!(is_child(llm, receive), "{}", describe(&spans));
    assert_eq!(llm.attr("gen_ai.system"), "openai", "{:?}", llm.attributes);
    assert_eq!(
        llm.attr("gen_ai.request.model"),
        "traced-model",
        "{:?}",
        llm.attributes
    );
    assert_eq!(
        int(llm, "gen_ai.usage.input_tokens"),
        Some(120),
        "{:?}",
        llm.attributes
    );
    assert_eq!(
        int(llm, "gen_ai.usage.output_tokens"),
        Some(15),
        "{:?}",
        llm.attributes
    );

    let publish = one(&spans, "fleet-dispatcher", "publish");
    assert!(is_child(publish, receive), "{}", describe(&spans));
    assert_eq!(
        publish.attr("messaging.system"),
        "nats",
        "{:?}",
        publish.attributes
    );
    assert_eq!(
        publish.attr("messaging.destination.name"),
        "fleet.tasks.github.repo_info",
        "{:?}",
        publish.attributes
    );

    let task = one(&spans, "fleet-worker", "task");
    assert!(
        is_child(task, publish),
        "the worker's span continues the publish span through the task's traceparent: {}",
        describe(&spans)
    );
    assert_eq!(int(task, "attempt"), Some(1), "{:?}", task.attributes);
    assert_eq!(task.attr("worker"), "w1", "{:?}", task.attributes);
    assert_eq!(task.attr("request_id"), "trace-1", "{:?}", task.attributes);
    assert_ne!(task.status, "error", "{task:?}");

    let gets = all(&spans, "fleet-worker", "http");
    assert_eq!(
        gets.len(),
        2,
        "the repo and contributors calls: {}",
        describe(&spans)
    );
    assert!(
        gets.iter().all(|g| is_child(g, task)),
        "{}",
        describe(&spans)
    );
    // The traceparent sent to GitHub names the span of that HTTP call.
    assert_eq!(sent.len(), 1, "{sent:?}");
    let sent = sent[0]
        .clone()
        .expect("the GitHub call carries a traceparent");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(parts[1], trace_id, "{sent}");
    assert!(
        gets.iter().any(|g| g.span_id == parts[2]),
        "traceparent {sent} names an http.get span: {}",
        describe(&spans)
    );

    let stored = one(&spans, "fleet-worker", "result");
    assert!(is_child(stored, task), "{}", describe(&spans));

    let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        HashSet::from(["fleet-dispatcher", "fleet-worker"]),
        "{}",
        describe(&spans)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn span_attributes_have_their_semantic_convention_types() {
    // OpenTelemetry's semantic conventions type these attributes as integers; backends
    // (Jaeger, Tempo, Honeycomb) compare and aggregate them as numbers.
    let (spans, _, _) = traced_llm_request().await;
    let llm = one(&spans, "fleet-dispatcher", "gen_ai");
    let task = one(&spans, "fleet-worker", "task");
    let get = all(&spans, "fleet-worker", "http")[0];
    let publish = one(&spans, "fleet-dispatcher", "publish");
    let mut wrong = Vec::new();
    for (span, key) in [
        (llm, "gen_ai.usage.input_tokens"),
        (llm, "gen_ai.usage.output_tokens"),
        (get, "http.response.status_code"),
        (publish, "messaging.message.body.size"),
        (task, "attempt"),
    ] {
        if !span.attr(key).is_i64() {
            wrong.push(format!("{key} = {:?} on {:?}", span.attr(key), span.name));
        }
    }
    assert!(
        wrong.is_empty(),
        "integer attributes exported with another type: {wrong:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_delivery_of_a_retried_task_is_a_span_in_the_same_trace() {
    let otlp = OtlpReceiver::start().await;
    let mut env = TestEnv::start_with(|b| b.otlp(&otlp).env("FLEET_MAX_ATTEMPTS", "5")).await;
    env.github.set(
        "flaky-org/flaky",
        Repo::new().stars(3).contributors(2).fail_first(2, 503),
    );
    env.client
        .publish_json(&json!({
            "id": "trace-retry",
            "task": "github.repo_info",
            "input": {"owner": "flaky-org", "repo": "flaky"},
        }))
        .await;
    let result = env.client.wait_result("trace-retry", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["attempts"], 3, "{result:#}");
    let trace_id = result["trace_id"].as_str().expect("trace id").to_string();
    env.client.wait_state("trace-retry", "succeeded").await;
    stop_fleet(&mut env).await;

    let spans = otlp
        .wait_trace(&trace_id, Duration::from_secs(15), |spans| {
            all(spans, "fleet-worker", "task").len() >= 3 && has(spans, "fleet-worker", "result")
        })
        .await;
    assert_one_tree(&spans, None);
    let publish = one(&spans, "fleet-dispatcher", "publish");
    let mut tasks = all(&spans, "fleet-worker", "task");
    tasks.sort_by_key(|s| int(s, "attempt"));
    assert_eq!(
        tasks.len(),
        3,
        "one fleet.task span per delivery: {}",
        describe(&spans)
    );
    for (i, task) in tasks.iter().enumerate() {
        let attempt = i as i64 + 1;
        assert_eq!(int(task, "attempt"), Some(attempt), "{:?}", task.attributes);
        assert!(
            is_child(task, publish),
            "every delivery continues the publish span: {}",
            describe(&spans)
        );
        if attempt < 3 {
            assert_eq!(task.status, "error", "failed delivery {attempt}: {task:?}");
            assert!(
                task.events.iter().any(|e| e == "exception"),
                "failed delivery {attempt} records an exception event: {task:?}"
            );
        } else {
            assert_ne!(
                task.status, "error",
                "the delivery that succeeded: {task:?}"
            );
        }
    }
    let stored = one(&spans, "fleet-worker", "result");
    assert!(is_child(stored, tasks[2]), "{}", describe(&spans));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callers_traceparent_makes_the_flow_part_of_its_trace() {
    let otlp = OtlpReceiver::start().await;
    let mut env = TestEnv::start_with(|b| b.otlp(&otlp)).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").as_str(),
    );
    headers.insert("Nats-Msg-Id", "trace-caller");
    let body: Value = json!({"task": "text.transform", "input": {"text": "traced", "op": "upper"}});
    env.client
        .publish(headers, Bytes::from(body.to_string()))
        .await;
    let result = env.client.wait_result("trace-caller", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(
        result["trace_id"], trace_id,
        "the caller's trace: {result:#}"
    );
    let status = env.client.wait_state("trace-caller", "succeeded").await;
    assert_eq!(status["trace_id"], trace_id, "{status:#}");
    stop_fleet(&mut env).await;

    let spans = otlp
        .wait_trace(trace_id, Duration::from_secs(15), |spans| {
            has(spans, "fleet-worker", "result")
        })
        .await;
    assert_one_tree(&spans, Some(caller_span));
    let task = one(&spans, "fleet-worker", "task");
    let publish = one(&spans, "fleet-dispatcher", "publish");
    assert!(is_child(task, publish), "{}", describe(&spans));
}
