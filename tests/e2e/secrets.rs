//! Secrets never leak: not into `--help` (clap shows environment values), not into errors or
//! logs through a URL's `user:password@`, not into a result through an LLM server that echoes
//! the API key in its 401, and not into the processes' debug logs while they use every secret.
//!
//! Every secret here contains [`MARK`], so one search finds any of them, whole or in part.

use std::time::Duration;

use fleet_testkit::process::{ChildProc, clean_command};
use fleet_tests::{
    Client, DefaultRoute, FakeGithub, FakeOpenAi, Fleet, NatsServer, Reply, Repo, TempDir, WAIT,
    assert_outcome, binary, nats::free_port, run_cli,
};
use serde_json::json;

/// Part of every secret below.
const MARK: &str = "5ecret";
/// The NATS user.
const NATS_USER: &str = "fleet-user";
/// Its password.
const NATS_PASSWORD: &str = "natspw-5ecret-d41c";
/// The OpenAI key.
const OPENAI_KEY: &str = "sk-proj-5ecretKey0a1b2c3d4e5f6a7b8c9d0e1f2";
/// The GitHub token.
const GITHUB_TOKEN: &str = "ghp_5ecretToken0123456789AbCdEf";

/// Asserts that `text` holds no secret, naming `what` it is.
fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(MARK),
        "{what} shows a secret:\n{}",
        text.lines()
            .filter(|l| l.contains(MARK))
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn help_shows_no_secret_of_the_environment() {
    let url = format!("nats://{NATS_USER}:{NATS_PASSWORD}@127.0.0.1:4222");
    let env = [
        ("NATS_URL", url.as_str()),
        ("NATS_PASSWORD", NATS_PASSWORD),
        ("NATS_TOKEN", "tok-5ecret-77"),
        ("OPENAI_API_KEY", OPENAI_KEY),
        ("AZURE_OPENAI_API_KEY", "az-5ecret-0123"),
        ("GITHUB_TOKEN", GITHUB_TOKEN),
        ("OPENAI_BASE_URL", "http://llm:base-5ecret@127.0.0.1:1/v1"),
        (
            "AZURE_OPENAI_ENDPOINT",
            "https://az:azure-5ecret@example.openai.azure.com",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://otel:otel-5ecret@127.0.0.1:4317",
        ),
    ];
    for (bin, args) in [
        ("dispatcher", &["--help"][..]),
        ("worker", &["--help"]),
        ("fleet", &["--help"]),
        ("fleet", &["submit", "--help"]),
    ] {
        let mut cmd = tokio::process::Command::new(binary(bin));
        cmd.env_clear()
            .envs(env)
            .args(args)
            .stdin(std::process::Stdio::null());
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .expect("--help answers at once")
            .expect("the binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{bin} {args:?}: {}", out.status);
        assert!(
            stdout.contains("NATS_URL"),
            "{bin} {args:?} documents NATS_URL:\n{stdout}"
        );
        assert_clean(&format!("`{bin} {}`", args.join(" ")), &stdout);
        assert_clean(
            &format!("`{bin} {}` (stderr)", args.join(" ")),
            &String::from_utf8_lossy(&out.stderr),
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_with_a_password_is_redacted_in_errors_and_logs() {
    let url = format!(
        "nats://{NATS_USER}:{NATS_PASSWORD}@127.0.0.1:{}",
        free_port()
    );
    // The CLI: cannot reach NATS (4), naming the server without its password.
    let out = run_cli(&url, &["status", "x"]).await;
    assert_eq!(out.code, Some(4), "{out}");
    assert!(out.stderr.contains("***@127.0.0.1"), "{out}");
    assert_clean("the CLI's error", &format!("{out}"));

    // A service waiting for NATS, logging at debug (async-nats shows server addresses).
    let dir = TempDir::new("secret-url").expect("a temp dir");
    let log = dir.path().join("dispatcher.log");
    let mut cmd = clean_command(&binary("dispatcher"));
    cmd.env("NATS_URL", &url)
        .env("RUST_LOG", "debug")
        .env("FLEET_METRICS_PORT", "0");
    let mut proc = ChildProc::spawn("dispatcher", cmd, &log).unwrap_or_else(|e| panic!("{e}"));
    let waiting = fleet_tests::poll_until(Duration::from_secs(15), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("cannot reach NATS").then_some(text) }
    })
    .await;
    proc.kill();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        waiting.is_some(),
        "the dispatcher should say it waits for NATS:\n{text}"
    );
    assert!(text.contains("***@127.0.0.1"), "{text}");
    assert_clean("the waiting dispatcher's debug log", &text);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_llm_401_echoing_the_key_reaches_no_result_and_no_log() {
    let nats = NatsServer::start_with(
        &["--user", NATS_USER, "--pass", NATS_PASSWORD],
        &format!("{NATS_USER}:{NATS_PASSWORD}"),
    );
    // What OpenAI answers a wrong key with (it shows part of it; some servers show all).
    let echo = format!(
        "Incorrect API key provided: {OPENAI_KEY}. You can find your API key at \
         https://platform.openai.com/account/api-keys."
    );
    let openai = FakeOpenAi::start().await;
    openai.set_default(DefaultRoute::Reply(Reply::error(401, &echo)));
    for _ in 0..10 {
        openai.push_chat(Reply::error(401, &echo));
    }
    let github = FakeGithub::start().await;
    github.set("octo/hello", Repo::new().stars(7).contributors(3));
    // NATS_URL carries the password (the builder's URL), every secret is in use, and every
    // process logs at debug.
    let fleet = Fleet::builder(&nats)
        .github(&github)
        .openai(&openai)
        .env("OPENAI_API_KEY", OPENAI_KEY)
        .env("GITHUB_TOKEN", GITHUB_TOKEN)
        .env("RUST_LOG", "debug")
        .start()
        .await;
    let client = Client::connect(&nats.url()).await;

    // `chat` asked directly, and reached as the fallback when LLM routing fails with the 401.
    client
        .publish_json(&json!({"id": "secret-chat", "task": "chat", "input": {"prompt": "hi"}}))
        .await;
    client
        .publish_with_id("secret-routed", "Tell me a story about a dragon")
        .await;
    // The GitHub task sends its token (to the fake GitHub only).
    client
        .publish_json(&json!({
            "id": "secret-gh",
            "task": "github.repo_info",
            "input": {"owner": "octo", "repo": "hello"},
        }))
        .await;
    for id in ["secret-chat", "secret-routed"] {
        let result = client.wait_result(id, WAIT).await;
        let message = assert_outcome(&result, "failed", Some("task_error"));
        assert!(message.contains("HTTP 401"), "{result:#}");
        assert!(message.contains("OPENAI_API_KEY"), "{result:#}");
        assert!(!message.contains("Incorrect API key"), "{result:#}");
        assert_clean(&format!("result {id}"), &result.to_string());
        let status = client.wait_state(id, "failed").await;
        assert_clean(&format!("status {id}"), &status.to_string());
    }
    let result = client.wait_result("secret-gh", WAIT).await;
    assert_outcome(&result, "succeeded", None);
    assert!(
        github
            .seen()
            .iter()
            .any(|s| s.authorization.as_deref() == Some(&format!("Bearer {GITHUB_TOKEN}"))),
        "the token was used: {:?}",
        github.seen()
    );
    assert!(
        openai.calls().iter().any(|c| c.status == 401),
        "the LLM server was asked and refused"
    );

    let logs = fleet.logs();
    assert!(
        logs.contains("DEBUG"),
        "the processes log at debug:\n{logs}"
    );
    assert_clean("the fleet's debug logs", &logs);
}
