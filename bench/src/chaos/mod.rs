//! `fleet-bench chaos`: many requests while workers are SIGKILLed and restarted or frozen
//! (SIGSTOP) past their ack wait and thawed, the dispatcher is restarted and nats-server is
//! restarted once, or, with `--cluster`, on a three-node NATS cluster with R3 streams whose nodes
//! (the streams' and consumers' leaders) are killed and started again; then, for every request
//! id, the fleet must have kept its promises.
//!
//! The requests are explicit `github.repo_info` requests, one repo per request (`chaos/<id>`),
//! served by a fake GitHub API in the bench process that counts the hits per repo, so a task
//! that *ran* twice is seen, not guessed. What is counted at the end, per request id:
//!
//! | figure | from | fails the run |
//! |---|---|---|
//! | lost: no stored result | `<PREFIX>_RESULTS`, messages per subject | yes |
//! | stored twice | the same | yes |
//! | status ≠ result: the final `state` in `<prefix>-status` is not the result's `status` | the bucket and the results | yes |
//! | more than one dead letter | `<PREFIX>_DLQ`, `Fleet-Request-Id` | yes |
//! | ran twice: the repo endpoint hit more than once | the fake GitHub | no: a SIGKILL or a freeze mid-task must cause it |
//! | redelivered (`attempts` > 1), not succeeded, extra task messages | results, tasks stream | no |
//!
//! # Layout
//!
//! - `config.rs`: [`ChaosConfig`], the sizes and the chaos.
//! - `run.rs`: [`run`]: the world, the publisher and the chaos loop.
//! - `nodes.rs`: the NATS side: one server or the cluster, the restart or the node kills.
//! - `count.rs`: reading the streams, the bucket and the fake GitHub into the report.
//! - `report.rs`: [`ChaosReport`], its verdict and table.

mod config;
mod count;
mod nodes;
mod report;
mod run;

pub use config::ChaosConfig;
pub use report::ChaosReport;
pub use run::run;
