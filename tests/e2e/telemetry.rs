//! One trace per request: a real dispatcher and a real worker (separate processes), and the
//! `fleet` client, export their spans over OTLP/gRPC to a receiver in the test; the spans of a
//! request form one tree, from the client's publish to the worker's result, across NATS and
//! HTTP. Span names and attributes are those of the README's span table, which
//! `the_readme_span_table_is_what_is_exported` reads and checks every exported span against.
//! JSON logs carry `trace_id` and `request_id` at the top level.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use fleet_tests::{
    CollectedSpan, FakeOpenAi, FleetBuilder, OtlpReceiver, Reply, Repo, TestEnv, WAIT,
    assert_outcome,
};
use serde_json::{Value, json};

/// What a span is, told by its exported name and kind (the names follow OpenTelemetry's
/// messaging conventions, `{operation} {destination}`): `submit` (`publish fleet.requests`),
/// `request` (`process fleet.requests`), `gen_ai` (`chat <model>`), `publish`
/// (`publish fleet.tasks.<task>`), `task` (`process fleet.tasks.<task>`), `http` (`GET`),
/// `result` (`publish fleet.results.{request_id}`), `dead_letter` (`publish fleet.dlq.<task>`),
/// or `other`.
fn role(span: &CollectedSpan) -> &'static str {
    let name = span.name.as_str();
    match span.kind {
        "producer" if name == "publish fleet.requests" => "submit",
        "consumer" if name == "process fleet.requests" => "request",
        "producer" if name.starts_with("publish fleet.tasks.") => "publish",
        "consumer" if name.starts_with("process fleet.tasks.") => "task",
        "producer" if name == "publish fleet.results.{request_id}" => "result",
        "producer" if name.starts_with("publish fleet.dlq.") => "dead_letter",
        "client" if name.starts_with("chat ") => "gen_ai",
        "client" if name == "GET" => "http",
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

/// Asserts the spans form one tree under a single root of `top_role` (or under
/// `external_parent`, the caller's span, which the fleet did not export).
fn assert_one_tree(spans: &[CollectedSpan], external_parent: Option<&str>, top_role: &str) {
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
    assert_eq!(role(tops[0]), top_role, "{}", describe(spans));
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

/// The trace id a result names.
fn trace_of(result: &Value) -> String {
    let trace_id = result["trace_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the result has a trace id: {result:#}"))
        .to_string();
    assert_eq!(trace_id.len(), 32, "a W3C trace id: {trace_id}");
    trace_id
}

/// One request routed by the (scripted) LLM to `github.repo_info`, traced end to end: the
/// fleet is stopped with SIGTERM and the spans of the request's trace are returned, with the
/// trace id, the `traceparent` headers GitHub received, and the NATS server's port.
async fn traced_llm_request() -> (Vec<CollectedSpan>, String, Vec<Option<String>>, u16) {
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
        .publish_with_id("trace-1", "Tell me about the github project octo/hello")
        .await;
    let result = env.client.wait_result("trace-1", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["classified_by"], "llm", "{result:#}");
    let trace_id = trace_of(&result);
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
    (spans, trace_id, sent, env.nats.port())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_request_is_one_trace_across_processes() {
    let (spans, trace_id, sent, nats_port) = traced_llm_request().await;
    assert_one_tree(&spans, None, "request");

    let request = one(&spans, "fleet-dispatcher", "request");
    assert!(
        request.is_root(),
        "no traceparent on the request: the dispatcher's process span is the root"
    );
    assert_eq!(request.attr("request_id"), "trace-1", "{request:?}");
    assert_eq!(
        request.attr("messaging.consumer.group.name"),
        "dispatcher",
        "{request:?}"
    );
    assert_eq!(
        request.attr("messaging.message.id"),
        "trace-1",
        "{request:?}"
    );

    let llm = one(&spans, "fleet-dispatcher", "gen_ai");
    assert!(is_child(llm, request), "{}", describe(&spans));
    assert_eq!(llm.name, "chat traced-model", "{llm:?}");
    assert_eq!(llm.attr("gen_ai.provider.name"), "openai", "{llm:?}");
    assert!(llm.attr("gen_ai.system").is_null(), "the old name: {llm:?}");
    assert_eq!(llm.attr("gen_ai.request.model"), "traced-model", "{llm:?}");
    assert_eq!(llm.attr("gen_ai.response.id"), "chatcmpl-fake", "{llm:?}");
    assert_eq!(
        llm.attr("gen_ai.response.finish_reasons"),
        &json!(["stop"]),
        "{llm:?}"
    );
    assert_eq!(int(llm, "gen_ai.usage.input_tokens"), Some(120), "{llm:?}");
    assert_eq!(int(llm, "gen_ai.usage.output_tokens"), Some(15), "{llm:?}");
    assert_eq!(llm.attr("server.address"), "127.0.0.1", "{llm:?}");
    assert_eq!(
        llm.attr("fleet.routing.verdict"),
        "used: valid and grounded",
        "the check's verdict on the answer: {llm:?}"
    );
    assert_eq!(
        request.attr("classified_by"),
        "llm",
        "the tier that decided: {request:?}"
    );
    assert_eq!(
        request.attr("routing_reason"),
        "LLM answer, valid and grounded",
        "{request:?}"
    );

    let publish = one(&spans, "fleet-dispatcher", "publish");
    assert!(is_child(publish, request), "{}", describe(&spans));
    assert_eq!(publish.name, "publish fleet.tasks.github.repo_info");
    assert_eq!(publish.attr("messaging.system"), "nats", "{publish:?}");
    assert_eq!(
        publish.attr("messaging.destination.name"),
        "fleet.tasks.github.repo_info",
        "{publish:?}"
    );
    assert_eq!(
        publish.attr("messaging.message.id"),
        "trace-1",
        "{publish:?}"
    );
    assert_eq!(publish.attr("server.address"), "127.0.0.1", "{publish:?}");
    assert_eq!(
        int(publish, "server.port"),
        Some(i64::from(nats_port)),
        "{publish:?}"
    );

    let task = one(&spans, "fleet-worker", "task");
    assert!(
        is_child(task, publish),
        "the worker's span continues the publish span through the task's traceparent: {}",
        describe(&spans)
    );
    assert_eq!(task.name, "process fleet.tasks.github.repo_info");
    assert_eq!(int(task, "attempt"), Some(1), "{task:?}");
    assert_eq!(task.attr("worker"), "w1", "{task:?}");
    assert_eq!(task.attr("request_id"), "trace-1", "{task:?}");
    assert_eq!(task.attr("messaging.message.id"), "trace-1", "{task:?}");
    assert_eq!(
        task.attr("messaging.consumer.group.name"),
        "worker-github_repo_info",
        "{task:?}"
    );
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
        "traceparent {sent} names a GET span: {}",
        describe(&spans)
    );

    let stored = one(&spans, "fleet-worker", "result");
    assert!(is_child(stored, task), "{}", describe(&spans));
    assert_eq!(
        stored.attr("messaging.destination.name"),
        "fleet.results.trace-1",
        "the real subject is an attribute, never the name: {stored:?}"
    );
    assert_eq!(
        stored.attr("messaging.destination.template"),
        "fleet.results.{request_id}",
        "{stored:?}"
    );
    assert_eq!(stored.attr("fleet.outcome"), "succeeded", "{stored:?}");

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
    let (spans, _, _, _) = traced_llm_request().await;
    let llm = one(&spans, "fleet-dispatcher", "gen_ai");
    let task = one(&spans, "fleet-worker", "task");
    let get = all(&spans, "fleet-worker", "http")[0];
    let publish = one(&spans, "fleet-dispatcher", "publish");
    let request = one(&spans, "fleet-dispatcher", "request");
    let mut wrong = Vec::new();
    for (span, key) in [
        (llm, "gen_ai.usage.input_tokens"),
        (llm, "gen_ai.usage.output_tokens"),
        (llm, "server.port"),
        (get, "http.response.status_code"),
        (get, "server.port"),
        (publish, "messaging.message.body.size"),
        (publish, "server.port"),
        (request, "messaging.message.body.size"),
        (task, "messaging.message.body.size"),
        (task, "attempt"),
        (task, "delivery"),
        (task, "server.port"),
    ] {
        if !span.attr(key).is_i64() {
            wrong.push(format!("{key} = {:?} on {:?}", span.attr(key), span.name));
        }
    }
    if !llm.attr("gen_ai.response.finish_reasons").is_array() {
        wrong.push(format!(
            "gen_ai.response.finish_reasons = {:?}",
            llm.attr("gen_ai.response.finish_reasons")
        ));
    }
    assert!(
        wrong.is_empty(),
        "attributes exported with another type: {wrong:#?}"
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
    let trace_id = trace_of(&result);
    env.client.wait_state("trace-retry", "succeeded").await;
    stop_fleet(&mut env).await;

    let spans = otlp
        .wait_trace(&trace_id, Duration::from_secs(15), |spans| {
            all(spans, "fleet-worker", "task").len() >= 3 && has(spans, "fleet-worker", "result")
        })
        .await;
    assert_one_tree(&spans, None, "request");
    let publish = one(&spans, "fleet-dispatcher", "publish");
    let mut tasks = all(&spans, "fleet-worker", "task");
    tasks.sort_by_key(|s| int(s, "attempt"));
    assert_eq!(
        tasks.len(),
        3,
        "one process span per delivery: {}",
        describe(&spans)
    );
    for (i, task) in tasks.iter().enumerate() {
        let attempt = i as i64 + 1;
        assert_eq!(int(task, "attempt"), Some(attempt), "{:?}", task.attributes);
        assert_eq!(
            int(task, "delivery"),
            Some(attempt),
            "{:?}",
            task.attributes
        );
        assert!(
            is_child(task, publish),
            "every delivery continues the publish span: {}",
            describe(&spans)
        );
        if attempt < 3 {
            assert_eq!(task.status, "error", "failed delivery {attempt}: {task:?}");
            assert_eq!(task.attr("error.type"), "task_error", "{task:?}");
            assert!(
                task.events.iter().any(|e| e == "exception"),
                "failed delivery {attempt} records an exception event: {task:?}"
            );
            let failed_get = all(&spans, "fleet-worker", "http")
                .into_iter()
                .find(|g| is_child(g, task))
                .unwrap_or_else(|| panic!("a GET under delivery {attempt}: {}", describe(&spans)));
            assert_eq!(failed_get.attr("error.type"), "503", "{failed_get:?}");
            assert_eq!(failed_get.status, "error", "{failed_get:?}");
        } else {
            assert_ne!(
                task.status, "error",
                "the delivery that succeeded: {task:?}"
            );
            assert!(task.attr("error.type").is_null(), "{task:?}");
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
    assert_one_tree(&spans, Some(caller_span), "request");
    let task = one(&spans, "fleet-worker", "task");
    let publish = one(&spans, "fleet-dispatcher", "publish");
    assert!(is_child(task, publish), "{}", describe(&spans));
}

/// One row of the README's span table (section "Finding a request's trace").
#[derive(Debug)]
struct Row {
    /// The span name as Jaeger lists it; `<...>` stands for any text.
    name: String,
    /// The services that export it.
    services: Vec<String>,
    /// `producer`, `consumer` or `client`.
    kind: String,
    /// Attributes every such span has, with the value when the table gives one.
    always: Vec<(String, Option<String>)>,
    /// Attributes such a span may have.
    sometimes: Vec<String>,
}

/// Attributes every span has, whatever its row (where it was made and its timing).
fn generic(key: &str) -> bool {
    key.starts_with("code.")
        || key.starts_with("thread.")
        || matches!(key, "target" | "busy_ns" | "idle_ns")
}

/// The text between backticks in `cell`.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// Reads the span table from the README.
fn readme_rows() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("read README.md");
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.starts_with("| span | process | kind | attributes | when it applies |"));
    assert!(lines.next().is_some(), "the README has the span table");
    let rows: Vec<Row> = lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 5, "five cells: {line}");
            let name = backticked(cells[0]).into_iter().next().expect("a name");
            let services = cells[1]
                .split(',')
                .map(|p| match p.trim() {
                    "fleet" => "fleet-cli".to_string(),
                    other => format!("fleet-{other}"),
                })
                .collect();
            let always = backticked(cells[3])
                .into_iter()
                .map(|a| match a.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (a, None),
                })
                .collect();
            Row {
                name,
                services,
                kind: cells[2].to_string(),
                always,
                sometimes: backticked(cells[4]),
            }
        })
        .collect();
    assert!(rows.len() >= 8, "{rows:#?}");
    rows
}

/// Does `text` match `pattern`, where `<...>` stands for any non-empty text?
fn matches_pattern(pattern: &str, text: &str) -> bool {
    match pattern.find('<') {
        None => pattern == text,
        Some(start) => {
            let Some(len) = pattern[start..].find('>') else {
                return pattern == text;
            };
            let (literal, rest) = (&pattern[..start], &pattern[start + len + 1..]);
            let Some(tail) = text.strip_prefix(literal) else {
                return false;
            };
            (1..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| matches_pattern(rest, &tail[i..]))
        }
    }
}

/// What is wrong with `span` against the README's rows (empty when it is as documented), and
/// the row it matched.
fn check_span<'a>(span: &CollectedSpan, rows: &'a [Row]) -> (Vec<String>, Option<&'a Row>) {
    let Some(row) = rows.iter().find(|r| {
        r.kind == span.kind
            && r.services.contains(&span.service)
            && matches_pattern(&r.name, &span.name)
    }) else {
        return (
            vec![format!(
                "{} span {:?} ({}) is not in the README's table",
                span.service, span.name, span.kind
            )],
            None,
        );
    };
    let mut wrong = Vec::new();
    for (key, value) in &row.always {
        let got = span.attr(key);
        let text = match got {
            Value::String(s) => s.clone(),
            Value::Null => {
                wrong.push(format!("{:?} lacks {key}", span.name));
                continue;
            }
            other => other.to_string(),
        };
        if let Some(expected) = value
            && !matches_pattern(expected, &text)
        {
            wrong.push(format!(
                "{:?}: {key} = {text:?}, the README says {expected}",
                span.name
            ));
        }
    }
    for key in span.attributes.keys() {
        let documented = generic(key)
            || row.always.iter().any(|(k, _)| k == key)
            || row.sometimes.iter().any(|k| k == key);
        if !documented {
            wrong.push(format!(
                "{:?} has {key}, which the README does not list",
                span.name
            ));
        }
    }
    (wrong, Some(row))
}

#[test]
fn the_span_table_patterns_match_as_documented() {
    assert!(matches_pattern(
        "publish fleet.tasks.<task>",
        "publish fleet.tasks.github.repo_info"
    ));
    assert!(matches_pattern("worker-<task>", "worker-github_repo_info"));
    assert!(matches_pattern(
        "publish fleet.results.{request_id}",
        "publish fleet.results.{request_id}"
    ));
    assert!(!matches_pattern(
        "publish fleet.results.{request_id}",
        "publish fleet.results.r1"
    ));
    assert!(!matches_pattern("fleet.tasks.<task>", "fleet.tasks."));
    assert!(matches_pattern("chat <model>", "chat gpt-4o-mini"));
}

/// Runs `fleet submit` with the OTLP settings, as a user would with a collector.
async fn submit_traced(nats_url: &str, otlp: &OtlpReceiver, args: &[&str]) {
    let mut cmd = tokio::process::Command::new(fleet_tests::binary("fleet"));
    cmd.env_clear();
    for key in ["PATH", "HOME", "TMPDIR"] {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    let output = cmd
        .env("NATS_URL", nats_url)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("RUST_LOG", "warn")
        .arg("submit")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("fleet submit finishes")
        .expect("fleet submit runs");
    assert!(
        output.status.success(),
        "fleet submit: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_span_table_is_what_is_exported() {
    let rows = readme_rows();
    let otlp = OtlpReceiver::start().await;
    let openai = FakeOpenAi::start().await;
    let mut env =
        TestEnv::start_with(|b| b.otlp(&otlp).openai(&openai).env("FLEET_MAX_ATTEMPTS", "2")).await;
    env.github
        .set("octo/hello", Repo::new().stars(5).contributors(2));
    env.github
        .set("octo/down", Repo::new().fail_first(100, 503));

    // LLM routing, the GitHub task, a result.
    openai.push(Reply::route(
        "github.repo_info",
        json!({"owner": "octo", "repo": "hello"}),
    ));
    env.client
        .publish_with_id("table-llm", "Tell me about the github project octo/hello")
        .await;
    // The worker's own LLM call.
    env.client
        .publish_json(&json!({"id": "table-chat", "task": "chat", "input": {"prompt": "Say hi"}}))
        .await;
    // Attempts used up: failed deliveries, failed GETs, a dead letter.
    env.client
        .publish_json(&json!({
            "id": "table-dead",
            "task": "github.repo_info",
            "input": {"owner": "octo", "repo": "down"},
        }))
        .await;
    // Never runs: the dispatcher publishes the result.
    env.client
        .publish_json(&json!({"id": "table-rejected", "task": "no.such_task", "input": {}}))
        .await;
    // The client's publish.
    submit_traced(
        &env.url(),
        &otlp,
        &[
            "--id",
            "table-cli",
            "--task",
            "text.transform",
            "--input",
            r#"{"text": "traced", "op": "upper"}"#,
        ],
    )
    .await;

    let mut traces = BTreeMap::new();
    for (id, status) in [
        ("table-llm", "succeeded"),
        ("table-chat", "succeeded"),
        ("table-dead", "dead"),
        ("table-rejected", "rejected"),
        ("table-cli", "succeeded"),
    ] {
        let result = env.client.wait_result(id, WAIT).await;
        assert_eq!(result["status"], status, "{id}: {result:#}");
        env.client.wait_state(id, status).await;
        traces.insert(id, trace_of(&result));
    }
    stop_fleet(&mut env).await;

    let mut spans = Vec::new();
    for (id, trace_id) in &traces {
        let found = otlp
            .wait_trace(trace_id, Duration::from_secs(15), |spans| {
                spans
                    .iter()
                    .any(|s| matches!(role(s), "result" | "dead_letter"))
                    && (*id != "table-dead" || spans.iter().any(|s| role(s) == "dead_letter"))
                    && (*id != "table-cli" || spans.iter().any(|s| role(s) == "submit"))
            })
            .await;
        let top = if *id == "table-cli" {
            "submit"
        } else {
            "request"
        };
        assert_one_tree(&found, None, top);
        spans.extend(found);
    }

    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for span in &spans {
        let (problems, row) = check_span(span, &rows);
        wrong.extend(problems);
        if let Some(row) = row {
            seen.insert(row.name.clone());
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "the README's span table and the exported spans differ: {wrong:#?}\nspans: {}",
        describe(&spans)
    );
    let unseen: Vec<&str> = rows
        .iter()
        .map(|r| r.name.as_str())
        .filter(|name| !seen.contains(*name))
        .collect();
    assert!(
        unseen.is_empty(),
        "rows of the README's table no span matched: {unseen:?}\nspans: {}",
        describe(&spans)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_request_id_and_trace_id_at_the_top_level() {
    let openai = FakeOpenAi::start().await;
    let mut env = TestEnv::start_with(|b| b.openai(&openai).env("FLEET_LOG_FORMAT", "json")).await;
    env.github.set(
        "octo/flaky",
        Repo::new().stars(1).contributors(1).fail_first(1, 503),
    );
    // Only a pattern's hint matches, so the LLM is asked; it refuses: the dispatcher says so
    // inside the request's span, and the patterns' best guess routes.
    openai.push(Reply::error(400, "no"));
    env.client
        .publish_with_id("logged-1", "Tell me about the github project octo/flaky")
        .await;
    let result = env.client.wait_result("logged-1", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    let trace_id = trace_of(&result);
    env.client.wait_state("logged-1", "succeeded").await;
    stop_fleet(&mut env).await;

    let logs = env.fleet.logs();
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!lines.is_empty(), "JSON log lines: {logs}");
    for line in &lines {
        assert!(line.get("spans").is_none(), "nothing nested: {line}");
        assert!(
            line["level"].is_string() && line["timestamp"].is_string(),
            "{line}"
        );
    }
    let about: Vec<&Value> = lines
        .iter()
        .filter(|l| l["request_id"] == "logged-1")
        .collect();
    for line in &about {
        assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
    }
    let says = |target: &str, message: &str| {
        about.iter().any(|l| {
            l["target"].as_str().is_some_and(|t| t.starts_with(target))
                && l["message"].as_str().is_some_and(|m| m.contains(message))
        })
    };
    assert!(
        says("fleet_dispatcher", "the LLM is unavailable"),
        "the dispatcher's line about the LLM names the request: {about:#?}\n{logs}"
    );
    assert!(
        says("fleet_worker", "attempt failed"),
        "the worker's line about the failed attempt names the request: {about:#?}\n{logs}"
    );
}

/// The test-only TLS material in `tests/configs/tls` (a CA and a certificate for `127.0.0.1`).
fn tls_file(name: &str) -> String {
    format!("{}/configs/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Sends one explicit request through a fleet configured by `configure`, stops the fleet, and
/// returns the request's trace id.
async fn one_traced_request(configure: impl FnOnce(FleetBuilder) -> FleetBuilder) -> String {
    let mut env = TestEnv::start_with(configure).await;
    env.client
        .publish_json(&json!({
            "id": "exported",
            "task": "text.transform",
            "input": {"text": "x", "op": "upper"},
        }))
        .await;
    let result = env.client.wait_result("exported", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    env.client.wait_state("exported", "succeeded").await;
    stop_fleet(&mut env).await;
    trace_of(&result)
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_a_tls_collector_named_by_the_traces_endpoint() {
    let read = |name: &str| std::fs::read(tls_file(name)).expect("test TLS material");
    let collector = OtlpReceiver::start_tls(&read("server.pem"), &read("server-key.pem")).await;
    assert!(collector.endpoint().starts_with("https://"));
    // The generic endpoint names another receiver: the signal-specific one must win.
    let decoy = OtlpReceiver::start().await;
    let trace_id = one_traced_request(|b| {
        b.env("OTEL_EXPORTER_OTLP_ENDPOINT", &decoy.endpoint())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &collector.endpoint())
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &tls_file("ca.pem"))
    })
    .await;
    let spans = collector
        .wait_trace(&trace_id, Duration::from_secs(15), |spans| {
            has(spans, "fleet-worker", "result") && has(spans, "fleet-dispatcher", "request")
        })
        .await;
    assert_one_tree(&spans, None, "request");
    assert!(
        decoy.spans().is_empty(),
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT wins over OTEL_EXPORTER_OTLP_ENDPOINT: {}",
        describe(&decoy.spans())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_protobuf_posts_to_v1_traces_under_the_generic_endpoint() {
    let collector = OtlpReceiver::start_http().await;
    let trace_id = one_traced_request(|b| {
        b.env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            // The signal-specific protocol wins.
            .env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    })
    .await;
    let spans = collector
        .wait_trace(&trace_id, Duration::from_secs(15), |spans| {
            has(spans, "fleet-worker", "result") && has(spans, "fleet-dispatcher", "request")
        })
        .await;
    assert_one_tree(&spans, None, "request");
    let paths: BTreeSet<String> = collector.paths().into_iter().collect();
    assert_eq!(paths, BTreeSet::from(["/v1/traces".to_string()]));
}
