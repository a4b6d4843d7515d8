//! The LLM's instructions and answer schema, built from the catalog.
//!
//! The answer schema makes the task field an enum of the catalog's names and the input one of
//! the tasks' input schemas, in the subset of JSON Schema that strict structured output accepts
//! (OpenAI, vLLM and llama.cpp turn it into a grammar). The catalog's example requests are
//! listed under each task. (Few-shot turns made of them were tried and dropped: the 135M local
//! model copied the last example's task, 5/12 right against 9/12 without them.)

use fleet_common::catalog::{Catalog, TaskSpec};
use serde_json::{Map, Value, json};

use super::FALLBACK_TASK;

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
        "You route a user's request to one task of a task queue. Pick the task that does what the \
         user asks and fill in its input from the user's words, copying names and text exactly.\n\n\
         Tasks:\n",
    );
    for spec in choices(catalog) {
        text.push_str(&format!("\n- {}: {}\n", spec.name, spec.description));
        text.push_str(&format!(
            "  input: {}\n",
            serde_json::to_string(&strict_schema(&spec.input_schema)).unwrap_or_default()
        ));
        for example in &spec.examples {
            text.push_str(&format!("  example request: {example}\n"));
        }
    }
    text.push_str(&format!(
        "\nAnswer with one JSON object {{\"task\": <task name>, \"input\": <the task's input>}} and \
         nothing else. If no task fits, answer {{\"task\": \"{FALLBACK_TASK}\", \"input\": \
         {{\"prompt\": <the user's request, unchanged>}}}}.\n"
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
