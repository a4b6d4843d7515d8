//! The GitHub task's trust rules against the fake GitHub: contributors counted exactly in one
//! or two calls; `Link` URLs followed only on `GITHUB_API_URL`'s origin, and the token sent
//! nowhere else; repository names that could leave the path (`..`) refused before any HTTP,
//! whether the request came through the dispatcher or was published behind its back.

use fleet_tests::{FakeGithub, Repo, TestEnv, WAIT, assert_outcome, github::Seen};
use serde_json::{Value, json};

/// The token the fleet is given: it must reach the fake GitHub and nothing else.
const TOKEN: &str = "ghp_e2e_token_for_the_api_only";

/// Runs `github.repo_info` on `owner/repo` explicitly and waits for the result.
async fn repo_info(env: &TestEnv, id: &str, owner: &str, repo: &str) -> Value {
    env.client
        .publish_json(&json!({
            "id": id,
            "task": "github.repo_info",
            "input": {"owner": owner, "repo": repo},
        }))
        .await;
    env.client.wait_result(id, WAIT).await
}

#[tokio::test(flavor = "multi_thread")]
async fn github_counts_ten_thousand_contributors_in_two_calls() {
    let env = TestEnv::start().await;
    env.github
        .set("crowd/big", Repo::new().stars(9).contributors(10_000));
    let result = repo_info(&env, "big", "crowd", "big").await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(
        result["output"]["contributors"], 10_000,
        "every contributor counted, not 50 pages' worth: {result:#}"
    );
    assert_eq!(result["output"]["stars"], 9, "{result:#}");
    let seen: Vec<String> = env.github.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        seen.len(),
        2,
        "the repository, then one contributors call: {seen:#?}"
    );
    assert!(
        seen[1].contains("per_page=1") && seen[1].contains("anon=true"),
        "the count comes from a per_page=1 call's last link: {seen:#?}"
    );

    // Small counts: no Link header, the one page is all of them (0 and 1).
    for (repo, count) in [("none", 0), ("one", 1)] {
        env.github
            .set(&format!("crowd/{repo}"), Repo::new().contributors(count));
        let result = repo_info(&env, repo, "crowd", repo).await;
        assert_outcome(&result, "succeeded", None);
        assert_eq!(result["output"]["contributors"], count, "{result:#}");
        assert_eq!(env.github.contributor_requests(&format!("crowd/{repo}")), 1);
    }

    // A server that pages with `next` only (no `last`) is paged through on its own origin.
    env.github
        .set("crowd/cursor", Repo::new().contributors(250).without_last());
    let result = repo_info(&env, "cursor", "crowd", "cursor").await;
    assert_outcome(&result, "succeeded", None);
    assert_eq!(result["output"]["contributors"], 250, "{result:#}");
    assert_eq!(
        env.github.contributor_requests("crowd/cursor"),
        1 + 3,
        "the per_page=1 call, then 3 pages of 100"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn github_links_to_another_origin_are_not_followed_and_get_no_token() {
    let elsewhere = FakeGithub::start().await;
    elsewhere.set_default(Repo::new().contributors(500));
    let env = TestEnv::start_with(|b| b.env("GITHUB_TOKEN", TOKEN)).await;
    let api = env.github.url();
    let port = api.rsplit(':').next().unwrap_or_default().to_string();
    let cases = [
        // Another host:port, in the `last` link and in `next`-only paging.
        ("last-elsewhere", Repo::new().links_to(&elsewhere.url())),
        (
            "next-elsewhere",
            Repo::new().links_to(&elsewhere.url()).without_last(),
        ),
        // The API's own host and port under another scheme, and another host name for it.
        (
            "other-scheme",
            Repo::new().links_to(&format!("https://127.0.0.1:{port}")),
        ),
        (
            "other-host",
            Repo::new().links_to(&format!("http://localhost:{port}")),
        ),
    ];
    for (repo, script) in cases {
        env.github
            .set(&format!("o/{repo}"), script.contributors(500));
        let result = repo_info(&env, repo, "o", repo).await;
        let message = assert_outcome(&result, "failed", Some("task_error"));
        assert!(
            message.contains("not followed") && message.contains("GITHUB_API_URL"),
            "{repo}: the error says why: {result:#}"
        );
        assert!(!message.contains(TOKEN), "{result:#}");
        assert_eq!(
            result["attempts"], 1,
            "{repo}: a link elsewhere is permanent, not retried: {result:#}"
        );
    }
    assert_eq!(
        elsewhere.seen(),
        Vec::<Seen>::new(),
        "nothing was sent to the other origin"
    );
    let seen = env.github.seen();
    assert_eq!(
        seen.len(),
        2 * 4,
        "the repository and the first page, each; no link was followed (localhost is this very server): {seen:#?}"
    );
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))),
        "the token does go to GITHUB_API_URL: {seen:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn github_dot_segments_are_invalid_input_before_any_http() {
    let env = TestEnv::start_with(|b| b.env("GITHUB_TOKEN", TOKEN)).await;
    env.github.set_default(Repo::new());
    for (i, (owner, repo)) in [
        ("o", ".."),
        ("o", "."),
        ("..", "r"),
        ("o", "a/../../user"),
        ("o", "%2e%2e"),
        ("o", "r?x=1"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("dots-{i}");
        let result = repo_info(&env, &id, owner, repo).await;
        assert_outcome(&result, "rejected", Some("invalid_input"));
        assert_eq!(result["attempts"], 0, "{result:#}");
    }

    // Behind the dispatcher's back, straight onto the task subject: the worker refuses it too.
    let body = json!({
        "request_id": "dots-raw",
        "task": "github.repo_info",
        "input": {"owner": "o", "repo": ".."},
        "classified_by": "explicit",
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "dots-raw");
    env.client
        .jetstream()
        .publish_with_headers(
            "fleet.tasks.github.repo_info",
            headers,
            body.to_string().into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    let result = env.client.wait_result("dots-raw", WAIT).await;
    assert_outcome(&result, "failed", Some("invalid_input"));

    assert_eq!(
        env.github.seen(),
        Vec::<Seen>::new(),
        "no request reached the API host"
    );
}
