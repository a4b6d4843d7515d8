//! `fleet stats`: each task's queue as JetStream counts it, with the backlog per priority.

use fleet_common::{lifecycle::TaskStats, priority::Priority, topology::Fleet};

use crate::{EXIT_NO_NATS, EXIT_OK};

/// Runs `fleet stats`.
pub(crate) async fn stats(fleet: &Fleet, json: bool) -> i32 {
    let rows = match fleet.stats().await {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("fleet: {e}");
            return EXIT_NO_NATS;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return EXIT_OK;
    }
    if rows.is_empty() {
        println!("no tasks yet: start a worker");
        return EXIT_OK;
    }
    print!("{}", table(&rows));
    EXIT_OK
}

/// The rows as a table, one line per task: the totals, then what waits at each priority
/// (`high`, `normal`, `low`), then the fleet-wide limit (`-`: none).
fn table(rows: &[TaskStats]) -> String {
    let width = rows
        .iter()
        .map(|r| r.task.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut out = format!(
        "{:<width$}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>5}\n",
        "task", "waiting", "running", "done", "dead", "workers", "high", "normal", "low", "limit"
    );
    for r in rows {
        let waiting = |p: Priority| r.priorities.get(&p).map_or(0, |b| b.waiting);
        let limit = r.max_concurrency.map_or("-".to_owned(), |n| n.to_string());
        out.push_str(&format!(
            "{:<width$}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>5}\n",
            r.task,
            r.waiting,
            r.running,
            r.done,
            r.dead,
            r.workers,
            waiting(Priority::High),
            waiting(Priority::Normal),
            waiting(Priority::Low),
            limit
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_common::lifecycle::Backlog;

    #[test]
    fn the_table_lines_up() {
        let rows = [
            TaskStats {
                task: "github.repo_info".into(),
                waiting: 12,
                dead: 1,
                ..TaskStats::default()
            },
            TaskStats {
                task: "chat".into(),
                workers: 2,
                priorities: [(
                    Priority::Low,
                    Backlog {
                        waiting: 5000,
                        running: 1,
                    },
                )]
                .into(),
                max_concurrency: Some(2),
                ..TaskStats::default()
            },
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{text}");
        assert!(lines[1].starts_with("github.repo_info  "), "{text}");
        assert!(lines[2].ends_with("      5000      2"), "{text}");
        assert!(lines[1].ends_with("         0      -"), "{text}");
    }
}
