//! The tasks a worker can run, and the one place they are registered.
//!
//! A task is one Rust type implementing [`Task`]: a name, a description, an input type whose
//! JSON Schema is derived with schemars, and an async `run`. [`builtin`] registers them; the
//! worker publishes each one's [`TaskSpec`] to the catalog, so the dispatcher can route to it.

mod chat;
mod github;
mod notes;
#[cfg(test)]
mod routing_tests;
mod text;

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use fleet_common::{
    catalog::{Catalog, TaskSpec},
    llm::Llm,
    messages::ErrorKind,
    patterns::Pattern,
};
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use self::{chat::Chat, github::GithubRepoInfo, notes::NoteAppend, text::TextTransform};
use crate::{config::Config, error::TaskError};

/// One kind of work.
pub trait Task: Send + Sync + 'static {
    /// The input; its JSON Schema is the catalog's `input_schema`.
    type Input: DeserializeOwned + JsonSchema + Send;

    /// The task's name, such as `text.transform`.
    const NAME: &'static str;
    /// What it does, for people and the LLM.
    const DESCRIPTION: &'static str;
    /// What its output holds.
    const OUTPUT: &'static str;
    /// Example requests that should route to it.
    const EXAMPLES: &'static [&'static str] = &[];
    /// Whether only explicit requests may run it.
    const EXPLICIT_ONLY: bool = false;
    /// How long one attempt may run (`30s`); `FLEET_TASK_TIMEOUT` when `None`.
    const TIMEOUT: Option<&'static str> = None;
    /// Whether a person approves each request before it runs (`fleet approve`).
    const REQUIRES_APPROVAL: bool = false;
    /// At most this many run at once across the fleet (`FLEET_TASK_MAX_CONCURRENCY` overrides
    /// it); `None`: no limit but each worker's `FLEET_CONCURRENCY`.
    const MAX_CONCURRENCY: Option<u32> = None;

    /// Phrasings that certainly mean this task, with named groups that fill its input: the
    /// dispatcher routes with them without asking an LLM (see `fleet_common::patterns`).
    fn patterns() -> Vec<Pattern> {
        Vec::new()
    }

    /// Runs the task.
    fn run(&self, input: Self::Input) -> impl Future<Output = Result<Value, TaskError>> + Send;
}

/// A task with its types erased, so different tasks share one registry.
pub trait DynTask: Send + Sync {
    /// The catalog entry.
    fn spec(&self) -> TaskSpec;
    /// Decodes the input and runs the task.
    fn call(&self, input: Value) -> BoxFuture<'_, Result<Value, TaskError>>;
}

impl<T: Task> DynTask for T {
    fn spec(&self) -> TaskSpec {
        let schema = schemars::schema_for!(T::Input);
        TaskSpec {
            name: T::NAME.to_owned(),
            description: T::DESCRIPTION.to_owned(),
            input_schema: serde_json::to_value(&schema).unwrap_or(Value::Null),
            output: T::OUTPUT.to_owned(),
            examples: T::EXAMPLES.iter().map(|s| (*s).to_owned()).collect(),
            patterns: T::patterns(),
            explicit_only: T::EXPLICIT_ONLY,
            timeout: T::TIMEOUT.map(str::to_owned),
            requires_approval: T::REQUIRES_APPROVAL,
            max_concurrency: T::MAX_CONCURRENCY,
        }
    }

    fn call(&self, input: Value) -> BoxFuture<'_, Result<Value, TaskError>> {
        Box::pin(async move {
            let input: T::Input = serde_json::from_value(input).map_err(|e| TaskError::Abort {
                kind: ErrorKind::InvalidInput,
                message: format!("the input of `{}` cannot be read: {e}", T::NAME),
            })?;
            self.run(input).await
        })
    }
}

tokio::task_local! {
    /// The running task's cancellation signal (see [`cancellation`]).
    static CANCEL: tokio_util::sync::CancellationToken;
}

/// The cancellation signal of the task running on this Tokio task: cancelled when its request
/// is cancelled (`fleet cancel`) or its deadline passes. A task needs nothing to stop: the
/// worker drops its future at that moment (an HTTP call in flight is aborted). A task that
/// must clean up first can watch this signal; outside a task it is never cancelled.
pub fn cancellation() -> tokio_util::sync::CancellationToken {
    CANCEL.try_with(Clone::clone).unwrap_or_default()
}

/// Runs `work` with `token` as its [`cancellation`] signal.
pub(crate) async fn with_cancellation<F: Future>(
    token: tokio_util::sync::CancellationToken,
    work: F,
) -> F::Output {
    CANCEL.scope(token, work).await
}

/// How long one attempt may run, per task.
#[derive(Debug, Clone, Default)]
pub struct Timeouts {
    /// `FLEET_TASK_TIMEOUT`.
    pub default: Duration,
    /// Tasks whose catalog entry sets its own.
    pub per_task: BTreeMap<String, Duration>,
}

// === impl Timeouts ===

impl Timeouts {
    /// The limit of one attempt of `task`.
    pub fn of(&self, task: &str) -> Duration {
        self.per_task.get(task).copied().unwrap_or(self.default)
    }
}

/// The tasks of one worker, by name.
#[derive(Clone, Default)]
pub struct Registry {
    /// Tasks by name.
    tasks: BTreeMap<String, Arc<dyn DynTask>>,
}

// === impl Registry ===

impl Registry {
    /// Adds a task.
    pub fn register<T: Task>(&mut self, task: T) {
        self.tasks.insert(T::NAME.to_owned(), Arc::new(task));
    }

    /// A task by name.
    pub fn get(&self, name: &str) -> Option<Arc<dyn DynTask>> {
        self.tasks.get(name).cloned()
    }

    /// The catalog of these tasks, with their input schemas compiled: the worker checks every
    /// input against it before running (the dispatcher did too; whoever else can publish on
    /// `fleet.tasks.*` did not).
    pub fn catalog(&self) -> Catalog {
        let mut catalog = Catalog::default();
        for task in self.tasks.values() {
            // The worker checks inputs only: its patterns are for the dispatcher, and compiled
            // they would cost this process megabytes it never uses.
            let mut spec = task.spec();
            spec.patterns.clear();
            if let Err(e) = catalog.insert(spec) {
                tracing::warn!(error = %e, "a task's schema does not compile; its inputs are not checked");
            }
        }
        catalog
    }

    /// How long one attempt of each task may run: its catalog `timeout`, else `default`.
    pub fn timeouts(&self, default: Duration) -> Timeouts {
        let per_task = self
            .tasks
            .iter()
            .filter_map(|(name, task)| task.spec().attempt_timeout().map(|t| (name.clone(), t)))
            .collect();
        Timeouts { default, per_task }
    }

    /// Every task's name.
    pub fn names(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }

    /// Keeps only the tasks named in `keep` (all when it is empty).
    ///
    /// # Errors
    ///
    /// The first name that is not a task, with the names that are.
    pub fn only(mut self, keep: &[String]) -> Result<Self, (String, String)> {
        if keep.is_empty() {
            return Ok(self);
        }
        let keep: Vec<String> = keep
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(missing) = keep.iter().find(|k| !self.tasks.contains_key(*k)) {
            return Err((missing.clone(), self.names().join(", ")));
        }
        self.tasks.retain(|name, _| keep.contains(name));
        Ok(self)
    }
}

/// The built-in tasks: the one place a task is registered.
pub fn builtin(config: &Config, http: reqwest::Client) -> Registry {
    let mut registry = Registry::default();
    registry.register(GithubRepoInfo::new(
        http,
        &config.github_api_url,
        config.github_token.clone(),
    ));
    registry.register(TextTransform);
    registry.register(Chat::new(Llm::from_args(&config.llm)));
    registry.register(NoteAppend::new(config.notes_dir()));
    registry
}

#[cfg(test)]
mod timeout_tests {
    use super::*;

    #[test]
    fn a_task_without_its_own_timeout_gets_the_default() {
        let timeouts = Timeouts {
            default: Duration::from_secs(300),
            per_task: [("slow".to_owned(), Duration::from_secs(30))]
                .into_iter()
                .collect(),
        };
        assert_eq!(timeouts.of("slow"), Duration::from_secs(30));
        assert_eq!(timeouts.of("other"), Duration::from_secs(300));
    }
}
