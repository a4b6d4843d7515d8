//! The task catalog: what each task is called, what it does, and what input it takes.
//!
//! Workers publish a [`TaskSpec`] per task to the `<prefix>-catalog` bucket at start; the
//! dispatcher watches the bucket ([`watch`]) so that a new task becomes routable without a
//! restart. The catalog is the single source of truth: nothing is published as a task unless it
//! is in the catalog and its input passes the task's JSON Schema ([`Catalog::check`]).

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch as tokio_watch;
use tokio_util::sync::CancellationToken;

use crate::{
    Error,
    messages::{ErrorInfo, ErrorKind},
    patterns::{self, CompiledPattern, Pattern},
    topology::Fleet,
};

/// One task as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The task's name, such as `text.transform`; also the last tokens of its subject.
    pub name: String,
    /// What the task does, for people and for the LLM.
    pub description: String,
    /// JSON Schema of the task's input.
    pub input_schema: Value,
    /// What the output holds.
    #[serde(default)]
    pub output: String,
    /// A few example requests that route to this task.
    #[serde(default)]
    pub examples: Vec<String>,
    /// Phrasings that certainly (or, as hints, probably) mean this task, with how to read its
    /// input from the text: the dispatcher routes with them before, or without, an LLM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<Pattern>,
    /// When true, only an explicit request (`task` + `input`) may run it; the LLM never picks it.
    #[serde(default)]
    pub explicit_only: bool,
    /// When true, a person approves each request before it runs (`fleet approve`): the
    /// dispatcher parks every request routed to it, by any tier, in `awaiting_approval`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_approval: bool,
    /// How long one attempt may run (`30s`, `5m`) before it counts as a retryable timeout;
    /// `FLEET_TASK_TIMEOUT` where absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// At most this many run at once across the whole fleet: the `max_ack_pending` of the
    /// task's consumer, which the server holds across every worker replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

// === impl TaskSpec ===

impl TaskSpec {
    /// The attempt timeout this entry sets, when it sets a readable one.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
    }
}

/// A validated catalog entry: the spec and its compiled schema.
#[derive(Debug, Clone)]
struct Entry {
    /// What the worker published.
    spec: TaskSpec,
    /// The compiled input schema.
    validator: jsonschema::Validator,
    /// The compiled routing patterns.
    patterns: Vec<CompiledPattern>,
}

/// What one pattern of the catalog read from a request.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternMatch<'a> {
    /// The task whose pattern matched.
    pub task: &'a str,
    /// Which of its patterns (0-based).
    pub index: usize,
    /// Whether that pattern is only a hint.
    pub hint: bool,
    /// The input it read, valid against the task's schema.
    pub input: Value,
}

/// The tasks the fleet can run, with compiled input schemas.
///
/// Cheap to clone (entries are shared), so readers take a snapshot ([`snapshot`]) and keep it
/// across awaits while the watcher swaps in the next version.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    /// Tasks by name.
    tasks: BTreeMap<String, Arc<Entry>>,
    /// Bumped on every change, so caches keyed on it go stale with the catalog.
    version: u64,
    /// When a task last came or went (None: never).
    changed_at: Option<std::time::Instant>,
}

/// A catalog shared between the watcher (which swaps in new versions) and its readers.
pub type SharedCatalog = Arc<RwLock<Arc<Catalog>>>;

/// The current version of a shared catalog.
pub fn snapshot(shared: &SharedCatalog) -> Arc<Catalog> {
    match shared.read() {
        Ok(g) => g.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

// === impl Catalog ===

impl Catalog {
    /// Adds or replaces a task.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the task's input schema is not a valid JSON Schema.
    pub fn insert(&mut self, spec: TaskSpec) -> Result<(), Error> {
        if let Some(t) = &spec.timeout
            && spec.attempt_timeout().is_none()
        {
            return Err(Error::Config(format!(
                "task `{}` has a timeout `{t}` that is not a duration such as `30s`",
                spec.name
            )));
        }
        if self.get(&spec.name) == Some(&spec) {
            // A restarted worker publishes the same spec again: nothing changed.
            return Ok(());
        }
        let validator = jsonschema::validator_for(&spec.input_schema).map_err(|e| {
            Error::Config(format!(
                "task {} has an invalid input schema: {e}",
                spec.name
            ))
        })?;
        let patterns = patterns::compile(&spec.patterns)
            .map_err(|e| Error::Config(format!("task {}: {e}", spec.name)))?;
        self.tasks.insert(
            spec.name.clone(),
            Arc::new(Entry {
                spec,
                validator,
                patterns,
            }),
        );
        self.version += 1;
        self.changed_at = Some(std::time::Instant::now());
        Ok(())
    }

    /// Removes a task.
    pub fn remove(&mut self, name: &str) {
        if self.tasks.remove(name).is_some() {
            self.version += 1;
            self.changed_at = Some(std::time::Instant::now());
        }
    }

    /// A task's spec.
    pub fn get(&self, name: &str) -> Option<&TaskSpec> {
        self.tasks.get(name).map(|e| &e.spec)
    }

    /// Every task, by name.
    pub fn specs(&self) -> impl Iterator<Item = &TaskSpec> {
        self.tasks.values().map(|e| &e.spec)
    }

    /// Whether no task is known.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// How long since a task last came or went (`None`: never).
    pub fn since_change(&self) -> Option<Duration> {
        self.changed_at.map(|t| t.elapsed())
    }

    /// Changes with every insert or removal.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every pattern match of `text`, in catalog order (tasks by name, then each task's
    /// patterns in order), of tasks routing may pick (not `explicit_only`), whose input passes
    /// the task's schema.
    pub fn pattern_matches(&self, text: &str) -> Vec<PatternMatch<'_>> {
        let text = text.trim();
        let mut found = Vec::new();
        for (name, entry) in &self.tasks {
            if entry.spec.explicit_only {
                continue;
            }
            for (index, pattern) in entry.patterns.iter().enumerate() {
                let Some(input) = pattern.read(text) else {
                    continue;
                };
                let input = Value::Object(input);
                if entry.validator.is_valid(&input) {
                    found.push(PatternMatch {
                        task: name,
                        index,
                        hint: pattern.is_hint(),
                        input,
                    });
                }
            }
        }
        found
    }

    /// The match that decides `text` by itself: the first certain (not hint) match, when every
    /// certain match agrees with it on the task and the input; `None` when there is none or
    /// they disagree.
    pub fn certain_match(&self, text: &str) -> Option<PatternMatch<'_>> {
        let mut sure = self.pattern_matches(text).into_iter().filter(|m| !m.hint);
        let first = sure.next()?;
        sure.all(|m| m.task == first.task && m.input == first.input)
            .then_some(first)
    }

    /// Checks that `task` is in the catalog and `input` passes its schema.
    ///
    /// # Errors
    ///
    /// An [`ErrorInfo`] of kind `unknown_task` (naming the known tasks) or `invalid_input`
    /// (naming each failing field), ready to go into a `rejected` result.
    pub fn check(&self, task: &str, input: &Value) -> Result<(), ErrorInfo> {
        let Some(entry) = self.tasks.get(task) else {
            let known: Vec<&str> = self.tasks.keys().map(String::as_str).collect();
            return Err(ErrorInfo::new(
                ErrorKind::UnknownTask,
                format!(
                    "there is no task `{task}`; the catalog has: {}. Check the name, or start a worker that runs it.",
                    if known.is_empty() {
                        "no tasks yet".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        let problems: Vec<String> = entry
            .validator
            .iter_errors(input)
            .take(5)
            .map(|e| {
                let path = e.instance_path().to_string();
                if path.is_empty() {
                    e.to_string()
                } else {
                    format!("{path}: {e}")
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ErrorInfo::new(
                ErrorKind::InvalidInput,
                format!(
                    "the input of `{task}` does not match its schema: {}. Run `fleet catalog` to see the schema.",
                    problems.join("; ")
                ),
            ))
        }
    }
}

// === impl Fleet ===

impl Fleet {
    /// Publishes (or replaces) a task's spec in the catalog bucket.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the bucket refuses the write.
    pub async fn publish_task_spec(&self, spec: &TaskSpec) -> Result<(), Error> {
        let body = serde_json::to_vec(spec).map_err(|source| Error::Decode {
            what: "task spec",
            source,
        })?;
        self.catalog
            .put(&spec.name, body.into())
            .await
            .map_err(|e| Error::js("publish catalog entry", e))?;
        Ok(())
    }

    /// Reads the whole catalog once.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the bucket cannot be read.
    pub async fn read_catalog(&self) -> Result<Vec<TaskSpec>, Error> {
        let mut keys = self
            .catalog
            .keys()
            .await
            .map_err(|e| Error::js("list catalog", e))?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            names.push(key.map_err(|e| Error::js("list catalog", e))?);
        }
        let mut specs = Vec::new();
        for name in names {
            if let Some(bytes) = self
                .catalog
                .get(&name)
                .await
                .map_err(|e| Error::js("read catalog", e))?
            {
                match serde_json::from_slice::<TaskSpec>(&bytes) {
                    Ok(spec) => specs.push(spec),
                    Err(e) => tracing::warn!(task = %name, error = %e, "unreadable catalog entry"),
                }
            }
        }
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(specs)
    }
}

/// Keeps `catalog` equal to the catalog bucket until `stop` is cancelled.
///
/// `loaded` turns true once the bucket's current content has been read, so a caller can wait for
/// the first full view. The watch is re-opened whenever it ends (a NATS restart, say).
pub async fn watch(
    fleet: Fleet,
    catalog: SharedCatalog,
    loaded: tokio_watch::Sender<bool>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let mut entries = match fleet.catalog.watch_with_history(">").await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the catalog, retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        // An empty bucket delivers nothing: the view is complete at once.
        if fleet
            .catalog
            .status()
            .await
            .map(|s| s.values())
            .unwrap_or(1)
            == 0
        {
            loaded.send_replace(true);
        }
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = entries.next() => next,
            };
            let Some(Ok(entry)) = next else { break };
            let mut next = (*snapshot(&catalog)).clone();
            match entry.operation {
                async_nats::jetstream::kv::Operation::Put => {
                    match serde_json::from_slice::<TaskSpec>(&entry.value)
                        .map_err(|e| Error::Config(format!("unreadable catalog entry: {e}")))
                        .and_then(|spec| next.insert(spec))
                    {
                        Ok(()) => tracing::info!(task = %entry.key, "task in catalog"),
                        Err(e) => {
                            tracing::warn!(task = %entry.key, error = %e, "catalog entry ignored")
                        }
                    }
                }
                _ => {
                    next.remove(&entry.key);
                    tracing::info!(task = %entry.key, "task left the catalog");
                }
            }
            match catalog.write() {
                Ok(mut g) => *g = Arc::new(next),
                Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
            }
            if entry.delta == 0 {
                loaded.send_replace(true);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> TaskSpec {
        TaskSpec {
            name: "text.transform".into(),
            description: "change text".into(),
            input_schema: json!({
                "type": "object",
                "properties": {"text": {"type": "string"}, "op": {"enum": ["upper", "lower"]}},
                "required": ["text", "op"],
                "additionalProperties": false
            }),
            output: String::new(),
            examples: vec![],
            patterns: vec![],
            timeout: None,
            explicit_only: false,
            requires_approval: false,
            max_concurrency: None,
        }
    }

    #[test]
    fn patterns_match_in_catalog_order_and_only_with_valid_input() {
        let mut c = Catalog::default();
        let mut s = spec();
        s.patterns = vec![
            Pattern::new(r"(?i)^shout (?P<text>.+)$").with("op", "upper"),
            Pattern::new(r"(?i)^whisper (?P<text>.+)$")
                .with("op", "lower")
                .hint(),
            // Its input fails the schema (an op the task does not have): never a match.
            Pattern::new(r"(?i)^mumble (?P<text>.+)$").with("op", "sideways"),
        ];
        c.insert(s).expect("valid spec");
        let m = c.pattern_matches("  shout hello ");
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].task, m[0].index, m[0].hint),
            ("text.transform", 0, false)
        );
        assert_eq!(m[0].input, json!({"text": "hello", "op": "upper"}));
        assert!(c.pattern_matches("whisper HI")[0].hint);
        assert!(c.pattern_matches("mumble hi").is_empty());

        let mut bad = spec();
        bad.name = "bad".into();
        bad.patterns = vec![Pattern::new("(")];
        let e = c.insert(bad).expect_err("a pattern that does not compile");
        assert!(e.to_string().contains("bad"), "{e}");
    }

    #[test]
    fn check_names_the_problem() {
        let mut c = Catalog::default();
        c.insert(spec()).expect("valid schema");
        assert!(
            c.check("text.transform", &json!({"text": "a", "op": "upper"}))
                .is_ok()
        );
        let e = c
            .check("text.transform", &json!({"text": "a", "op": "sideways"}))
            .expect_err("bad op");
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        assert!(e.message.contains("/op"), "{}", e.message);
        let e = c.check("nope", &json!({})).expect_err("unknown");
        assert_eq!(e.kind, ErrorKind::UnknownTask);
        assert!(e.message.contains("text.transform"));
    }
}
