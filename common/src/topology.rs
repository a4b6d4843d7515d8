//! Subjects, streams, buckets and consumers of one fleet, and their idempotent creation.
//!
//! Every name derives from the prefix (`FLEET_PREFIX`), so several fleets share one NATS account:
//! subjects start with `<prefix>.`, streams are `<PREFIX>_REQUESTS` and so on (prefix upper-cased,
//! `-` turned into `_`), buckets are `<prefix>-status` and `<prefix>-catalog`.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, pull},
    kv,
    stream::{self, RetentionPolicy, StorageType},
};

use crate::{
    Error,
    config::{ManageArgs, NatsArgs},
    priority::Priority,
};

/// The JetStream duplicate window used for `Nats-Msg-Id` deduplication of requests and tasks.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The most requests the dispatchers' consumer keeps unacknowledged: those being routed plus
/// every request waiting (`scheduled`, `awaiting_approval`), whose message is handed back with
/// a delay and stays pending meanwhile. Past it, new requests wait until one is done.
pub const DISPATCHER_MAX_ACK_PENDING: i64 = 200_000;

/// The most the requests and the tasks streams each hold. Past it, new messages are refused
/// (the publisher gets an error: a client sees its publish fail, the dispatcher retries later)
/// rather than waiting work being dropped; they have no age limit, so no waiting work expires
/// unseen.
pub const WORK_STREAM_MAX_BYTES: i64 = 256 << 20;
/// The most the results stream holds; past it the oldest results go (their ids can then be
/// used again). The age limit is `FLEET_RESULT_TTL`.
pub const RESULTS_MAX_BYTES: i64 = 512 << 20;
/// How long dead letters are kept.
pub const DLQ_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most the dead-letter queue holds; past it the oldest dead letters go.
pub const DLQ_MAX_BYTES: i64 = 128 << 20;

/// The names of one fleet's subjects, streams, buckets and consumers.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The subject prefix, such as `fleet`.
    prefix: String,
    /// The stream prefix, such as `FLEET`.
    stream_prefix: String,
}

// === impl Topology ===

impl Topology {
    /// Names for a prefix that has been checked by [`crate::config::parse_prefix`].
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            stream_prefix: prefix.to_uppercase().replace('-', "_"),
        }
    }

    /// The subject prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.requests`: where clients publish requests.
    pub fn requests_subject(&self) -> String {
        format!("{}.requests", self.prefix)
    }

    /// `<prefix>.tasks.<task>`: where the dispatcher publishes a task.
    pub fn task_subject(&self, task: &str) -> String {
        format!("{}.tasks.{task}", self.prefix)
    }

    /// Where `task`'s tasks of `priority` wait: `<prefix>.tasks.<task>` for normal (the plain
    /// subject of the wire contract), `<prefix>.tasks-high.<task>` and
    /// `<prefix>.tasks-low.<task>` for the others. The priority is a token of its own before
    /// the task's name, so no task name (they contain dots) can be read two ways.
    pub fn task_subject_at(&self, task: &str, priority: Priority) -> String {
        match priority {
            Priority::Normal => self.task_subject(task),
            other => format!("{}.tasks-{other}.{task}", self.prefix),
        }
    }

    /// The subjects the tasks stream holds: `<prefix>.tasks-high.>`, `<prefix>.tasks.>`,
    /// `<prefix>.tasks-low.>`.
    pub fn task_wildcards(&self) -> Vec<String> {
        Priority::ALL
            .into_iter()
            .map(|p| self.task_subject_at(">", p))
            .collect()
    }

    /// The task and priority of a subject of [`Self::task_subject_at`], or `None` for a
    /// subject that is not a task's.
    pub fn task_of_subject<'a>(&self, subject: &'a str) -> Option<(&'a str, Priority)> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?;
        let (head, task) = rest.split_once('.')?;
        let priority = match head {
            "tasks" => Priority::Normal,
            "tasks-high" => Priority::High,
            "tasks-low" => Priority::Low,
            _ => return None,
        };
        (!task.is_empty()).then_some((task, priority))
    }

    /// `<prefix>.results.<id>`: the one final result of a request.
    pub fn result_subject(&self, request_id: &str) -> String {
        format!("{}.results.{request_id}", self.prefix)
    }

    /// `<prefix>.results.{request_id}`: the template of [`Self::result_subject`], which names
    /// the result's span (one span name for all requests, the real subject as an attribute).
    pub fn result_subject_template(&self) -> String {
        format!("{}.results.{{request_id}}", self.prefix)
    }

    /// `<prefix>.cancel.<id>`: core NATS notice that a request was cancelled, so the worker
    /// running it stops (the `cancelled` result is stored before it is sent).
    pub fn cancel_subject(&self, request_id: &str) -> String {
        format!("{}.cancel.{request_id}", self.prefix)
    }

    /// `<prefix>.cancel.*`: what workers subscribe to for cancellation notices.
    pub fn cancel_wildcard(&self) -> String {
        format!("{}.cancel.*", self.prefix)
    }

    /// `<prefix>.dlq.<task>`: dead letters of a task (`unreadable` for unreadable requests).
    pub fn dlq_subject(&self, task: &str) -> String {
        format!("{}.dlq.{task}", self.prefix)
    }

    /// The subject prefix of dead letters, `<prefix>.dlq.`.
    pub fn dlq_prefix(&self) -> String {
        format!("{}.dlq.", self.prefix)
    }

    /// `<PREFIX>_REQUESTS`.
    pub fn requests_stream(&self) -> String {
        format!("{}_REQUESTS", self.stream_prefix)
    }

    /// `<PREFIX>_TASKS`.
    pub fn tasks_stream(&self) -> String {
        format!("{}_TASKS", self.stream_prefix)
    }

    /// `<PREFIX>_RESULTS`.
    pub fn results_stream(&self) -> String {
        format!("{}_RESULTS", self.stream_prefix)
    }

    /// `<PREFIX>_DLQ`.
    pub fn dlq_stream(&self) -> String {
        format!("{}_DLQ", self.stream_prefix)
    }

    /// `<prefix>-status`: each request's current state.
    pub fn status_bucket(&self) -> String {
        format!("{}-status", self.prefix)
    }

    /// `<prefix>-catalog`: the tasks the workers run.
    pub fn catalog_bucket(&self) -> String {
        format!("{}-catalog", self.prefix)
    }

    /// The durable consumer all dispatchers share.
    pub fn dispatcher_consumer(&self) -> &'static str {
        "dispatcher"
    }

    /// The durable consumer all workers of one task share: `worker-<task>` with `.` as `_`.
    pub fn worker_consumer(&self, task: &str) -> String {
        format!("worker-{}", task.replace('.', "_"))
    }

    /// The durable consumer of `task`'s tasks of `priority`: [`Self::worker_consumer`] for
    /// normal, `high-worker-<task>` and `low-worker-<task>` for the others (no task's own
    /// consumer starts with them).
    pub fn worker_consumer_at(&self, task: &str, priority: Priority) -> String {
        match priority {
            Priority::Normal => self.worker_consumer(task),
            other => format!("{other}-{}", self.worker_consumer(task)),
        }
    }

    /// The settings of [`Self::dispatcher_consumer`] on the requests stream, the same whether a
    /// dispatcher or `fleet setup` creates it.
    pub fn dispatcher_consumer_config(&self, ack_wait: Duration) -> pull::Config {
        pull::Config {
            durable_name: Some(self.dispatcher_consumer().to_owned()),
            description: Some("shared by every dispatcher".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            max_deliver: -1,
            // A request waiting for its time or for approval is a message handed back with a
            // delay (see `lifecycle::timing`), and stays unacknowledged meanwhile: the server's
            // default (1000) would let 1000 waiting requests stop all others.
            max_ack_pending: DISPATCHER_MAX_ACK_PENDING,
            ..Default::default()
        }
    }

    /// The settings of [`Self::worker_consumer`] of `task` on the tasks stream, the same
    /// whether a worker or `fleet setup` creates it.
    pub fn worker_consumer_config(&self, task: &str, ack_wait: Duration) -> pull::Config {
        self.lane_consumer_config(task, Priority::Normal, ack_wait, None)
    }

    /// The settings of [`Self::worker_consumer_at`] of `task` and `priority`, the same whether
    /// a worker or `fleet setup` creates it.
    ///
    /// `max_concurrency` (the catalog's) becomes the consumer's `max_ack_pending`: the server
    /// then hands out at most that many of its messages at once across every worker replica,
    /// which is the fleet-wide limit. The dispatcher puts every task of a limited task on its
    /// normal subject (see `Fleet::publish_task`), so that one consumer holds the limit in
    /// total; the high and low consumers get the same cap only to bound what was queued there
    /// before the limit was set.
    pub fn lane_consumer_config(
        &self,
        task: &str,
        priority: Priority,
        ack_wait: Duration,
        max_concurrency: Option<u32>,
    ) -> pull::Config {
        pull::Config {
            durable_name: Some(self.worker_consumer_at(task, priority)),
            description: Some(match priority {
                Priority::Normal => format!("shared by every worker running {task}"),
                other => format!("shared by every worker running {task}, {other} priority"),
            }),
            filter_subject: self.task_subject_at(task, priority),
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            // The worker counts attempts itself (in the status record) and moves the last one
            // to the DLQ, so the server must keep redelivering.
            max_deliver: -1,
            // Unset (0): the server's default (1000 pending per consumer).
            max_ack_pending: max_concurrency.map_or(0, |n| i64::from(n.max(1))),
            ..Default::default()
        }
    }
}

/// One fleet on one NATS connection: its names, JetStream context, and buckets.
///
/// Cheap to clone; every process builds one at start with [`Fleet::setup`].
#[derive(Clone, Debug)]
pub struct Fleet {
    /// The connection, for plain subscriptions.
    pub(crate) client: async_nats::Client,
    /// The JetStream context every publish goes through.
    pub(crate) js: jetstream::Context,
    /// The names.
    pub(crate) topology: Topology,
    /// `<prefix>-status`.
    pub(crate) status: kv::Store,
    /// `<prefix>-catalog`.
    pub(crate) catalog: kv::Store,
    /// Whether this process may create and update streams and consumers
    /// (`FLEET_MANAGE_STREAMS`); without it, [`Fleet::durable_pull`] only looks consumers up.
    pub(crate) manage: bool,
}

// === impl Fleet ===

impl Fleet {
    /// The fleet's names.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Makes sure everything published so far has left the client's buffer.
    pub async fn flush(&self) {
        if let Err(e) = self.client.flush().await {
            tracing::debug!(error = %e, "flush failed");
        }
    }

    /// Creates or updates the fleet's streams and buckets, then returns the handle.
    ///
    /// Whichever process starts first creates them; the others find them. Concurrent creation
    /// is retried, so a whole fleet can start at once. Only features of nats-server 2.9 are used.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when JetStream is not enabled or refuses the configuration.
    pub async fn setup(client: async_nats::Client, args: &NatsArgs) -> Result<Self, Error> {
        let topology = Topology::new(&args.prefix);
        let js = jetstream::new(client.clone());
        let replicas = args.stream_replicas.max(1);
        let ttl = args.result_ttl;
        let dup = DUPLICATE_WINDOW.min(ttl);

        let streams = [
            stream::Config {
                name: topology.requests_stream(),
                description: Some("fleet requests, consumed by the dispatchers".into()),
                subjects: vec![topology.requests_subject()],
                retention: RetentionPolicy::WorkQueue,
                duplicate_window: dup,
                max_bytes: WORK_STREAM_MAX_BYTES,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            },
            stream::Config {
                name: topology.tasks_stream(),
                description: Some("fleet tasks, one durable consumer per task".into()),
                subjects: topology.task_wildcards(),
                retention: RetentionPolicy::WorkQueue,
                duplicate_window: dup,
                max_bytes: WORK_STREAM_MAX_BYTES,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            },
            stream::Config {
                name: topology.results_stream(),
                description: Some("exactly one final result per request".into()),
                subjects: vec![format!("{}.results.>", topology.prefix())],
                max_age: ttl,
                max_bytes: RESULTS_MAX_BYTES,
                duplicate_window: dup,
                allow_direct: true,
                ..Default::default()
            },
            stream::Config {
                name: topology.dlq_stream(),
                description: Some("dead letters: exhausted tasks and unreadable requests".into()),
                subjects: vec![format!("{}.dlq.>", topology.prefix())],
                max_age: DLQ_MAX_AGE,
                max_bytes: DLQ_MAX_BYTES,
                allow_direct: true,
                ..Default::default()
            },
        ];
        for mut config in streams {
            config.storage = StorageType::File;
            config.num_replicas = replicas;
            let name = config.name.clone();
            retry_setup(&format!("create stream {name}"), || {
                let js = js.clone();
                let config = config.clone();
                async move { js.create_or_update_stream(config).await.map(|_| ()) }
            })
            .await?;
        }

        let status = bucket(
            &js,
            kv::Config {
                bucket: topology.status_bucket(),
                description: "each request's current state".into(),
                history: 1,
                // Status records outlive the result they describe: the terminal state is
                // written after the result, so a duplicate id is recognised while either exists.
                max_age: ttl,
                storage: StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        let catalog = bucket(
            &js,
            kv::Config {
                bucket: topology.catalog_bucket(),
                description: "the tasks the workers run".into(),
                history: 1,
                storage: StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;

        // `server.address` and `server.port` of the messaging spans.
        crate::telemetry::remember_server(&client).await;
        Ok(Self {
            client,
            js,
            topology,
            status,
            catalog,
            manage: true,
        })
    }

    /// Opens the fleet for a dispatcher or worker: [`Fleet::setup`] when it may manage streams
    /// (`FLEET_MANAGE_STREAMS`, true by default), else [`Fleet::existing`].
    ///
    /// # Errors
    ///
    /// As [`Fleet::setup`] or [`Fleet::existing`].
    pub async fn open(
        client: async_nats::Client,
        args: &NatsArgs,
        manage: &ManageArgs,
    ) -> Result<Self, Error> {
        if manage.manage_streams {
            Self::setup(client, args).await
        } else {
            Self::existing(client, args).await
        }
    }

    /// Opens a fleet that `fleet setup` made, creating and changing nothing: for a dispatcher
    /// or worker whose NATS user has no stream-admin rights (`FLEET_MANAGE_STREAMS=false`).
    /// Its [`Fleet::durable_pull`] then only looks consumers up.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] naming `fleet setup` when a stream or bucket does not exist, or the
    /// server's answer when they cannot be looked up.
    pub async fn existing(client: async_nats::Client, args: &NatsArgs) -> Result<Self, Error> {
        let topology = Topology::new(&args.prefix);
        let js = jetstream::new(client.clone());
        for name in [
            topology.requests_stream(),
            topology.tasks_stream(),
            topology.results_stream(),
            topology.dlq_stream(),
        ] {
            look_up(
                &format!("find stream {name}"),
                &format!("stream {name}"),
                || js.get_stream(&name),
            )
            .await?;
        }
        let open = |bucket: String| {
            let js = js.clone();
            async move {
                let op = format!("open bucket {bucket}");
                let what = format!("bucket {bucket}");
                look_up(&op, &what, || js.get_key_value(bucket.clone())).await
            }
        };
        let status = open(topology.status_bucket()).await?;
        let catalog = open(topology.catalog_bucket()).await?;
        crate::telemetry::remember_server(&client).await;
        Ok(Self {
            client,
            js,
            topology,
            status,
            catalog,
            manage: false,
        })
    }

    /// Creates or updates the durable consumers of the dispatchers and of the workers of
    /// `tasks` with `ack_wait`, as `fleet setup` does; returns `(stream, consumer)` pairs.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a task name cannot be part of a subject; [`Error::JetStream`]
    /// when the server refuses a consumer (an existing one with settings it cannot change).
    pub async fn setup_consumers(
        &self,
        tasks: &[String],
        ack_wait: Duration,
    ) -> Result<Vec<(String, String)>, Error> {
        if let Some(bad) = tasks.iter().find(|t| !is_task_name(t)) {
            return Err(Error::Config(format!(
                "`{bad}` is not a task name: use letters, digits, `_`, `-` and single dots"
            )));
        }
        let t = &self.topology;
        let mut wanted = vec![(t.requests_stream(), t.dispatcher_consumer_config(ack_wait))];
        // A task's `max_concurrency` is its catalog entry's, when a worker has published one.
        let limits: std::collections::BTreeMap<String, Option<u32>> = self
            .read_catalog()
            .await?
            .into_iter()
            .map(|spec| (spec.name, spec.max_concurrency))
            .collect();
        for task in tasks {
            let limit = limits.get(task).copied().flatten();
            for priority in Priority::ALL {
                wanted.push((
                    t.tasks_stream(),
                    t.lane_consumer_config(task, priority, ack_wait, limit),
                ));
            }
        }
        let mut made = Vec::new();
        for (stream, config) in wanted {
            let name = config.durable_name.clone().unwrap_or_default();
            retry_setup(&format!("create consumer {name} on {stream}"), || {
                self.js
                    .create_consumer_on_stream(config.clone(), stream.clone())
            })
            .await?;
            made.push((stream, name));
        }
        Ok(made)
    }

    /// Binds the durable pull consumer `config` on `stream`, creating it when missing.
    ///
    /// When a consumer of that name exists with other settings that the server will not change,
    /// the existing one is used and a warning says so. A fleet opened with
    /// [`Fleet::existing`] creates nothing: the consumer must exist (`fleet setup`).
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the consumer can be neither created nor found.
    pub async fn durable_pull(
        &self,
        stream: &str,
        config: pull::Config,
    ) -> Result<jetstream::consumer::PullConsumer, Error> {
        let name = config.durable_name.clone().unwrap_or_default();
        if !self.manage {
            return self.existing_pull(stream, &config).await;
        }
        let op = format!("create consumer {name} on {stream}");
        match retry_setup(&op, || {
            self.js
                .create_consumer_on_stream(config.clone(), stream.to_owned())
        })
        .await
        {
            Ok(c) => Ok(c),
            Err(create_err) => match self.js.get_consumer_from_stream(&name, stream).await {
                Ok(c) => {
                    tracing::warn!(consumer = %name, error = %create_err, "using the existing consumer; its settings differ from this process's");
                    Ok(c)
                }
                Err(_) => Err(create_err),
            },
        }
    }

    /// Looks up the durable consumer `config` names on `stream`, for a process that may not
    /// create it; its filter must be `config`'s, and a different `ack_wait` is warned about.
    async fn existing_pull(
        &self,
        stream: &str,
        config: &pull::Config,
    ) -> Result<jetstream::consumer::PullConsumer, Error> {
        let name = config.durable_name.clone().unwrap_or_default();
        let mut consumer: jetstream::consumer::PullConsumer = look_up(
            &format!("find consumer {name} on {stream}"),
            &format!("consumer {name} on stream {stream}"),
            || self.js.get_consumer_from_stream(&name, stream),
        )
        .await?;
        let info = consumer
            .info()
            .await
            .map_err(|e| Error::js(format!("read consumer {name}"), e))?;
        if info.config.filter_subject != config.filter_subject {
            return Err(Error::js(
                format!("find consumer {name} on {stream}"),
                format!(
                    "it reads `{}`, not `{}`; recreate it with `fleet setup` as the NATS admin user",
                    info.config.filter_subject, config.filter_subject
                ),
            ));
        }
        if info.config.max_ack_pending != config.max_ack_pending && config.max_ack_pending > 0 {
            tracing::warn!(consumer = %name, theirs = info.config.max_ack_pending, ours = config.max_ack_pending, "the consumer's max_ack_pending is not the catalog's max_concurrency; run `fleet setup` again after the workers have published the catalog");
        }
        if info.config.ack_wait != config.ack_wait {
            tracing::warn!(consumer = %name, theirs = ?info.config.ack_wait, ours = ?config.ack_wait, "the consumer's ack wait is not FLEET_ACK_WAIT; run `fleet setup` with the same FLEET_ACK_WAIT");
        }
        Ok(consumer)
    }

    /// Opens a fleet that a dispatcher or worker has set up, changing nothing (for the client).
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when the fleet's buckets do not exist on this NATS.
    pub async fn bind(client: async_nats::Client, args: &NatsArgs) -> Result<Self, Error> {
        let topology = Topology::new(&args.prefix);
        let js = jetstream::new(client.clone());
        let open = |name: String| {
            let js = js.clone();
            async move {
                js.get_key_value(&name).await.map_err(|e| {
                    Error::js(
                        format!("open bucket {name}"),
                        format!(
                            "{e}; is a dispatcher or worker of fleet `{}` running on this NATS?",
                            args.prefix
                        ),
                    )
                })
            }
        };
        let status = open(topology.status_bucket()).await?;
        let catalog = open(topology.catalog_bucket()).await?;
        // `server.address` and `server.port` of the messaging spans.
        crate::telemetry::remember_server(&client).await;
        Ok(Self {
            client,
            js,
            topology,
            status,
            catalog,
            manage: false,
        })
    }

    /// Checks that the streams still exist (for `/readyz`).
    pub async fn streams_present(&self) -> bool {
        for name in [
            self.topology.requests_stream(),
            self.topology.tasks_stream(),
            self.topology.results_stream(),
            self.topology.dlq_stream(),
        ] {
            if self.js.get_stream(&name).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Creates or updates a KV bucket's stream directly (the layout of ADR-8), then opens it.
///
/// async-nats' own `create_or_update_key_value` first asks for the account's info, whose answer
/// from nats-server 2.9 it cannot read; the stream layout is the same either way.
async fn bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, Error> {
    let bucket = config.bucket.clone();
    let stream = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(config.description.clone()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: config.history.max(1),
        max_age: config.max_age,
        storage: config.storage,
        num_replicas: config.num_replicas.max(1),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        duplicate_window: if config.max_age.is_zero() {
            DUPLICATE_WINDOW
        } else {
            DUPLICATE_WINDOW.min(config.max_age)
        },
        ..Default::default()
    };
    let op = format!("create bucket {bucket}");
    retry_setup(&op, || {
        let js = js.clone();
        let stream = stream.clone();
        async move { js.create_or_update_stream(stream).await.map(|_| ()) }
    })
    .await?;
    retry_setup(&format!("open bucket {bucket}"), || {
        js.get_key_value(bucket.clone())
    })
    .await
}

/// Whether `task` can be the last tokens of `<prefix>.tasks.<task>`.
fn is_task_name(task: &str) -> bool {
    !task.is_empty()
        && task.split('.').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// Looks something up that a process without stream-admin rights needs, retrying as
/// [`retry_setup`] does but failing at once, naming `fleet setup`, when the server says it does
/// not exist (`stream not found`, `consumer not found`).
async fn look_up<T, F, Fut, E>(op: &str, what: &str, mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut last = String::new();
    for attempt in 0..5u32 {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.to_string().contains("not found") => {
                return Err(Error::js(
                    op,
                    format!(
                        "{what} does not exist, and with FLEET_MANAGE_STREAMS=false this process \
                         may not create it: run `fleet setup` as the NATS admin user first ({e})"
                    ),
                ));
            }
            Err(e) => {
                tracing::debug!(op, error = %e, attempt, "look-up failed, retrying");
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
            }
        }
    }
    Err(Error::js(op, last))
}

/// Runs a set-up call up to five times: processes starting together race to create the same
/// stream, and the loser's first answer is an error.
async fn retry_setup<T, F, Fut, E>(op: &str, mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut last = String::new();
    for attempt in 0..5u32 {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                tracing::debug!(op, error = %e, attempt, "set-up failed, retrying");
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
            }
        }
    }
    Err(Error::js(op, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let t = Topology::new("my-fleet");
        assert_eq!(t.requests_subject(), "my-fleet.requests");
        assert_eq!(t.tasks_stream(), "MY_FLEET_TASKS");
        assert_eq!(t.status_bucket(), "my-fleet-status");
        assert_eq!(t.worker_consumer("text.transform"), "worker-text_transform");
        assert_eq!(t.dlq_subject("unreadable"), "my-fleet.dlq.unreadable");
    }

    #[test]
    fn worker_consumers_read_their_task_only() {
        let t = Topology::new("fleet");
        let c = t.worker_consumer_config("text.transform", Duration::from_secs(30));
        assert_eq!(c.durable_name.as_deref(), Some("worker-text_transform"));
        assert_eq!(c.filter_subject, "fleet.tasks.text.transform");
        assert_eq!(c.max_deliver, -1);
        let d = t.dispatcher_consumer_config(Duration::from_secs(2));
        assert_eq!(d.durable_name.as_deref(), Some("dispatcher"));
        assert_eq!(d.ack_wait, Duration::from_secs(2));
    }

    #[test]
    fn each_priority_has_its_own_subject_and_consumer() {
        let t = Topology::new("fleet");
        assert_eq!(
            t.task_subject_at("text.transform", Priority::Normal),
            "fleet.tasks.text.transform"
        );
        assert_eq!(
            t.task_subject_at("text.transform", Priority::High),
            "fleet.tasks-high.text.transform"
        );
        assert_eq!(
            t.task_wildcards(),
            ["fleet.tasks-high.>", "fleet.tasks.>", "fleet.tasks-low.>"]
        );
        for p in Priority::ALL {
            for task in ["chat", "github.repo_info", "high.low", "tasks-high.x"] {
                let subject = t.task_subject_at(task, p);
                assert_eq!(t.task_of_subject(&subject), Some((task, p)), "{subject}");
            }
        }
        assert_eq!(t.task_of_subject("fleet.results.x"), None);
        assert_eq!(t.task_of_subject("fleet.tasks."), None);
        assert_eq!(t.task_of_subject("other.tasks.chat"), None);
        assert_eq!(t.task_of_subject("fleetx.tasks.chat"), None);
        assert_eq!(
            t.worker_consumer_at("github.repo_info", Priority::Low),
            "low-worker-github_repo_info"
        );
        let c = t.lane_consumer_config("chat", Priority::High, Duration::from_secs(30), Some(2));
        assert_eq!(c.durable_name.as_deref(), Some("high-worker-chat"));
        assert_eq!(c.filter_subject, "fleet.tasks-high.chat");
        assert_eq!(c.max_ack_pending, 2);
        assert_eq!(
            t.worker_consumer_config("chat", Duration::from_secs(30))
                .max_ack_pending,
            0
        );
    }

    #[test]
    fn task_names_are_subject_tokens() {
        for ok in ["chat", "github.repo_info", "a-b.c_d"] {
            assert!(is_task_name(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a.*", "a b", "a.>"] {
            assert!(!is_task_name(bad), "{bad}");
        }
    }
}
