//! The built-in rules: GitHub repositories, text transformations, and `chat` for the rest.
//!
//! They route when no LLM is configured, and whenever the LLM cannot answer (down, circuit
//! open, invalid answers): a request is never lost or rejected because the LLM is unavailable.

use std::sync::{Arc, LazyLock};

use fleet_common::{catalog::Catalog, messages::ClassifiedBy};
use futures::future::BoxFuture;
use regex::Regex;
use serde_json::json;

use super::{Classify, ClassifyError, Decision, FALLBACK_TASK};

/// The built-in rules: GitHub repositories, text transformations, and `chat` for the rest.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules;

impl Classify for Rules {
    fn classify<'a>(
        &'a self,
        text: &'a str,
        _catalog: Arc<Catalog>,
    ) -> BoxFuture<'a, Result<Decision, ClassifyError>> {
        Box::pin(async move { Ok(route(text)) })
    }

    fn quick(&self, text: &str) -> Option<Decision> {
        Some(route(text))
    }
}

static REPO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:github\.com/)?\b([A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))/([A-Za-z0-9._-]{1,100})")
        .expect("valid regex")
});
static GITHUB_WORDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(stars?|starred|stargazers?|contribut\w*|repos?|repository|repositories|github|forks?|maintain\w*|popular)\b|github\.com/")
        .expect("valid regex")
});
/// Text operations and the words that ask for them, most specific first.
static OPS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        ("title", r"(?i)\btitle[\s-]*case(?:d)?\b"),
        ("swapcase", r"(?i)\bswap[\s-]*(?:the\s+)?case\b|\binvert(?:ed)?\s+(?:the\s+)?case\b"),
        ("upper", r"(?i)\bupper[\s-]*case(?:d)?\b|\bupper\b|\ball[\s-]+caps\b|\bcaps(?:\s+lock)?\b|\bcapital\s+letters\b|\bcapitali[sz]e\s+(?:all|every(?:thing)?)\b"),
        ("lower", r"(?i)\blower[\s-]*case(?:d)?\b|\blower\b|\bsmall\s+letters\b|\bdown[\s-]*case\b"),
        ("capitalize", r"(?i)\bcapitali[sz]e(?:d)?\b"),
        ("reverse", r"(?i)\breverse(?:d)?\b|\bbackwards?\b"),
    ]
    .into_iter()
    .map(|(op, re)| (op, Regex::new(re).expect("valid regex")))
    .collect()
});
static COMMAND: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:(?:please|pls|kindly|can you|could you|would you|will you|i want you to|i need you to|help me)[\s,]+)*(?:make|convert|turn|change|transform|put|render|write|set|format|reverse|uppercase|upper-case|upper case|lowercase|lower-case|lower case|capitali[sz]e|title[\s-]*case|swap[\s-]*case|invert|flip|spell)\b")
        .expect("valid regex")
});
static QUOTED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"`([^`]+)`|"([^"]+)"|“([^”]+)”|‘([^’]+)’|(?:^|\s)'([^']+)'(?:$|[\s.,!?:;])"#)
        .expect("valid regex")
});
static THE_NOUN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:the\s+)?(?:letter|letters|word|words|text|string|phrase|sentence|name|characters?)\s+(.+)$")
        .expect("valid regex")
});
static VERB_FIRST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:(?:please|pls|kindly|can you|could you|would you|will you|i want you to|i need you to|help me)[\s,]+)*(?:make|convert|turn|change|transform|put|render|write|set|format|flip|spell)\s+(.+)$")
        .expect("valid regex")
});
static OP_FIRST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:(?:please|pls|kindly|can you|could you|would you)[\s,]+)*(?:reverse|uppercase|upper-case|upper case|lowercase|lower-case|lower case|capitali[sz]e|title[\s-]*case|swap[\s-]*case|invert the case of|downcase)\s+(.+)$")
        .expect("valid regex")
});
static TAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\s*(?:,?\s*(?:please|for me|thanks|thank you))*[\s.!?]*$")
        .expect("valid regex")
});
static CONNECTOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\s+(?:to|into|in|as|with|using)(?:\s+(?:all|its|an?|the))?\s*$")
        .expect("valid regex")
});

/// The rules' decision for `text` (always an answer: `chat` when nothing else fits).
pub fn route(text: &str) -> Decision {
    github(text)
        .or_else(|| transform(text))
        .unwrap_or_else(|| chat(text))
}

/// The fallback decision for `text`: `chat` with the request as its prompt.
pub fn chat(text: &str) -> Decision {
    Decision::new(
        FALLBACK_TASK,
        json!({ "prompt": text }),
        ClassifiedBy::Rules,
    )
}

fn github(text: &str) -> Option<Decision> {
    if !GITHUB_WORDS.is_match(text) {
        return None;
    }
    let caps = REPO.captures_iter(text).find(|c| {
        let owner = &c[1];
        // Dates and fractions (1/2, 2024/05) are not repositories.
        !owner.chars().all(|ch| ch.is_ascii_digit())
    })?;
    let owner = caps[1].to_owned();
    let mut repo = caps[2].trim_end_matches(['.', '-', '_']).to_owned();
    if let Some(stripped) = repo.strip_suffix(".git") {
        repo = stripped.to_owned();
    }
    if repo.is_empty() {
        return None;
    }
    Some(Decision::new(
        "github.repo_info",
        json!({ "owner": owner, "repo": repo }),
        ClassifiedBy::Rules,
    ))
}

fn transform(text: &str) -> Option<Decision> {
    let (op, op_match) = OPS
        .iter()
        .find_map(|(op, re)| re.find(text).map(|m| (*op, m)))?;
    let quoted = QUOTED.captures(text).and_then(|c| {
        c.iter()
            .skip(1)
            .flatten()
            .next()
            .map(|m| m.as_str().to_owned())
    });
    let target = if let Some(q) = quoted {
        q
    } else {
        if !COMMAND.is_match(text.trim()) && !text.contains(':') {
            return None;
        }
        extract_unquoted(text.trim(), op_match.start(), op_match.end())?
    };
    Some(Decision::new(
        "text.transform",
        json!({ "text": target, "op": op }),
        ClassifiedBy::Rules,
    ))
}

/// Finds the text to transform when it is not quoted.
fn extract_unquoted(text: &str, op_start: usize, op_end: usize) -> Option<String> {
    let clean = |s: &str| {
        let s = TAIL.replace(s.trim(), "");
        let s = CONNECTOR.replace(s.trim(), "");
        let s = s
            .trim()
            .trim_matches(|c| c == ',' || c == ';')
            .trim()
            .to_owned();
        (!s.is_empty()).then_some(s)
    };
    // "uppercase: some text" or "make this uppercase: some text": everything after the colon
    // is the text, only a final full stop dropped.
    if let Some((_, after)) = text.split_once(':') {
        let after = after.trim().trim_end_matches(['.', '!']).trim();
        if !after.is_empty() {
            return Some(after.to_owned());
        }
    }
    let before = &text[..op_start];
    let after = &text[op_end..];
    // "make the letter x uppercase", "lowercase the word HELLO"
    for part in [before, after] {
        if let Some(c) = THE_NOUN.captures(part.trim())
            && let Some(s) = clean(&c[1])
        {
            return Some(s);
        }
    }
    // "make hello world uppercase", "convert HELLO to lowercase"
    if let Some(c) = VERB_FIRST.captures(before.trim())
        && let Some(s) = clean(&c[1])
    {
        return Some(s);
    }
    // "lowercase HELLO WORLD", "reverse abc"
    if let Some(c) = OP_FIRST.captures(text)
        && let Some(s) = clean(&c[1])
    {
        return Some(s);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn decide(text: &str) -> (String, Value) {
        let d = route(text);
        (d.task, d.input)
    }

    #[test]
    fn the_seed_requests_route() {
        assert_eq!(
            decide("Give me the stars and contributors for ranfysvalle02/ai-self-attention"),
            (
                "github.repo_info".into(),
                json!({"owner": "ranfysvalle02", "repo": "ai-self-attention"})
            )
        );
        assert_eq!(
            decide("Make the letter `x` uppercase"),
            ("text.transform".into(), json!({"text": "x", "op": "upper"}))
        );
    }

    #[test]
    fn everyday_rephrasings_route() {
        let cases = [
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
        ];
        for (text, target, op) in cases {
            assert_eq!(
                decide(text),
                ("text.transform".into(), json!({"text": target, "op": op})),
                "{text}"
            );
        }
        let repos = [
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
        ];
        for (text, owner, repo) in repos {
            assert_eq!(
                decide(text),
                (
                    "github.repo_info".into(),
                    json!({"owner": owner, "repo": repo})
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn nothing_fits_means_chat() {
        for text in [
            "What is the capital of France?",
            "What is reverse engineering?",
            "Tell me a joke about and/or logic",
            "Is 1/2 bigger than 1/3?",
        ] {
            assert_eq!(decide(text).0, "chat", "{text}");
            assert_eq!(decide(text).1, json!({ "prompt": text }));
        }
    }
}
