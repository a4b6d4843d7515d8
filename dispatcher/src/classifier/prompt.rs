//! The LLM's instructions and answer schema, built from the catalog.
//!
//! The answer schema makes the task field an enum of the catalog's names and the input one of
//! the tasks' input schemas, in the subset of JSON Schema that strict structured output accepts
//! (OpenAI, vLLM and llama.cpp turn it into a grammar). The catalog's example requests are
//! listed under each task. (Few-shot turns made of them were tried and dropped: the 135M local
//! model copied the last example's task, 5/12 right against 9/12 without them.)
//!
//! Prompts are bounded before they reach the LLM, whatever a request or a catalog entry holds:
//! the user message shows at most [`PROMPT_TEXT_MAX`] bytes of the request's text and says when
//! it was cut; each task shows at most [`DESCRIPTION_MAX`] bytes of description and
//! [`EXAMPLES_MAX`] examples of at most [`EXAMPLE_MAX`] bytes. Input schemas are shown whole:
//! the answer must match them.

use fleet_common::catalog::{Catalog, TaskSpec};
use serde_json::{Map, Value, json};

use super::FALLBACK_TASK;

/// The most bytes of a request's text a prompt shows. `FLEET_MAX_REQUEST_BYTES` lets a request
/// be 64 KiB; the task it asks for shows in its first words, and every byte shown costs about a
/// quarter of a token on each call (two with a corrective retry).
pub const PROMPT_TEXT_MAX: usize = 4 * 1024;
/// The most bytes of a task's description a prompt shows.
pub(crate) const DESCRIPTION_MAX: usize = 1024;
/// The most example requests a prompt shows per task.
pub(crate) const EXAMPLES_MAX: usize = 5;
/// The most bytes of one example request a prompt shows.
pub(crate) const EXAMPLE_MAX: usize = 256;

/// How many characters at the end of a cut text identify it (see
/// [`RequestText::copied_up_to_the_cut`]).
const CUT_TAIL_CHARS: usize = 24;

/// A request's text as a prompt shows it: whole, or its first [`PROMPT_TEXT_MAX`] bytes (at a
/// character boundary) and a line saying how much more there is.
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestText<'a> {
    /// What the prompt shows.
    shown: &'a str,
    /// The whole text's length in bytes.
    total: usize,
}

// === impl RequestText ===

impl<'a> RequestText<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self {
            shown: clip(text, PROMPT_TEXT_MAX),
            total: text.len(),
        }
    }

    /// Whether the prompt shows less than the whole text.
    pub(super) fn is_cut(&self) -> bool {
        self.shown.len() < self.total
    }

    /// The user message.
    pub(super) fn prompt(&self) -> String {
        if self.is_cut() {
            format!(
                "{}\n\n[The request goes on: only its first {} of {} bytes are shown.]",
                self.shown,
                self.shown.len(),
                self.total
            )
        } else {
            self.shown.to_owned()
        }
    }

    /// Whether an answer's input copies the text right up to the cut: such an input stops
    /// where the prompt did, not where the request does, so it must not run.
    pub(super) fn copied_up_to_the_cut(&self, input: &Value) -> bool {
        if !self.is_cut() {
            return false;
        }
        let shown = self.shown.trim_end();
        let tail_start = shown
            .char_indices()
            .rev()
            .nth(CUT_TAIL_CHARS - 1)
            .map_or(0, |(i, _)| i);
        let tail = &shown[tail_start..];
        !tail.is_empty() && any_string(input, &|s| s.contains(tail))
    }
}

/// Whether any string in `value` passes `test`.
fn any_string(value: &Value, test: &dyn Fn(&str) -> bool) -> bool {
    match value {
        Value::String(s) => test(s),
        Value::Array(items) => items.iter().any(|v| any_string(v, test)),
        Value::Object(map) => map.values().any(|v| any_string(v, test)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends at a character boundary.
fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The tasks the LLM may choose: all but the explicit-only ones.
pub(super) fn choices(catalog: &Catalog) -> Vec<&TaskSpec> {
    catalog.specs().filter(|s| !s.explicit_only).collect()
}

/// The JSON Schema of an answer: `{"task": one of the names, "input": that task's input}`.
pub fn response_schema(catalog: &Catalog) -> Value {
    let specs = choices(catalog);
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let inputs: Vec<Value> = specs
        .iter()
        .map(|s| strict_schema(&s.input_schema))
        .collect();
    json!({
        "type": "object",
        "properties": {
            "task": { "type": "string", "enum": names },
            "input": { "anyOf": inputs },
        },
        "required": ["task", "input"],
        "additionalProperties": false,
    })
}

/// Rewrites a schemars schema into the strict structured-output subset: local `$ref`s inlined
/// (some servers cannot resolve `$defs`); no `$schema`, titles, defaults or string bounds;
/// `oneOf` of constants becomes an `enum`, other `oneOf` an `anyOf`; every object closed, with
/// every property required. Our own validation still applies the full schema afterwards.
pub fn strict_schema(schema: &Value) -> Value {
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .cloned()
        .unwrap_or(Value::Null);
    strict(&inline_refs(schema, &defs, 0))
}

/// Replaces `{"$ref": "#/$defs/X"}` (or `#/definitions/X`) by the definition, recursively.
fn inline_refs(schema: &Value, defs: &Value, depth: usize) -> Value {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref")
                && depth < 16
            {
                let name = reference
                    .strip_prefix("#/$defs/")
                    .or_else(|| reference.strip_prefix("#/definitions/"));
                if let Some(def) = name.and_then(|n| defs.get(n)) {
                    let mut inlined = inline_refs(def, defs, depth + 1);
                    if let (Value::Object(target), Some(d)) = (&mut inlined, map.get("description"))
                    {
                        target.insert("description".into(), d.clone());
                    }
                    return inlined;
                }
            }
            Value::Object(
                map.iter()
                    .filter(|(k, _)| k.as_str() != "$defs" && k.as_str() != "definitions")
                    .map(|(k, v)| (k.clone(), inline_refs(v, defs, depth + 1)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| inline_refs(v, defs, depth + 1))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn strict(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(items)) = map.get("oneOf")
                && items.iter().all(|i| i.get("const").is_some())
            {
                let values: Vec<Value> = items
                    .iter()
                    .filter_map(|i| i.get("const").cloned())
                    .collect();
                let mut out = Map::new();
                out.insert("type".into(), json!("string"));
                out.insert("enum".into(), Value::Array(values));
                if let Some(d) = map.get("description") {
                    out.insert("description".into(), d.clone());
                }
                return Value::Object(out);
            }
            let mut out = Map::new();
            for (key, value) in map {
                match key.as_str() {
                    "$schema" | "title" | "default" | "examples" | "minLength" | "maxLength"
                    | "pattern" | "format" => {}
                    "oneOf" => {
                        out.insert("anyOf".into(), strict(value));
                    }
                    "properties" => {
                        let props = value.as_object().cloned().unwrap_or_default();
                        let required: Vec<Value> = props.keys().map(|k| json!(k)).collect();
                        out.insert(
                            "properties".into(),
                            Value::Object(
                                props.iter().map(|(k, v)| (k.clone(), strict(v))).collect(),
                            ),
                        );
                        out.insert("required".into(), Value::Array(required));
                        out.insert("additionalProperties".into(), json!(false));
                    }
                    "required" | "additionalProperties" => {}
                    _ => {
                        out.insert(key.clone(), strict(value));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(strict_schema).collect()),
        other => other.clone(),
    }
}

/// The system message: what the tasks are and how to answer. With `schema_in_prompt` (servers
/// without `json_schema` response formats), the answer schema is spelled out.
pub(super) fn system_prompt(catalog: &Catalog, schema_in_prompt: bool) -> String {
    let mut text = String::from(
        "You route a user's request to one task of a task queue. Pick the task that does exactly \
         what the user asks, and fill in its input by copying the user's own words: names and \
         text exactly as written, never made up, never rephrased. A question, a request to \
         explain, write, translate or advise, or anything no other task does is `chat`, even \
         when it mentions a repository or a word like uppercase.\n\n\
         Tasks:\n",
    );
    for spec in choices(catalog) {
        text.push_str(&format!(
            "\n- {}: {}\n",
            spec.name,
            clip(&spec.description, DESCRIPTION_MAX)
        ));
        text.push_str(&format!(
            "  input: {}\n",
            serde_json::to_string(&strict_schema(&spec.input_schema)).unwrap_or_default()
        ));
        for example in spec.examples.iter().take(EXAMPLES_MAX) {
            text.push_str(&format!(
                "  example request: {}\n",
                clip(example, EXAMPLE_MAX)
            ));
        }
    }
    text.push_str(&format!(
        "\nAnswer with one JSON object {{\"task\": <task name>, \"input\": <the task's input>}} and \
         nothing else. If no task fits, answer {{\"task\": \"{FALLBACK_TASK}\", \"input\": \
         {{\"prompt\": <the user's request, copied unchanged>}}}}.\n"
    ));
    if schema_in_prompt {
        text.push_str(&format!(
            "The answer must match this JSON Schema: {}\n",
            serde_json::to_string(&response_schema(catalog)).unwrap_or_default()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_requests_are_cut_at_a_character_and_say_so() {
        let short = RequestText::new("Make the letter x uppercase");
        assert!(!short.is_cut());
        assert_eq!(short.prompt(), "Make the letter x uppercase");

        // 64 KiB of two-byte characters: the cut falls inside none of them.
        let long = "é".repeat(32 * 1024);
        let text = RequestText::new(&long);
        assert!(text.is_cut());
        let prompt = text.prompt();
        assert!(prompt.len() < PROMPT_TEXT_MAX + 100, "{}", prompt.len());
        assert!(prompt.starts_with(&"é".repeat(PROMPT_TEXT_MAX / 2)));
        assert!(
            prompt
                .ends_with("[The request goes on: only its first 4096 of 65536 bytes are shown.]"),
            "{}",
            &prompt[PROMPT_TEXT_MAX..]
        );
    }

    #[test]
    fn answers_that_copy_up_to_the_cut_are_spotted() {
        let long = format!("Uppercase this: {}", "abcdefghij ".repeat(1000));
        let text = RequestText::new(&long);
        let copied = &long[16..PROMPT_TEXT_MAX];
        assert!(text.copied_up_to_the_cut(&json!({"text": copied, "op": "upper"})));
        assert!(text.copied_up_to_the_cut(&json!({"items": [{"text": format!("{copied}…")}]})));
        assert!(!text.copied_up_to_the_cut(&json!({"text": "abcdefghij", "op": "upper"})));
        assert!(!text.copied_up_to_the_cut(&json!({"prompt": 5})));
        // Nothing was cut: copying the whole text is right.
        let whole = RequestText::new("Uppercase this: abc");
        assert!(!whole.copied_up_to_the_cut(&json!({"text": "Uppercase this: abc"})));
    }

    #[test]
    fn catalog_text_is_bounded_in_the_system_prompt() {
        // Whoever may write the catalog could put megabytes in an entry.
        let spec: TaskSpec = serde_json::from_value(json!({
            "name": "big.task",
            "description": "d".repeat(100_000),
            "input_schema": {"type": "object", "properties": {}},
            "output": "",
            "examples": vec!["e".repeat(10_000); 100],
        }))
        .expect("a catalog entry");
        let mut catalog = Catalog::default();
        catalog.insert(spec).expect("a valid spec");
        let prompt = system_prompt(&catalog, true);
        assert!(prompt.len() < 8 * 1024, "{}", prompt.len());
        assert_eq!(prompt.matches("example request: ").count(), EXAMPLES_MAX);
    }

    #[test]
    fn refs_are_inlined() {
        let schema = json!({
            "type": "object",
            "properties": {"op": {"$ref": "#/$defs/Op", "description": "what to do"}},
            "required": ["op"],
            "$defs": {"Op": {"oneOf": [{"const": "upper"}, {"const": "lower"}]}}
        });
        assert_eq!(
            strict_schema(&schema)["properties"]["op"],
            json!({"type": "string", "enum": ["upper", "lower"], "description": "what to do"})
        );
    }

    #[test]
    fn strict_schemas_close_objects_and_flatten_const_choices() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Input",
            "type": "object",
            "properties": {
                "text": {"type": "string", "minLength": 1},
                "op": {"oneOf": [{"const": "upper", "description": "UP"}, {"const": "lower"}]}
            },
            "required": ["text"]
        });
        let mut strict = strict_schema(&schema);
        let mut required: Vec<String> =
            serde_json::from_value(strict["required"].take()).expect("required is a list of names");
        required.sort();
        assert_eq!(required, ["op", "text"]);
        assert_eq!(
            strict,
            json!({
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "op": {"type": "string", "enum": ["upper", "lower"]}
                },
                "required": null,
                "additionalProperties": false
            })
        );
    }
}
