//! `text.transform`: change the case or order of a text.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Task;
use crate::error::TaskError;

/// What to do to the text.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// UPPER CASE.
    Upper,
    /// lower case.
    Lower,
    /// Title Case Of Every Word.
    Title,
    /// First letter upper case.
    Capitalize,
    /// txet eht esreveR.
    Reverse,
    /// sWAP THE cASE.
    Swapcase,
    /// Remove surrounding white space.
    Trim,
}

/// The input of `text.transform`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The text to transform.
    pub text: String,
    /// The operation.
    pub op: Op,
}

/// Changes the case or order of a text.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextTransform;

impl Task for TextTransform {
    type Input = Input;
    const NAME: &'static str = "text.transform";
    const DESCRIPTION: &'static str = "Transform a given text: upper case, lower case, title case, capitalize, reverse, swap case or trim. Use for requests that ask to change how a piece of text is written.";
    const OUTPUT: &'static str = "{ \"text\": the transformed text }";
    const EXAMPLES: &'static [&'static str] = &[
        "Make the letter `x` uppercase",
        "lowercase HELLO WORLD",
        "Reverse the string 'abc'",
    ];

    async fn run(&self, input: Input) -> Result<Value, TaskError> {
        Ok(json!({ "text": transform(&input.text, input.op) }))
    }
}

/// Applies `op` to `text`.
pub(super) fn transform(text: &str, op: Op) -> String {
    match op {
        Op::Upper => text.to_uppercase(),
        Op::Lower => text.to_lowercase(),
        Op::Title => text
            .split_inclusive(char::is_whitespace)
            .map(capitalize_first)
            .collect(),
        Op::Capitalize => capitalize_first(text),
        Op::Reverse => text.chars().rev().collect(),
        Op::Swapcase => text
            .chars()
            .flat_map(|c| {
                if c.is_uppercase() {
                    c.to_lowercase().collect::<Vec<_>>()
                } else {
                    c.to_uppercase().collect::<Vec<_>>()
                }
            })
            .collect(),
        Op::Trim => text.trim().to_owned(),
    }
}

fn capitalize_first(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_transform() {
        assert_eq!(transform("x", Op::Upper), "X");
        assert_eq!(transform("HeLLo", Op::Lower), "hello");
        assert_eq!(transform("the quick  fox", Op::Title), "The Quick  Fox");
        assert_eq!(transform("pARIS", Op::Capitalize), "Paris");
        assert_eq!(transform("abc", Op::Reverse), "cba");
        assert_eq!(transform("aBc", Op::Swapcase), "AbC");
        assert_eq!(transform("  a ", Op::Trim), "a");
    }
}
