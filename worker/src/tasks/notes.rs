//! `note.append`: appends a line to a named note, a Markdown file in `FLEET_NOTES_DIR`.
//!
//! The built-in example of a task that **requires approval**: it changes something outside the
//! fleet (a file that people read), so a person approves each request before it runs
//! (`fleet approve ID`), whichever routing tier picked it; the LLM can neither approve nor skip
//! that. The note's name is one path segment (letters, digits, `-`, `_`), checked by the
//! schema, so no input reaches another file.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use fleet_common::patterns::Pattern;

use super::Task;
use crate::error::TaskError;

/// The input of `note.append`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The note's name, such as `standup` (the file `standup.md`).
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,64}$"))]
    pub note: String,
    /// The line to append.
    #[schemars(length(min = 1, max = 4000))]
    pub text: String,
}

/// Appends a line to a note file; each request waits for a person's approval.
#[derive(Debug, Clone)]
pub struct NoteAppend {
    /// Where the notes are (`FLEET_NOTES_DIR`).
    dir: PathBuf,
}

// === impl NoteAppend ===

impl NoteAppend {
    /// Notes in `dir` (created on the first write).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

impl Task for NoteAppend {
    type Input = Input;
    const NAME: &'static str = "note.append";
    const DESCRIPTION: &'static str = "Append a line of text to a named note (a file people read). Each request needs a person's approval before it runs.";
    const OUTPUT: &'static str = "{ \"note\": the note's name, \"file\": its path, \"bytes\": the note's size after the write }";
    const EXAMPLES: &'static [&'static str] = &[
        "Add 'deploy finished' to the standup note",
        "Append 'call the vendor' to my todo note",
    ];
    const REQUIRES_APPROVAL: bool = true;

    /// "Add 'deploy finished' to the standup note": routed without an LLM, and parked for
    /// approval all the same (approval is the catalog's policy, not the router's).
    fn patterns() -> Vec<Pattern> {
        vec![Pattern::new(
            r#"(?i)^(?:please\s+)?(?:add|append|write)\s+['"](?P<text>[^'"]+)['"]\s+to\s+(?:the\s+|my\s+)?(?P<note>[A-Za-z0-9_-]{1,64})\s+note\.?$"#,
        )]
    }

    async fn run(&self, input: Input) -> Result<Value, TaskError> {
        let valid = !input.note.is_empty()
            && input
                .note
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(TaskError::abort(
                "the note's name must be letters, digits, `-` or `_`",
            ));
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| TaskError::retry(format!("cannot create the notes directory: {e}")))?;
        let path = self.dir.join(format!("{}.md", input.note));
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| TaskError::retry(format!("cannot open the note: {e}")))?;
        let line = format!("{}\n", input.text.replace('\n', " "));
        file.write_all(line.as_bytes())
            .await
            .map_err(|e| TaskError::retry(format!("cannot write the note: {e}")))?;
        file.flush()
            .await
            .map_err(|e| TaskError::retry(format!("cannot write the note: {e}")))?;
        let bytes = file.metadata().await.map(|m| m.len()).unwrap_or_default();
        Ok(json!({
            "note": input.note,
            "file": path.display().to_string(),
            "bytes": bytes,
        }))
    }
}
