//! The built-in tasks' catalog patterns, as the dispatcher reads them: the requests the old
//! Rust rules routed, routed now by data.

use fleet_common::catalog::Catalog;
use serde_json::{Value, json};

use super::{Chat, GithubRepoInfo, Registry, TextTransform};

fn catalog() -> Catalog {
    let mut r = Registry::default();
    r.register(TextTransform);
    r.register(Chat::new(None));
    r.register(GithubRepoInfo::new(
        reqwest::Client::new(),
        "https://api.github.com",
        None,
    ));
    // The catalog as the dispatcher builds it from the published specs, patterns included
    // (`Registry::catalog` leaves them out: the worker only checks inputs).
    let mut catalog = Catalog::default();
    for name in r.names() {
        if let Some(task) = r.get(&name) {
            catalog.insert(task.spec()).expect("valid spec");
        }
    }
    catalog
}

/// What certain patterns that agree decide (`Catalog::certain_match`, the dispatcher's rule),
/// else `None`.
fn certain(c: &Catalog, text: &str) -> Option<(String, Value)> {
    c.certain_match(text).map(|m| (m.task.to_owned(), m.input))
}

/// The best guess: the first certain match, else the first hint.
fn guess(c: &Catalog, text: &str) -> Option<(String, Value)> {
    let m = c.pattern_matches(text);
    m.iter()
        .find(|m| !m.hint)
        .or_else(|| m.first())
        .map(|m| (m.task.to_owned(), m.input.clone()))
}

#[test]
fn text_transformations_route_by_pattern() {
    let c = catalog();
    let cases = [
        ("Make the letter `x` uppercase", "x", "upper"),
        ("Make the letter x uppercase", "x", "upper"),
        ("lowercase HELLO WORLD", "HELLO WORLD", "lower"),
        (
            "please convert \"Hello There\" to lowercase",
            "Hello There",
            "lower",
        ),
        ("make hello world uppercase", "hello world", "upper"),
        ("Reverse the string abc", "abc", "reverse"),
        ("uppercase: some text here", "some text here", "upper"),
        (
            "Turn 'the quick brown fox' into title case",
            "the quick brown fox",
            "title",
        ),
        ("can you capitalize the word paris?", "paris", "capitalize"),
        ("Convert ABC to lower case please", "ABC", "lower"),
        ("swap the case of 'HeLLo'", "HeLLo", "swapcase"),
        (
            "lower-case this text: QUIET PLEASE",
            "QUIET PLEASE",
            "lower",
        ),
        // The misses of the product's first LLM prompt.
        (
            "lowercase this: SHOUTING IS RUDE",
            "SHOUTING IS RUDE",
            "lower",
        ),
        (
            "To upper case: the quick brown fox",
            "the quick brown fox",
            "upper",
        ),
        (
            "Write `quiet please` in capital letters",
            "quiet please",
            "upper",
        ),
        // Short chat forms: "pls", "plz", "u", "ya", "thx".
        ("lowercase plz: LOUD NOISES", "LOUD NOISES", "lower"),
        (
            "could u title-case 'war and peace'",
            "war and peace",
            "title",
        ),
        ("reverse 'stressed' pls", "stressed", "reverse"),
        ("can ya make \"ok\" uppercase thx", "ok", "upper"),
    ];
    for (text, target, op) in cases {
        assert_eq!(
            certain(&c, text),
            Some((
                "text.transform".to_owned(),
                json!({"text": target, "op": op})
            )),
            "{text}: {:#?}",
            c.pattern_matches(text)
        );
    }
}

#[test]
fn repositories_route_by_pattern() {
    let c = catalog();
    let cases = [
        (
            "Give me the stars and contributors for ranfysvalle02/ai-self-attention",
            "ranfysvalle02",
            "ai-self-attention",
        ),
        (
            "how many stars does rust-lang/rust have?",
            "rust-lang",
            "rust",
        ),
        (
            "contributors of https://github.com/tokio-rs/tokio",
            "tokio-rs",
            "tokio",
        ),
        (
            "Show me info about the repo nats-io/nats.rs.",
            "nats-io",
            "nats.rs",
        ),
        (
            "stars of https://github.com/tokio-rs/axum.git please",
            "tokio-rs",
            "axum",
        ),
        ("rust-lang/cargo's star count", "rust-lang", "cargo"),
        ("serde-rs/serde", "serde-rs", "serde"),
    ];
    for (text, owner, repo) in cases {
        assert_eq!(
            certain(&c, text),
            Some((
                "github.repo_info".to_owned(),
                json!({"owner": owner, "repo": repo})
            )),
            "{text}: {:#?}",
            c.pattern_matches(text)
        );
    }
    // A link in a question is only a hint, read whole (`nats.go`, not `nats`).
    let text = "Summarize the README of github.com/nats-io/nats.go";
    assert_eq!(certain(&c, text), None);
    assert_eq!(
        guess(&c, text),
        Some((
            "github.repo_info".to_owned(),
            json!({"owner": "nats-io", "repo": "nats.go"})
        ))
    );
    // A repository named with "repo" but a question about it: only a hint, the LLM decides.
    let text = "What license does the repo tokio-rs/tokio use?";
    assert_eq!(certain(&c, text), None);
    assert_eq!(
        guess(&c, text).map(|g| g.0),
        Some("github.repo_info".to_owned())
    );
}

#[test]
fn questions_match_no_pattern() {
    let c = catalog();
    for text in [
        "What is the capital of France?",
        "What is reverse engineering?",
        "Tell me a joke about and/or logic",
        "Is 1/2 bigger than 1/3?",
        "Explain what a message queue is in one sentence",
        "Why do people write in all caps?",
    ] {
        assert_eq!(
            certain(&c, text),
            None,
            "{text}: {:#?}",
            c.pattern_matches(text)
        );
    }
}
