//! The settler task: writes the final status of results stored by workers in other languages
//! (see `fleet_common::lifecycle` `settler`). Costs the plain path one header lookup per result.

use std::time::Duration;

use fleet_common::{lifecycle::Settling, topology::Fleet};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// How long the results received before the stop may take to settle.
const DRAIN: Duration = Duration::from_secs(2);

/// Settles results as they are published until `stop`; then drains what was already received.
///
/// A result stored while no dispatcher runs is not seen here: its record keeps its last state
/// (`fleet status` shows the result's state meanwhile); see the README, "Workers in any language".
pub async fn run(fleet: Fleet, stop: CancellationToken) {
    let mut results = match fleet.results_to_settle().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen to results: the final state of results stored by workers in other languages is not written");
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            msg = results.next() => msg,
            () = stop.cancelled() => break,
        };
        let Some(msg) = msg else {
            tracing::warn!("results subscription closed; the settler stops");
            return;
        };
        settle(&fleet, &msg).await;
    }
    // Stop taking new ones, then settle what is already here.
    let _ = results.unsubscribe().await;
    let drain = async {
        while let Some(msg) = results.next().await {
            settle(&fleet, &msg).await;
        }
    };
    if tokio::time::timeout(DRAIN, drain).await.is_err() {
        tracing::debug!("settler drain cut short");
    }
}

async fn settle(fleet: &Fleet, msg: &async_nats::Message) {
    match fleet.settle_foreign(msg).await {
        Ok(Settling::Settled) => {
            tracing::debug!(subject = %msg.subject, "final state written from a result stored without it");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(subject = %msg.subject, error = %e, "final state of a stored result not written");
        }
    }
}
