//! What the queues hold, per task, and emptying the dead-letter queue: the client's
//! `fleet stats` and `fleet dlq purge`.
//!
//! The counts are JetStream's own, read from one consumer info per task and two stream infos,
//! so a look costs a few requests whatever the backlog: nothing is scanned. Each worker
//! consumer (`worker-<task>`, and `high-`/`low-worker-<task>` for the other priorities) is
//! found on the tasks stream by its filter subject, so a task whose workers have all gone is
//! still shown while its consumer or its messages are there.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use serde::Serialize;

use crate::{Error, priority::Priority, topology::Fleet};

/// One task's queue, as JetStream counts it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TaskStats {
    /// The task's name (`unreadable` for requests that could not be read at all).
    pub task: String,
    /// Tasks not yet handed to a worker (the consumer's `num_pending`; without a consumer,
    /// the messages on the task's subject).
    pub waiting: u64,
    /// Handed to a worker and not yet settled (`num_ack_pending`): running, or waiting for
    /// their retry delay.
    pub running: u64,
    /// Deliveries settled since the consumer was created (delivered minus ack pending): acked
    /// or ended; a task that was retried counts once per attempt.
    pub done: u64,
    /// Dead letters kept for the task (its subject in the dead-letter stream).
    pub dead: u64,
    /// Pull requests the workers have waiting on the consumer (`num_waiting`, the most of
    /// the task's priorities): about one per idle worker replica.
    pub workers: u64,
    /// The backlog per priority (`high`, `normal`, `low`): each priority's own consumer.
    pub priorities: BTreeMap<Priority, Backlog>,
    /// The catalog's fleet-wide limit, when the task has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// One priority's share of a task's queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Backlog {
    /// Not yet handed to a worker.
    pub waiting: u64,
    /// Handed to a worker and not yet settled.
    pub running: u64,
}

// === impl Fleet ===

impl Fleet {
    /// The queue of every task: those in the catalog, those with a worker consumer, and those
    /// with messages or dead letters, sorted by name.
    ///
    /// # Errors
    ///
    /// [`Error::JetStream`] when a stream, its consumers or the catalog cannot be read.
    ///
    /// ```no_run
    /// # async fn f(fleet: fleet_common::topology::Fleet) -> Result<(), fleet_common::Error> {
    /// for t in fleet.stats().await? {
    ///     println!("{}: {} waiting, {} dead", t.task, t.waiting, t.dead);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self) -> Result<Vec<TaskStats>, Error> {
        let mut rows: BTreeMap<String, TaskStats> = BTreeMap::new();
        for spec in self.read_catalog().await? {
            row(&mut rows, &spec.name).max_concurrency = spec.max_concurrency;
        }

        let tasks_stream = self.topology.tasks_stream();
        let op = format!("read stream {tasks_stream}");
        let stream = self
            .js
            .get_stream(&tasks_stream)
            .await
            .map_err(|e| Error::js(&op, e))?;
        // Messages per task subject: waiting plus running, on a work-queue stream (it holds
        // only the tasks' subjects, of every priority).
        let mut on_subject: BTreeMap<(String, Priority), u64> = BTreeMap::new();
        let mut subjects = stream
            .info_with_subjects(format!("{}.>", self.topology.prefix()))
            .await
            .map_err(|e| Error::js(&op, e))?;
        while let Some((subject, count)) =
            subjects.try_next().await.map_err(|e| Error::js(&op, e))?
        {
            if let Some((task, priority)) = self.topology.task_of_subject(&subject) {
                on_subject.insert((task.to_owned(), priority), count as u64);
            }
        }
        let mut consumed = Vec::new();
        let mut consumers = stream.consumers();
        while let Some(info) = consumers.try_next().await.map_err(|e| Error::js(&op, e))? {
            let Some((task, priority)) = self.topology.task_of_subject(&info.config.filter_subject)
            else {
                continue;
            };
            let t = row(&mut rows, task);
            let ack_pending = info.num_ack_pending as u64;
            t.waiting += info.num_pending;
            t.running += ack_pending;
            t.done += info.delivered.consumer_sequence.saturating_sub(ack_pending);
            t.workers = t.workers.max(info.num_waiting as u64);
            let backlog = t.priorities.entry(priority).or_default();
            backlog.waiting += info.num_pending;
            backlog.running += ack_pending;
            consumed.push((task.to_owned(), priority));
        }
        for ((task, priority), count) in on_subject {
            if !consumed.contains(&(task.clone(), priority)) {
                let t = row(&mut rows, &task);
                t.waiting += count;
                t.priorities.entry(priority).or_default().waiting += count;
            }
        }

        let dlq_stream = self.topology.dlq_stream();
        let dlq_prefix = self.topology.dlq_prefix();
        let op = format!("read stream {dlq_stream}");
        let dlq = self
            .js
            .get_stream(&dlq_stream)
            .await
            .map_err(|e| Error::js(&op, e))?;
        let mut letters = dlq
            .info_with_subjects(format!("{dlq_prefix}>"))
            .await
            .map_err(|e| Error::js(&op, e))?;
        while let Some((subject, count)) =
            letters.try_next().await.map_err(|e| Error::js(&op, e))?
        {
            if let Some(task) = subject.strip_prefix(&dlq_prefix) {
                row(&mut rows, task).dead = count as u64;
            }
        }
        Ok(rows.into_values().collect())
    }

    /// Removes every dead letter, or only `task`'s, and returns how many were removed.
    ///
    /// The dead requests' results stay `dead`; without their dead letters they can no longer
    /// be replayed.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `task` is not a task name (empty, or with spaces or wildcards);
    /// [`Error::JetStream`] when the dead-letter stream cannot be purged (as a user without the
    /// admin role).
    ///
    /// ```no_run
    /// # async fn f(fleet: fleet_common::topology::Fleet) -> Result<(), fleet_common::Error> {
    /// let removed = fleet.purge_dead_letters(Some("github.repo_info")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn purge_dead_letters(&self, task: Option<&str>) -> Result<u64, Error> {
        if let Some(task) = task
            && (task.is_empty()
                || task.starts_with('.')
                || task.ends_with('.')
                || task.contains(['*', '>', ' ', '\t', '\r', '\n']))
        {
            return Err(Error::Config(format!("`{task}` is not a task name")));
        }
        let name = self.topology.dlq_stream();
        let op = format!("purge stream {name}");
        let stream = self
            .js
            .get_stream(&name)
            .await
            .map_err(|e| Error::js(&op, e))?;
        let purge = stream.purge();
        let response = match task {
            Some(task) => purge.filter(self.topology.dlq_subject(task)).await,
            None => purge.await,
        }
        .map_err(|e| Error::js(&op, e))?;
        Ok(response.purged)
    }
}

/// The row of `task`, made empty when it is not there yet.
fn row<'a>(rows: &'a mut BTreeMap<String, TaskStats>, task: &str) -> &'a mut TaskStats {
    rows.entry(task.to_owned()).or_insert_with(|| TaskStats {
        task: task.to_owned(),
        priorities: Priority::ALL
            .into_iter()
            .map(|p| (p, Backlog::default()))
            .collect(),
        ..TaskStats::default()
    })
}
