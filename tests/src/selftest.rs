//! Tests of the harness itself (no fleet binaries needed).

use std::time::Duration;

use async_nats::jetstream::stream;
use serde_json::{Value, json};

use crate::{Client, FakeGithub, NatsServer, Repo, http_get};

/// The URL of `rel` in a Link header.
fn link(value: &str, rel: &str) -> Option<String> {
    value.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains(&format!("rel=\"{rel}\"")).then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn fake_github_pages_fails_and_counts() {
    let github = FakeGithub::start().await;
    github.set(
        "o/r",
        Repo::new().stars(42).contributors(150).fail_first(1, 429),
    );

    let r = http_get(&format!("{}/repos/o/r", github.url())).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = http_get(&format!("{}/repos/o/r", github.url())).await;
    assert_eq!(r.status, 200);
    let repo: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(repo["stargazers_count"], 42);
    assert_eq!(repo["full_name"], "o/r");
    assert_eq!(github.requests("o/r"), 2);

    let r = http_get(&format!(
        "{}/repos/o/r/contributors?per_page=100&anon=1",
        github.url()
    ))
    .await;
    assert_eq!(r.status, 200);
    let page: Vec<Value> = serde_json::from_str(&r.body).expect("json");
    assert_eq!(page.len(), 100);
    let next = link(r.header("link").expect("a Link header"), "next").expect("next");
    assert!(next.contains("page=2") && next.contains("anon=1"), "{next}");
    let r = http_get(&next).await;
    let page: Vec<Value> = serde_json::from_str(&r.body).expect("json");
    assert_eq!(page.len(), 50);
    let links = r.header("link").expect("prev/first links");
    assert!(link(links, "next").is_none(), "{links}");
    assert!(link(links, "prev").is_some(), "{links}");
    assert_eq!(github.contributor_requests("o/r"), 2);

    let r = http_get(&format!("{}/repos/nobody/here", github.url())).await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_server_restarts_with_its_store() {
    let mut server = NatsServer::start();
    assert_ne!(server.port(), 4222);
    let client = Client::connect(&server.url()).await;
    for (name, subject) in [
        ("FLEET_RESULTS", "fleet.results.>"),
        ("FLEET_REQUESTS", "fleet.requests"),
    ] {
        client
            .jetstream()
            .create_stream(stream::Config {
                name: name.to_string(),
                subjects: vec![subject.to_string()],
                ..Default::default()
            })
            .await
            .expect("create stream");
    }
    for (id, n) in [("a", 1), ("a", 2), ("b", 3)] {
        client
            .jetstream()
            .publish(
                format!("fleet.results.{id}"),
                json!({"request_id": id, "n": n}).to_string().into(),
            )
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    assert_eq!(client.result_count("a").await, 2);
    assert_eq!(client.result_count("b").await, 1);
    assert_eq!(client.result_count("c").await, 0);
    assert_eq!(client.result("a").await.expect("a")["n"], 2);
    assert_eq!(client.results().await.len(), 3);

    server.restart();
    let seq = tokio::time::timeout(
        Duration::from_secs(40),
        client.publish_text("after restart"),
    )
    .await
    .expect("publish after restart");
    assert_eq!(seq, 1);
    let counts = client.result_counts().await;
    assert_eq!(counts.get("a"), Some(&2));
    assert_eq!(counts.get("b"), Some(&1));
}
