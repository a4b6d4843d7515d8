//! The check on an LLM's answer: is its input found in the request's words?
//!
//! A model that invents an argument ("Make the letter x uppercase" routed to `chat` with a
//! prompt it wrote itself, a repository it guessed) must not run as that task. Every free-text
//! string of the input must appear in the request as a run of whole words, allowing for case,
//! quotes and punctuation (`"nats.rs"` is found in `nats-io/nats.rs.`), and for URL forms (an
//! argument `https://github.com/owner/repo` is found in a request that says `owner/repo`).
//! Strings the schema restricts to a list of values (`op: upper`) are the model's choice from
//! that list, not a copy of the words, and are not checked.
//!
//! The fallback task (`chat`) passes the request on as it is: its strings must be the whole
//! request ([`check_whole`]). A weak model that answers `chat` with a fragment ("Be quiet" for
//! `Shout it: make "be quiet" uppercase`) has taken the fragment for an argument of another
//! task; measured with SmolLM2-135M, such answers were wrong every time, and refusing them lets
//! the patterns' best guess decide.

use serde_json::Value;

use super::strict_schema;

/// Why an input is not grounded: its first string that is not in the request's words.
pub fn check(input: &Value, input_schema: &Value, text: &str) -> Result<(), String> {
    let words = words(text);
    let schema = strict_schema(input_schema);
    match first_ungrounded(input, Some(&schema), text, &words) {
        None => Ok(()),
        Some(s) => Err(format!(
            "`{}` is not in the request; copy the input from the request's words",
            shorten(&s, 80)
        )),
    }
}

/// Why a fallback task's input is not the request: its first string whose words are not the
/// request's words, all of them, in order (case, quotes and punctuation aside).
pub fn check_whole(input: &Value, text: &str) -> Result<(), String> {
    let words = words(text);
    match first_string(input, &|s| self::words(s) == words) {
        None => Ok(()),
        Some(s) => Err(format!(
            "`{}` is not the whole request; copy the request unchanged",
            shorten(&s, 80)
        )),
    }
}

/// The first string of `value` that fails `ok`.
fn first_string(value: &Value, ok: &dyn Fn(&str) -> bool) -> Option<String> {
    match value {
        Value::String(s) => (!ok(s)).then(|| s.clone()),
        Value::Array(items) => items.iter().find_map(|v| first_string(v, ok)),
        Value::Object(map) => map.values().find_map(|v| first_string(v, ok)),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// The first free-text string of `value` (read with `schema`) not found in `text`.
fn first_ungrounded(
    value: &Value,
    schema: Option<&Value>,
    text: &str,
    words: &[String],
) -> Option<String> {
    match value {
        Value::String(s) => {
            if schema.is_some_and(|sc| is_choice(sc, value)) || grounded(s, text, words) {
                None
            } else {
                Some(s.clone())
            }
        }
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.get("items"));
            items
                .iter()
                .find_map(|v| first_ungrounded(v, item_schema, text, words))
        }
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let sub = schema.and_then(|s| property(s, k));
            first_ungrounded(v, sub, text, words)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// The schema of property `name`, looking inside `anyOf` alternatives too.
fn property<'a>(schema: &'a Value, name: &str) -> Option<&'a Value> {
    schema
        .get("properties")
        .and_then(|p| p.get(name))
        .or_else(|| {
            schema
                .get("anyOf")
                .and_then(Value::as_array)
                .and_then(|alts| alts.iter().find_map(|a| property(a, name)))
        })
}

/// Whether `schema` restricts the value to a list (`enum`, `const`) that holds `value`.
fn is_choice(schema: &Value, value: &Value) -> bool {
    if schema.get("const") == Some(value) {
        return true;
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.contains(value);
    }
    schema
        .get("anyOf")
        .and_then(Value::as_array)
        .is_some_and(|alts| alts.iter().any(|a| is_choice(a, value)))
}

/// Whether `arg` is found in the request: its words as a run of the request's words, or, for
/// an argument with no letters or digits, as it is; a URL also without its scheme and host.
fn grounded(arg: &str, text: &str, words: &[String]) -> bool {
    let arg = arg.trim();
    if in_words(arg, text, words) {
        return true;
    }
    let without_scheme = arg
        .strip_prefix("https://")
        .or_else(|| arg.strip_prefix("http://"));
    if let Some(rest) = without_scheme {
        if in_words(rest, text, words) {
            return true;
        }
        if let Some((_host, path)) = rest.split_once('/')
            && in_words(path, text, words)
        {
            return true;
        }
    }
    false
}

fn in_words(arg: &str, text: &str, words: &[String]) -> bool {
    let needle = self::words(arg);
    if needle.is_empty() {
        return !arg.is_empty() && text.contains(arg);
    }
    words.windows(needle.len()).any(|w| w == needle.as_slice())
}

/// The lower-cased runs of letters and digits of `text`.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// At most `max` characters of `s`, with `…` when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn transform_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "op": {"$ref": "#/$defs/Op"}
            },
            "$defs": {"Op": {"oneOf": [{"const": "upper"}, {"const": "lower"}]}}
        })
    }

    #[test]
    fn copied_words_are_grounded_whatever_the_case_quotes_and_punctuation() {
        let s = transform_schema();
        let ok = |input: Value, text: &str| check(&input, &s, text).is_ok();
        assert!(ok(
            json!({"text": "x", "op": "upper"}),
            "Make the letter `x` uppercase"
        ));
        assert!(ok(
            json!({"text": "shouting is rude", "op": "lower"}),
            "lowercase this: SHOUTING IS RUDE"
        ));
        assert!(ok(
            json!({"text": "\"quiet please\"", "op": "upper"}),
            "Write `quiet please` in capital letters"
        ));
        // The op is a choice from the schema's list, not a copy of the words.
        assert!(ok(
            json!({"text": "quiet please", "op": "upper"}),
            "Write quiet please in capital letters"
        ));
    }

    #[test]
    fn invented_arguments_are_not_grounded() {
        let s = transform_schema();
        let e = check(
            &json!({"text": "y", "op": "upper"}),
            &s,
            "Make the letter x uppercase",
        )
        .expect_err("y is not in the request");
        assert!(e.contains("`y`"), "{e}");
        let chat = json!({"type": "object", "properties": {"prompt": {"type": "string"}}});
        assert!(
            check(
                &json!({"prompt": "Convert the letter x to upper case."}),
                &chat,
                "Make the letter x uppercase"
            )
            .is_err()
        );
        // A word found only inside another word is not found.
        assert!(check(&json!({"prompt": "case"}), &chat, "uppercase x").is_err());
        // The message stays short whatever the model wrote.
        let e = check(&json!({"prompt": "z".repeat(5_000)}), &chat, "hi").expect_err("not there");
        assert!(e.len() < 200, "{}", e.len());
    }

    #[test]
    fn repositories_are_found_in_url_forms() {
        let s = json!({"type": "object", "properties": {
            "owner": {"type": "string"}, "repo": {"type": "string"}}});
        let text = "contributors of https://github.com/tokio-rs/tokio.git please";
        assert!(check(&json!({"owner": "tokio-rs", "repo": "tokio"}), &s, text).is_ok());
        assert!(
            check(
                &json!({"owner": "Nats-IO", "repo": "nats.rs"}),
                &s,
                "stars of nats-io/nats.rs."
            )
            .is_ok()
        );
        let url = json!({"type": "object", "properties": {"url": {"type": "string"}}});
        assert!(
            check(
                &json!({"url": "https://github.com/owner/repo"}),
                &url,
                "open owner/repo"
            )
            .is_ok()
        );
        assert!(check(&json!({"owner": "tokio", "repo": "axum"}), &s, text).is_err());
    }

    #[test]
    fn the_fallback_task_takes_the_whole_request() {
        let text = "Shout it: make \"be quiet\" uppercase";
        assert!(check_whole(&json!({"prompt": text}), text).is_ok());
        assert!(
            check_whole(
                &json!({"prompt": "shout it - make be quiet UPPERCASE!"}),
                text
            )
            .is_ok()
        );
        let e = check_whole(&json!({"prompt": "Be quiet"}), text).expect_err("a fragment");
        assert!(e.contains("not the whole request"), "{e}");
        assert!(
            check_whole(
                &json!({"prompt": "Shout it: make be quiet uppercase now"}),
                text
            )
            .is_err()
        );
    }

    #[test]
    fn arguments_without_words_must_appear_as_they_are() {
        let chat = json!({"type": "object", "properties": {"prompt": {"type": "string"}}});
        assert!(check(&json!({"prompt": "?!"}), &chat, "reverse ?!").is_ok());
        assert!(check(&json!({"prompt": "?!"}), &chat, "reverse !?").is_err());
        // Numbers and booleans are not strings: nothing to find.
        assert!(check(&json!({"prompt": "hi", "n": 3}), &chat, "hi").is_ok());
    }
}
