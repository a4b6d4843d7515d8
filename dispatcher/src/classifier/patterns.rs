//! The patterns tier: the catalog's own phrasings route without an LLM.
//!
//! Each catalog entry may carry `patterns` (see `fleet_common::patterns`). A request matched by
//! certain patterns that all agree (one task, one input) is routed at once, without asking the
//! LLM: faster and free. Matches that disagree, or hints, are only the *best guess*: what
//! routes when no LLM is configured or when its answers were not usable. Nothing matched:
//! `chat` with the whole request as its prompt.

use fleet_common::{
    catalog::{Catalog, PatternMatch},
    messages::ClassifiedBy,
};
use serde_json::json;

use super::{Decision, FALLBACK_TASK};

/// The decision of certain patterns that agree, if any.
pub fn certain(text: &str, catalog: &Catalog) -> Option<Decision> {
    let first = catalog.certain_match(text)?;
    Some(decision(&first, "certain pattern"))
}

/// The patterns' best guess: their first match (certain ones first), else `chat`; `why` says
/// why the LLM did not decide.
///
/// A hint alone does not decide a request phrased as a general question ([`is_question`]):
/// "what license does the repo x/y use?" names a repository in passing and asks something the
/// task does not report; `chat` takes it. A hint still decides a command ("look up the
/// repository x/y").
pub fn fallback(text: &str, catalog: &Catalog, why: &str) -> Decision {
    let matches = catalog.pattern_matches(text);
    if let Some(m) = matches.iter().find(|m| !m.hint) {
        return decision(m, &format!("{why}; patterns' best guess"));
    }
    match matches.first() {
        Some(m) if !is_question(text) => decision(m, &format!("{why}; patterns' best guess")),
        Some(m) => chat(text).because(format!(
            "{why}; only a hint matched ({} #{}) and the request is a question: {FALLBACK_TASK}",
            m.task,
            m.index + 1
        )),
        None => chat(text).because(format!("{why}; no pattern matched: {FALLBACK_TASK}")),
    }
}

/// The task the patterns' best guess names when it is not `chat` (a certain match that others
/// contradicted, or a hint that decides).
pub fn hinted_task(text: &str, catalog: &Catalog) -> Option<String> {
    let guess = fallback(text, catalog, "");
    (guess.task != FALLBACK_TASK).then_some(guess.task)
}

/// Words that open a question ("what …", "does …", "is …").
const QUESTION_WORDS: &[&str] = &[
    "what", "what's", "whats", "why", "how", "how's", "which", "who", "who's", "whose", "whom",
    "when", "where", "is", "isn't", "are", "aren't", "was", "were", "does", "doesn't", "do",
    "don't", "did", "didn't", "should", "shall", "has", "have", "had", "may", "might", "must",
];
/// Verbs that open a polite request when "you" follows ("can you …?").
const REQUEST_VERBS: &[&str] = &["can", "could", "would", "will", "won't"];

/// Whether `text` is phrased as a general question: it opens with a question word, or with
/// "can", "could", "would" or "will" not followed by "you" ("can I …"), or it ends with `?`
/// without opening as a polite request ("can you …?", "please …?").
pub fn is_question(text: &str) -> bool {
    let lower = text.trim().to_lowercase();
    let mut words = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’'))
        .filter(|w| !w.is_empty())
        .map(|w| w.replace('’', "'"));
    let Some(first) = words.next() else {
        return false;
    };
    if QUESTION_WORDS.contains(&first.as_str()) {
        return true;
    }
    let polite = match first.as_str() {
        "please" | "pls" | "plz" | "kindly" => true,
        // "can you …" asks for something; "can I …" asks about something.
        w if REQUEST_VERBS.contains(&w) => {
            if !matches!(words.next().as_deref(), Some("you" | "u" | "ya")) {
                return true;
            }
            true
        }
        _ => false,
    };
    !polite && lower.ends_with('?')
}

/// The fallback decision for `text`: `chat` with the request as its prompt.
pub fn chat(text: &str) -> Decision {
    Decision::new(
        FALLBACK_TASK,
        json!({ "prompt": text }),
        ClassifiedBy::Patterns,
    )
    .because("no pattern matched")
}

fn decision(m: &PatternMatch<'_>, why: &str) -> Decision {
    Decision::new(m.task, m.input.clone(), ClassifiedBy::Patterns).because(format!(
        "{why} ({} #{}{})",
        m.task,
        m.index + 1,
        if m.hint { ", a hint" } else { "" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_common::{catalog::TaskSpec, patterns::Pattern};
    use serde_json::{Value, json};

    fn catalog() -> Catalog {
        let spec = |name: &str, patterns: Vec<Pattern>| -> TaskSpec {
            serde_json::from_value(json!({
                "name": name,
                "description": name,
                "input_schema": {"type": "object"},
                "patterns": patterns,
            }))
            .expect("a spec")
        };
        let mut c = Catalog::default();
        for s in [
            spec(
                "shout",
                vec![
                    Pattern::new(r"(?i)^shout (?P<text>.+)$"),
                    Pattern::new(r"(?i)^say (?P<text>.+) loudly$"),
                    Pattern::new(r"(?i)loud.*'(?P<text>[^']+)'").hint(),
                ],
            ),
            spec(
                "echo",
                vec![Pattern::new(r"(?i)^(?:say|shout) (?P<text>.+)$")],
            ),
            spec("chat", vec![]),
        ] {
            c.insert(s).expect("valid");
        }
        c
    }

    fn route(d: &Decision) -> (&str, &Value) {
        (d.task.as_str(), &d.input)
    }

    #[test]
    fn a_certain_match_routes_without_the_llm() {
        let c = catalog();
        let d = certain("say hi", &c).expect("only echo matches");
        assert_eq!(route(&d), ("echo", &json!({"text": "hi"})));
        assert_eq!(d.by, ClassifiedBy::Patterns);
        assert!(d.routing.reason.contains("certain pattern"), "{d:?}");
        // Two certain matches that agree on the task but not the input, or disagree on the
        // task, are not certain.
        assert!(certain("shout hi", &c).is_none());
        // A hint alone is not certain.
        assert!(certain("be loud: 'hey'", &c).is_none());
        assert!(certain("what is the weather?", &c).is_none());
    }

    #[test]
    fn general_questions_are_told_from_commands() {
        for q in [
            "What license does the repo tokio-rs/tokio use?",
            "why is \"upper\" spelled so",
            "Does the project a/b still build?",
            "Can I fork the repository a/b?",
            "the repository a/b, any good?",
            "Is it better to use upper or lower bounds?",
        ] {
            assert!(is_question(q), "{q}");
        }
        for c in [
            "Look up the repository celery/celery",
            "tell me about the github project a/b",
            "Can you make \"x\" uppercase?",
            "could u look up the repo a/b?",
            "please shout \"x\"?",
            "I need \"MiXeD\" in lowercase",
            "",
        ] {
            assert!(!is_question(c), "{c}");
        }
    }

    #[test]
    fn a_hint_alone_does_not_decide_a_question() {
        let c = catalog();
        let d = fallback("is it loud: 'hey'?", &c, "no LLM");
        assert_eq!(
            route(&d),
            ("chat", &json!({"prompt": "is it loud: 'hey'?"}))
        );
        assert!(d.routing.reason.contains("a question"), "{d:?}");
        // A certain match still decides a question.
        let d = fallback("say hi?", &c, "no LLM");
        assert_eq!(route(&d), ("echo", &json!({"text": "hi?"})));
    }

    #[test]
    fn the_hinted_task_is_the_best_guess_unless_that_is_chat() {
        let c = catalog();
        assert_eq!(hinted_task("be loud: 'hey'", &c).as_deref(), Some("shout"));
        assert_eq!(hinted_task("shout hi", &c).as_deref(), Some("echo"));
        // A question with only a hint, or no match at all, leaves `chat`.
        assert_eq!(hinted_task("is it loud: 'hey'?", &c), None);
        assert_eq!(hinted_task("what is the weather?", &c), None);
    }

    #[test]
    fn the_best_guess_prefers_certain_matches_then_hints_then_chat() {
        let c = catalog();
        let d = fallback("shout hi", &c, "no LLM");
        assert_eq!(route(&d), ("echo", &json!({"text": "hi"})));
        assert!(
            d.routing.reason.starts_with("no LLM; patterns' best guess"),
            "{d:?}"
        );
        let d = fallback("be loud: 'hey'", &c, "the LLM is down");
        assert_eq!(route(&d), ("shout", &json!({"text": "hey"})));
        assert!(d.routing.reason.contains("hint"), "{d:?}");
        let d = fallback("what is the weather?", &c, "no LLM");
        assert_eq!(
            route(&d),
            ("chat", &json!({"prompt": "what is the weather?"}))
        );
        assert!(d.routing.reason.contains("no pattern matched"), "{d:?}");
    }
}
