//! Operators' requests over plain NATS: `nats pub fleet.cancel.ID ''`, `nats req
//! fleet.approve.ID ''`, `nats req fleet.deny.ID 'reason'` do what `fleet cancel`, `fleet
//! approve` and `fleet deny` do (see `fleet_common::lifecycle` `control`). One dispatcher of the
//! queue group handles each; only the admin role may publish on these subjects.

use fleet_common::topology::Fleet;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Answers control requests until `stop`.
pub async fn run(fleet: Fleet, stop: CancellationToken) {
    let subs = match fleet.control_requests().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen to control requests: cancel, approve and deny work from the `fleet` client only");
            return;
        }
    };
    let mut requests = futures::stream::select_all(subs);
    loop {
        let msg = tokio::select! {
            msg = requests.next() => msg,
            () = stop.cancelled() => return,
        };
        let Some(msg) = msg else {
            return;
        };
        if let Err(e) = fleet.answer_control(&msg).await {
            tracing::warn!(subject = %msg.subject, error = %e, "control request not handled");
        }
    }
}
