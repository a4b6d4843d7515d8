//! The fleet's queues as Prometheus gauges, read from JetStream when Prometheus scrapes.
//!
//! - `fleet_consumer_pending{stream, consumer}`: messages not yet delivered to the consumer
//!   (JetStream's `num_pending`): tasks or requests waiting for a free slot.
//! - `fleet_consumer_ack_pending{stream, consumer}`: delivered and not yet acknowledged
//!   (`num_ack_pending`): work in flight on some process.
//! - `fleet_dlq_messages{stream}`: messages kept in the dead-letter stream.
//!
//! Pending plus ack-pending is the lag KEDA's `nats-jetstream` scaler scales the workers on, so
//! the alerts and the dashboard see what the autoscaler sees, without NATS' own exporter. Every
//! process reports every consumer of the requests and tasks streams (not only its own), so the
//! numbers are there as long as one process of the fleet is scraped; queries take
//! `max by (stream, consumer)` across processes. When JetStream does not answer within
//! [`READ_TIMEOUT`], the series are dropped rather than reported stale.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::TryStreamExt;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
};

use crate::topology::Fleet;

/// How long a scrape waits for JetStream before it answers without these gauges.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// One consumer's counts, as JetStream reports them.
#[derive(Debug, Clone, PartialEq)]
struct ConsumerCounts {
    /// The stream.
    stream: String,
    /// The durable consumer's name.
    consumer: String,
    /// `num_pending`.
    pending: u64,
    /// `num_ack_pending`.
    ack_pending: u64,
}

/// What one read of JetStream found.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    /// Every consumer of the requests and tasks streams.
    consumers: Vec<ConsumerCounts>,
    /// The dead-letter stream's name.
    dlq_stream: String,
    /// Messages in it.
    dlq_messages: u64,
}

/// The gauges: the last snapshot, replaced whole before each scrape is encoded, so two
/// scrapes at once never see a half-updated set.
#[derive(Debug, Clone, Default)]
pub(super) struct QueueGauges {
    /// `None` until read, and after a read that failed.
    last: Arc<Mutex<Option<Snapshot>>>,
}

// === impl QueueGauges ===

impl QueueGauges {
    /// Reads the counts from JetStream and keeps them for the scrape (or forgets the old ones
    /// when it cannot).
    pub(super) async fn refresh(&self, fleet: &Fleet) {
        let snapshot = match tokio::time::timeout(READ_TIMEOUT, read(fleet)).await {
            Ok(Ok(snapshot)) => Some(snapshot),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot read the queues' counts for /metrics");
                None
            }
            Err(_) => {
                tracing::debug!("JetStream did not give the queues' counts in time for /metrics");
                None
            }
        };
        *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = snapshot;
    }
}

impl Collector for QueueGauges {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(snapshot) = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
        else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "fleet_consumer_pending",
                "Messages not yet delivered to the consumer (JetStream num_pending)",
                (|c: &ConsumerCounts| c.pending) as fn(&ConsumerCounts) -> u64,
            ),
            (
                "fleet_consumer_ack_pending",
                "Messages delivered to the consumer and not yet acknowledged (num_ack_pending)",
                |c: &ConsumerCounts| c.ack_pending,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for c in &snapshot.consumers {
                let labels = [
                    ("stream", c.stream.as_str()),
                    ("consumer", c.consumer.as_str()),
                ];
                ConstGauge::new(saturate(value(c))).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "fleet_dlq_messages",
            "Messages in the dead-letter stream",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(saturate(snapshot.dlq_messages))
            .encode(family.encode_family(&[("stream", snapshot.dlq_stream.as_str())])?)?;
        Ok(())
    }
}

/// Every consumer of the requests and tasks streams, and the DLQ stream's message count.
async fn read(fleet: &Fleet) -> Result<Snapshot, async_nats::Error> {
    let topology = &fleet.topology;
    let mut consumers = Vec::new();
    for name in [topology.requests_stream(), topology.tasks_stream()] {
        let stream = fleet.js.get_stream(&name).await?;
        let mut infos = stream.consumers();
        while let Some(info) = infos.try_next().await? {
            consumers.push(ConsumerCounts {
                stream: name.clone(),
                consumer: info.name,
                pending: info.num_pending,
                ack_pending: info.num_ack_pending as u64,
            });
        }
    }
    let dlq_stream = topology.dlq_stream();
    let dlq_messages = fleet
        .js
        .get_stream(&dlq_stream)
        .await?
        .cached_info()
        .state
        .messages;
    Ok(Snapshot {
        consumers,
        dlq_stream,
        dlq_messages,
    })
}

/// A count as a gauge value.
fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
