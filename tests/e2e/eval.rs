//! `fleet eval` against a running fleet: accuracy per task, tier and split, the confusion
//! matrix, the share that reached the LLM, routing latency, and the exit code.

use fleet_tests::{FakeOpenAi, Reply, TempDir, TestEnv};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn eval_reports_tiers_splits_confusion_and_latency() {
    let openai = FakeOpenAi::start().await;
    let env = TestEnv::start_with(|b| b.openai(&openai)).await;
    let dir = TempDir::new("eval").expect("a temp dir");
    let file = dir.path().join("set.jsonl");
    let cases = [
        // A certain pattern: no LLM call.
        json!({"text": "Make the letter `x` uppercase", "task": "text.transform",
               "args": {"text": "x", "op": "upper"}, "split": "tune"}),
        // No pattern: the LLM (the scripted server) routes it.
        json!({"text": "Could you do the thing with abc", "task": "text.transform",
               "args": {"text": "abc", "op": "upper"}, "split": "heldout"}),
        // Labelled chat, but the LLM is scripted to pick the transformation: a miss.
        json!({"text": "Could you do the other thing with def", "task": "chat",
               "split": "heldout", "kind": "trap"}),
    ];
    let body: String = cases.iter().map(|c| format!("{c}\n")).collect();
    std::fs::write(&file, body).expect("write the set");
    openai.push(Reply::route(
        "text.transform",
        json!({"text": "abc", "op": "upper"}),
    ));
    openai.push(Reply::route(
        "text.transform",
        json!({"text": "def", "op": "reverse"}),
    ));

    let path = file.to_string_lossy().to_string();
    let out = env
        .cli(&["eval", &path, "--json", "--timeout", "60s"])
        .await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(report["total"], 3, "{report:#}");
    assert_eq!(report["correct"], 2, "{report:#}");
    assert_eq!(report["per_tier"]["patterns"]["correct"], 1, "{report:#}");
    assert_eq!(report["per_tier"]["llm"]["total"], 2, "{report:#}");
    assert_eq!(report["splits"]["heldout"]["correct"], 1, "{report:#}");
    assert_eq!(report["splits"]["tune"]["correct"], 1, "{report:#}");
    assert_eq!(
        report["confusion"]["chat"]["text.transform"], 1,
        "{report:#}"
    );
    assert_eq!(report["reached_llm"], 2, "{report:#}");
    assert_eq!(report["llm_routed_valid_grounded"], 2, "{report:#}");
    assert!(report["latency_ms"]["p50"].is_u64(), "{report:#}");
    assert_eq!(report["misses"][0]["kind"], "trap", "{report:#}");

    // The held-out part alone, and a floor it does not reach: exit 1.
    let out = env
        .cli(&[
            "eval",
            &path,
            "--split",
            "heldout",
            "--min-accuracy",
            "90",
            "--timeout",
            "60s",
        ])
        .await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    for needle in [
        "per tier",
        "confusion",
        "reached the LLM",
        "routing latency",
    ] {
        assert!(out.stdout.contains(needle), "{needle}: {}", out.stdout);
    }
}
