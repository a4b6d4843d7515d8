//! `text.transform`: change the case or order of a text.

use fleet_common::patterns::Pattern;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Task;
use crate::error::TaskError;

/// What to do to the text. The doc lines are what a model reads in the schema: they say which
/// words ask for which operation.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Every letter a capital: "uppercase", "upper case", "capital letters", "all caps".
    Upper,
    /// Every letter small: "lowercase", "lower case", "small letters".
    Lower,
    /// The first letter of every word a capital: "title case".
    Title,
    /// Only the very first letter a capital: "capitalize".
    Capitalize,
    /// The characters in the opposite order: "reverse", "backwards".
    Reverse,
    /// Capitals become small and small become capitals: "swap case", "invert case".
    Swapcase,
    /// Remove white space around the text: "trim", "strip".
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
    const DESCRIPTION: &'static str = "Rewrite a piece of text the user gives: change its letters to upper case (capital letters), lower case (small letters), title case, capitalize the first letter, reverse it, swap its case or trim it. Pick this whenever the request names such a change and gives the text, even as 'lowercase this: TEXT' or 'TEXT in capital letters'; `text` is only the text to change, copied exactly, without the instruction.";
    const OUTPUT: &'static str = "{ \"text\": the transformed text }";
    const EXAMPLES: &'static [&'static str] = &[
        "Make the letter `x` uppercase",
        "lowercase HELLO WORLD",
        "Reverse the string 'abc'",
    ];

    fn patterns() -> Vec<Pattern> {
        patterns()
    }

    async fn run(&self, input: Input) -> Result<Value, TaskError> {
        Ok(json!({ "text": transform(&input.text, input.op) }))
    }
}

/// Polite openings before a command.
/// The same short chat forms as the dispatcher's question words: "pls", "plz", "u", "ya".
const POLITE: &str = r"(?:(?:please|pls|plz|kindly|(?:can|could|would|will)\s+(?:you|u|ya)|i want you to|i need you to|i'd like you to|help me|now|ok|okay)[\s,]+)*";
/// Verbs that ask for a text to be rewritten.
const VERB: &str = r"(?:make|convert|turn|change|transform|put|render|write|set|format|rewrite|spell|print|type|return|output|flip|show(?:\s+me)?|give\s+me)";
/// Words that name the text ("the word", "this sentence", "it").
const NOUN: &str = r"(?:(?:(?:the|this|that|my)\s+)?(?:(?:following|given)\s+)?(?:letters?|words?|text|string|phrase|sentence|name|title|characters?|line)|this|that|these|it|the\s+following)";
/// The text itself, lazily, inside optional quotes.
const TEXT: &str = r#"["'`“‘]?(?P<text>.+?)["'`”’]?"#;
/// Courtesy and punctuation after a command.
const END: &str = r"(?:[\s,]*(?:please|pls|plz|for me|thanks|thank you|thx))*[\s.!?]*$";

/// Each operation: the words naming it as a result ("in capital letters") and as a verb
/// ("uppercase X"). Upper comes before capitalize, so "capitalize all of X" is read as upper
/// when no model settles it.
const OPS: &[(&str, &str, &str)] = &[
    (
        "upper",
        r"upper[\s-]*case(?:d)?|upper|all[\s-]+caps|all[\s-]+capitals?|caps(?:\s+lock)?|capitals|capital\s+letters|block\s+capitals",
        r"upper[\s-]*case|upcase|capitali[sz]e\s+(?:all|every(?:thing)?)(?:\s+(?:the\s+)?letters)?(?:\s+(?:of|in))?",
    ),
    (
        "lower",
        r"lower[\s-]*case(?:d)?|lower|small\s+letters|no\s+capitals",
        r"lower[\s-]*case|downcase",
    ),
    (
        "title",
        r"title[\s-]*case(?:d)?|headline\s+case",
        r"title[\s-]*case|capitali[sz]e\s+(?:each|every)\s+word(?:\s+(?:of|in))?",
    ),
    (
        "swapcase",
        r"swap(?:ped)?[\s-]*case|inverted\s+case|opposite\s+case",
        r"swap(?:\s+the)?[\s-]*case(?:\s+of)?|invert(?:\s+the)?\s+case(?:\s+of)?|swapcase",
    ),
    (
        "reverse",
        r"reverse(?:d)?(?:\s+order)?|backwards?",
        r"reverse(?:\s+the\s+order\s+of)?",
    ),
    (
        "capitalize",
        r"capitali[sz]ed",
        r"capitali[sz]e(?:\s+the\s+first\s+letter\s+of)?",
    ),
];

/// The catalog patterns of `text.transform`: for each operation, "make X upper case",
/// "uppercase X", "upper case this: X" (certain) and an operation word with a double-quoted
/// or back-quoted text anywhere (a hint).
pub(super) fn patterns() -> Vec<Pattern> {
    let mut out = Vec::new();
    for (op, result, verb) in OPS {
        // "make the letter x uppercase", "convert HELLO to lower case", "write X in capital letters"
        out.push(
            Pattern::new(format!(
                r"(?i)^{POLITE}{VERB}\s+(?:{NOUN}\s+)?{TEXT}\s+(?:(?:to|into|in|as|with|using)\s+)?(?:(?:all|its|an?|the)\s+)?(?:{result})(?:\s+(?:format|form|style|letters|characters))?{END}"
            ))
            .with("op", *op),
        );
        // "lower-case this text: QUIET PLEASE", "To upper case: the quick brown fox"
        out.push(
            Pattern::new(format!(
                r"(?i)^{POLITE}(?:{VERB}\s+)?(?:{NOUN}\s+)?(?:(?:to|into|in|as)\s+)?(?:(?:all|its|an?|the)\s+)?(?:{result}|{verb})(?:\s+(?:format|form|style|letters|characters|please|pls|plz))?(?:\s+{NOUN})?\s*:\s*{TEXT}[\s.!]*$"
            ))
            .with("op", *op),
        );
        // "lowercase HELLO WORLD", "reverse the string abc", "can you capitalize the word paris?"
        // (no colon in the text: "lower-case this text: X" is the form above)
        out.push(
            Pattern::new(format!(
                r#"(?i)^{POLITE}(?:to\s+)?(?:{verb})\s+(?:{NOUN}\s+)?["'`“‘]?(?P<text>[^:]+?)["'`”’]?{END}"#
            ))
            .with("op", *op),
        );
        // 'I'd like "hello" in uppercase': a hint, the rest of the words may say otherwise.
        out.push(
            Pattern::new(format!(
                r#"(?i)\b(?:{result}|{verb})\b.*?["`“](?P<text>[^"`”]+)["`”]"#
            ))
            .with("op", *op)
            .hint(),
        );
        out.push(
            Pattern::new(format!(
                r#"(?i)["`“](?P<text>[^"`”]+)["`”].*?\b(?:{result}|{verb})\b"#
            ))
            .with("op", *op)
            .hint(),
        );
    }
    out
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
