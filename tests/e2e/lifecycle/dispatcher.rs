//! The dispatcher's lifecycle rules, one delivery at a time.

use std::{sync::Arc, time::Duration};

use clap::Parser;
use fleet_dispatcher::{Dispatcher, metrics::Metrics};
use fleet_tests::{FakeOpenAi, Reply};
use serde_json::json;

use super::rig::{Rig, next, one};

/// A dispatcher handler as `dispatcher` builds it, with `extra` settings.
fn dispatcher(rig: &Rig, extra: &[&str]) -> (Arc<Dispatcher>, fleet_dispatcher::Config) {
    dispatcher_over(rig, rig.catalog(), extra)
}

/// [`dispatcher`] routing against `catalog`.
fn dispatcher_over(
    rig: &Rig,
    catalog: fleet_common::catalog::SharedCatalog,
    extra: &[&str],
) -> (Arc<Dispatcher>, fleet_dispatcher::Config) {
    let url = rig.nats.url();
    let mut args = vec!["dispatcher", "--nats-url", url.as_str()];
    args.extend_from_slice(extra);
    let config = fleet_dispatcher::Config::try_parse_from(args).expect("dispatcher config");
    let metrics = Metrics::default();
    let classifier = fleet_dispatcher::classifier(&config, &metrics);
    let handler = Dispatcher::new(rig.fleet.clone(), catalog, classifier, &config, metrics);
    (Arc::new(handler), config)
}
/// How many task messages wait on the tasks stream.
async fn tasks_published(rig: &Rig) -> u64 {
    let mut stream = rig
        .js
        .get_stream("FLEET_TASKS")
        .await
        .expect("tasks stream");
    stream.info().await.expect("info").state.messages
}

/// A classification slower than the ack wait keeps its message (in-progress acks): the
/// request is classified once and its task queued once.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_classification_is_classified_once_and_queued_once() {
    let rig = Rig::start().await;
    let llm = FakeOpenAi::start().await;
    llm.push(
        Reply::route("text.transform", json!({"text": "x", "op": "upper"}))
            .delay(Duration::from_millis(2500)),
    );
    let base = llm.url();
    let (handler, config) = dispatcher(
        &rig,
        &[
            "--ack-wait",
            "1s",
            "--openai-base-url",
            base.as_str(),
            "--openai-api-key",
            "k",
        ],
    );
    let consumer = fleet_dispatcher::bind_consumer(&rig.fleet, config.ack_wait)
        .await
        .expect("consumer");
    rig.js
        .publish("fleet.requests", "Please do the usual thing to x".into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    let msg = one(&consumer).await;
    let routing = tokio::spawn(handler.clone().handle(msg));
    // Past the ack wait while the LLM thinks: no redelivery to another dispatcher.
    let again = next(&consumer, Duration::from_millis(2000)).await;
    assert!(again.is_none(), "redelivered while being classified");
    routing.await.expect("handler");

    assert_eq!(llm.routing_calls().len(), 1, "classified once");
    assert_eq!(tasks_published(&rig).await, 1, "queued once");
    assert!(
        next(&consumer, Duration::from_millis(1500)).await.is_none(),
        "acknowledged"
    );
}

/// A status record that cannot be read never makes a redelivery count as a duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_record_is_not_taken_for_a_duplicate() {
    let rig = Rig::start().await;
    let (handler, config) = dispatcher(&rig, &[]);
    let consumer = fleet_dispatcher::bind_consumer(&rig.fleet, config.ack_wait)
        .await
        .expect("consumer");
    let kv = rig.js.get_key_value("fleet-status").await.expect("bucket");
    kv.put("garbled-1", "not json".into()).await.expect("put");
    let request =
        json!({"id": "garbled-1", "task": "text.transform", "input": {"text": "a", "op": "upper"}});
    rig.js
        .publish("fleet.requests", request.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    handler.clone().handle(one(&consumer).await).await;
    assert_eq!(
        tasks_published(&rig).await,
        1,
        "the request was not dropped"
    );
}

/// No routing tier picks an `explicit_only` task: the rules' choice falls back to `chat`, and
/// only a request that names the task runs it.
#[tokio::test(flavor = "multi_thread")]
async fn explicit_only_tasks_are_never_picked_by_routing() {
    let rig = Rig::start().await;
    let config = fleet_worker::Config::try_parse_from(["worker"]).expect("worker config");
    let registry = fleet_worker::tasks::builtin(&config, reqwest::Client::new());
    let mut catalog = fleet_common::catalog::Catalog::default();
    for name in registry.names() {
        let Some(task) = registry.get(&name) else {
            continue;
        };
        let mut spec = task.spec();
        spec.explicit_only = name == "text.transform";
        catalog.insert(spec).expect("valid spec");
    }
    let (handler, config) = dispatcher_over(
        &rig,
        Arc::new(std::sync::RwLock::new(Arc::new(catalog))),
        &[],
    );
    let consumer = fleet_dispatcher::bind_consumer(&rig.fleet, config.ack_wait)
        .await
        .expect("consumer");
    for body in [
        json!({"id": "words-1", "text": "Please do the usual thing to x"}),
        json!({"id": "named-1", "task": "text.transform", "input": {"text": "x", "op": "upper"}}),
    ] {
        rig.js
            .publish("fleet.requests", body.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
        handler.clone().handle(one(&consumer).await).await;
    }
    let words = rig.status("words-1").await.expect("status");
    assert_eq!(
        words["task"], "chat",
        "routing fell back to chat: {words:#}"
    );
    let named = rig.status("named-1").await.expect("status");
    assert_eq!(named["task"], "text.transform", "{named:#}");
}
