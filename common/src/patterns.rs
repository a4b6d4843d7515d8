//! Routing patterns: phrasings that certainly mean a task, as catalog data.
//!
//! A catalog entry's `patterns` are regular expressions in the common RE2 subset (the syntax
//! Go's `regexp`, RE2, Rust's `regex` and, for what patterns use, Python's `re` share: `(?i)`
//! at the very start only, `(?P<name>…)` groups, no look-around, no back-references), so a
//! worker written in any language can publish them. A pattern matches somewhere in the
//! request's text (anchor it with `^…$` to match the whole text); its named groups fill the
//! input fields of the same name (trimmed of white space), its `input` adds fixed fields
//! (`{"op": "upper"}`). A pattern is *certain* unless it says `hint: true`: a certain match
//! skips the LLM; a hint is only the best guess when no LLM can decide.
//!
//! Whoever can write the catalog could publish huge or many expressions: each is bounded
//! ([`REGEX_MAX`] bytes of source, a compiled-size limit) and a task keeps its first
//! [`PATTERNS_MAX`]. Rust's `regex` matches in linear time, so no pattern can hang routing.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The most patterns of one task that are used.
pub const PATTERNS_MAX: usize = 128;
/// The longest pattern source accepted, in bytes.
pub const REGEX_MAX: usize = 4 * 1024;
/// The compiled-size limit of one pattern (the `regex` crate's `size_limit`).
const COMPILED_MAX: usize = 1 << 20;

/// One routing pattern of a catalog entry, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pattern {
    /// The regular expression; named groups fill input fields of the same name.
    pub regex: String,
    /// Input fields this phrasing fixes, such as `{"op": "upper"}`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub input: Map<String, Value>,
    /// A likely match rather than a certain one: it never skips the LLM, it is the best guess
    /// when the LLM is not configured or gave no usable answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hint: bool,
}

// === impl Pattern ===

impl Pattern {
    /// A certain pattern with no fixed fields.
    pub fn new(regex: impl Into<String>) -> Self {
        Self {
            regex: regex.into(),
            input: Map::new(),
            hint: false,
        }
    }

    /// The same pattern, fixing the input field `field` to `value`.
    pub fn with(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.input.insert(field.to_owned(), value.into());
        self
    }

    /// The same pattern, as a hint.
    pub fn hint(mut self) -> Self {
        self.hint = true;
        self
    }
}

/// A pattern ready to match.
#[derive(Debug, Clone)]
pub struct CompiledPattern {
    /// The compiled expression.
    regex: Regex,
    /// The fixed fields.
    input: Map<String, Value>,
    /// Whether it is only a hint.
    hint: bool,
}

// === impl CompiledPattern ===

impl CompiledPattern {
    /// Compiles `pattern`.
    ///
    /// # Errors
    ///
    /// A sentence saying why the expression is not usable (too long, not valid syntax).
    pub fn new(pattern: &Pattern) -> Result<Self, String> {
        if pattern.regex.len() > REGEX_MAX {
            return Err(format!(
                "a pattern is {} bytes long; the limit is {REGEX_MAX}",
                pattern.regex.len()
            ));
        }
        let regex = RegexBuilder::new(&pattern.regex)
            .size_limit(COMPILED_MAX)
            .build()
            .map_err(|e| format!("pattern `{}` is not a valid expression: {e}", pattern.regex))?;
        Ok(Self {
            regex,
            input: pattern.input.clone(),
            hint: pattern.hint,
        })
    }

    /// Whether this pattern is only a hint.
    pub fn is_hint(&self) -> bool {
        self.hint
    }

    /// The input this pattern reads from `text`, when it matches: the fixed fields, then each
    /// named group that took part in the match (trimmed; an empty group means no match).
    pub fn read(&self, text: &str) -> Option<Map<String, Value>> {
        let caps = self.regex.captures(text)?;
        let mut input = self.input.clone();
        for name in self.regex.capture_names().flatten() {
            if let Some(m) = caps.name(name) {
                let value = m.as_str().trim();
                if value.is_empty() {
                    return None;
                }
                input.insert(name.to_owned(), Value::String(value.to_owned()));
            }
        }
        Some(input)
    }
}

/// Compiles a task's patterns, keeping the first [`PATTERNS_MAX`].
///
/// # Errors
///
/// The first pattern that does not compile, saying why.
pub fn compile(patterns: &[Pattern]) -> Result<Vec<CompiledPattern>, String> {
    patterns
        .iter()
        .take(PATTERNS_MAX)
        .map(CompiledPattern::new)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_groups_and_fixed_fields_make_the_input() {
        let p = CompiledPattern::new(
            &Pattern::new(r"(?i)^uppercase\s+(?P<text>.+?)[.!]*$").with("op", "upper"),
        )
        .expect("compiles");
        assert_eq!(
            Value::Object(p.read("Uppercase  hello world!").expect("matches")),
            json!({"op": "upper", "text": "hello world"})
        );
        assert!(p.read("lowercase hello").is_none());
        assert!(!p.is_hint());
    }

    #[test]
    fn an_empty_group_is_no_match() {
        let p = CompiledPattern::new(&Pattern::new(r"^say (?P<text>\s*)$")).expect("compiles");
        assert!(p.read("say   ").is_none());
    }

    #[test]
    fn bad_and_huge_patterns_are_refused_with_a_reason() {
        let e = CompiledPattern::new(&Pattern::new("(unclosed")).expect_err("bad syntax");
        assert!(e.contains("not a valid expression"), "{e}");
        let e = CompiledPattern::new(&Pattern::new("a".repeat(REGEX_MAX + 1))).expect_err("long");
        assert!(e.contains("limit"), "{e}");
        // Look-around is not in the RE2 subset: refused, as RE2 or Go would.
        assert!(CompiledPattern::new(&Pattern::new("a(?=b)")).is_err());
    }

    #[test]
    fn patterns_read_as_published() {
        let p: Pattern = serde_json::from_value(json!({"regex": "^x$"})).expect("a pattern");
        assert_eq!(p, Pattern::new("^x$"));
        assert_eq!(
            serde_json::to_value(Pattern::new("^x$").with("op", "upper").hint())
                .expect("serialises"),
            json!({"regex": "^x$", "input": {"op": "upper"}, "hint": true})
        );
        let many = vec![Pattern::new("a"); PATTERNS_MAX + 5];
        assert_eq!(compile(&many).expect("compiles").len(), PATTERNS_MAX);
    }
}
