//! Which waiting task gets a worker's next free slot: the higher priority first, and every
//! [`PASS_OVER_LIMIT`]+1-th slot at the latest to lower work that has waited that long.
//!
//! Each task has one durable consumer per priority (see `fleet_common::priority`). Each
//! priority's consumers are pulled by `fleet_common::pull::run` under that priority's own
//! semaphore (a *lane* of twice `FLEET_CONCURRENCY`: the messages a lane has taken, running or
//! waiting), and every message then waits here, at the [`Gate`], for one of the worker's
//! `FLEET_CONCURRENCY` slots. A lane holds more than a slot's worth so that, when a slot frees,
//! the high lane's next message is already waiting for it: with only as many as there are
//! slots, the high lane would be pulling while the slot went to the low message already here.
//! While a message waits at the gate it is reported in progress, so its ack deadline does not
//! run out; at shutdown it is given back (NAK) at once.
//!
//! Starvation: the rule ([`choose`]) counts, for each priority with work waiting, how many
//! slots in a row went to another priority. Past [`PASS_OVER_LIMIT`], the lowest such priority
//! gets the next slot. So with high work arriving without end, low (and normal) work still gets
//! one slot in every `PASS_OVER_LIMIT + 1` (measured in BENCHMARKS.md).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{AckKind, Message};
use fleet_common::{priority::Priority, pull};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How many slots in a row may go to other priorities while work of one priority waits: the
/// next one goes to it (the lowest such priority first).
pub const PASS_OVER_LIMIT: u32 = 4;

/// Picks the priority whose waiting work gets the next slot, given which priorities have work
/// waiting (`waiting[p.index()]`), and updates `passed_over` (per priority: slots in a row
/// that went to another one while it waited). `None` when nothing waits.
///
/// The highest waiting priority wins, unless a waiting priority has been passed over
/// [`PASS_OVER_LIMIT`] times: then the lowest such one does.
pub fn choose(waiting: [bool; 3], passed_over: &mut [u32; 3]) -> Option<Priority> {
    let starved = Priority::ALL
        .into_iter()
        .rev()
        .find(|p| waiting[p.index()] && passed_over[p.index()] >= PASS_OVER_LIMIT);
    let chosen = starved.or_else(|| Priority::ALL.into_iter().find(|p| waiting[p.index()]))?;
    for p in Priority::ALL {
        let i = p.index();
        passed_over[i] = if p != chosen && waiting[i] {
            passed_over[i].saturating_add(1)
        } else {
            0
        };
    }
    Some(chosen)
}

/// A worker's `FLEET_CONCURRENCY` slots, handed to waiting messages by [`choose`].
#[derive(Debug)]
pub struct Gate {
    /// The slots and who waits for them.
    state: Mutex<State>,
}

/// The gate's books.
#[derive(Debug)]
struct State {
    /// Slots nobody holds (only ever non-zero while nobody waits).
    free: usize,
    /// Who waits, per priority, in arrival order.
    waiting: [VecDeque<oneshot::Sender<Slot>>; 3],
    /// Per priority: slots in a row that went to another one while it waited.
    passed_over: [u32; 3],
}

/// One of the gate's slots; dropping it hands it to the next waiter.
#[derive(Debug)]
pub struct Slot {
    /// The gate it goes back to (`None` once it has been handed on by hand).
    gate: Option<Arc<Gate>>,
}

// === impl Gate ===

impl Gate {
    /// A gate of `slots` slots (at least one).
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: slots.max(1),
                waiting: Default::default(),
                passed_over: [0; 3],
            }),
        })
    }

    /// A slot at once, when one is free and nobody waits.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let mut state = self.lock();
        (state.free > 0).then(|| {
            state.free -= 1;
            Slot {
                gate: Some(self.clone()),
            }
        })
    }

    /// Waits for a slot for work of `priority`.
    pub async fn acquire(self: &Arc<Self>, priority: Priority) -> Slot {
        let rx = {
            let mut state = self.lock();
            if state.free > 0 {
                state.free -= 1;
                return Slot {
                    gate: Some(self.clone()),
                };
            }
            let (tx, rx) = oneshot::channel();
            state.waiting[priority.index()].push_back(tx);
            rx
        };
        match rx.await {
            Ok(slot) => slot,
            // The gate keeps every sender until it hands it a slot: not reached.
            Err(_) => Slot { gate: None },
        }
    }

    /// Slots free right now (for tests and metrics).
    pub fn free(&self) -> usize {
        self.lock().free
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The books stay consistent at every await-free step, so a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands a slot that came back to the waiter [`choose`] picks, or frees it.
    fn release(self: &Arc<Self>) {
        let mut state = self.lock();
        loop {
            let waiting = [0, 1, 2].map(|i| !state.waiting[i].is_empty());
            let State {
                passed_over,
                waiting: queues,
                free,
            } = &mut *state;
            let Some(p) = choose(waiting, passed_over) else {
                *free += 1;
                return;
            };
            let Some(tx) = queues[p.index()].pop_front() else {
                continue;
            };
            match tx.send(Slot {
                gate: Some(self.clone()),
            }) {
                Ok(()) => return,
                // That waiter gave up (its worker is stopping): the next one gets the slot.
                // Disarmed, so dropping it here (under the lock) does not hand it on again.
                Err(mut slot) => slot.gate = None,
            }
        }
    }
}

// === impl Slot ===

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release();
        }
    }
}

/// Waits at `gate` for a slot for `msg` of `priority`, reporting it in progress every
/// `progress` meanwhile (a third of the ack wait, as a running task does, so a message that
/// waits long is never redelivered to another replica); on `stop`, gives the message back
/// (NAK, so another replica takes it now) and returns `None`.
pub async fn slot_for(
    gate: &Arc<Gate>,
    msg: &Message,
    priority: Priority,
    progress: Duration,
    stop: &CancellationToken,
) -> Option<Slot> {
    if let Some(slot) = gate.try_acquire() {
        return Some(slot);
    }
    let slot = tokio::select! {
        slot = pull::with_progress(msg, progress, gate.acquire(priority)) => Some(slot),
        _ = stop.cancelled() => None,
    };
    if slot.is_none()
        && let Err(e) = msg.ack_with(AckKind::Nak(None)).await
    {
        tracing::debug!(error = %e, "cannot give back a message; it redelivers after its ack wait");
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Priority = Priority::High;
    const N: Priority = Priority::Normal;
    const L: Priority = Priority::Low;

    #[test]
    fn the_highest_waiting_priority_goes_first() {
        let mut passed = [0; 3];
        assert_eq!(choose([false, false, false], &mut passed), None);
        assert_eq!(choose([false, false, true], &mut passed), Some(L));
        assert_eq!(choose([false, true, true], &mut passed), Some(N));
        assert_eq!(choose([true, true, true], &mut passed), Some(H));
        // A lone high request behind a low backlog is not held back by the low's turn.
        let mut passed = [0; 3];
        for _ in 0..100 {
            assert_eq!(choose([false, false, true], &mut passed), Some(L));
        }
        assert_eq!(choose([true, false, true], &mut passed), Some(H));
    }

    #[test]
    fn low_work_gets_one_slot_in_every_few_while_high_keeps_coming() {
        let mut passed = [0; 3];
        let picks: Vec<Priority> = (0..50)
            .map(|_| choose([true, false, true], &mut passed).expect("work waits"))
            .collect();
        let every = PASS_OVER_LIMIT as usize + 1;
        for window in picks.windows(every) {
            assert!(window.contains(&L), "{picks:?}");
        }
        let lows = picks.iter().filter(|p| **p == L).count();
        assert_eq!(lows, 50 / every, "{picks:?}");
    }

    #[test]
    fn with_all_three_waiting_none_starves() {
        let mut passed = [0; 3];
        let picks: Vec<Priority> = (0..60)
            .map(|_| choose([true, true, true], &mut passed).expect("work waits"))
            .collect();
        let count = |p| picks.iter().filter(|x| **x == p).count();
        assert!(count(H) > count(N) && count(H) > count(L), "{picks:?}");
        assert!(count(N) >= 5 && count(L) >= 5, "{picks:?}");
        // A priority that stops waiting is not owed anything later.
        let mut passed = [0; 3];
        for _ in 0..10 {
            choose([true, false, true], &mut passed);
            choose([true, false, false], &mut passed);
        }
        assert_eq!(passed[L.index()], 0);
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_high_waiter_first() {
        let gate = Gate::new(1);
        let held = gate.try_acquire().expect("one slot");
        assert!(gate.try_acquire().is_none());
        let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for p in [L, L, H] {
            let gate = gate.clone();
            let order = order_tx.clone();
            waiters.push(tokio::spawn(async move {
                let slot = gate.acquire(p).await;
                let _ = order.send(p);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(slot);
            }));
            // Queued in this order.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(held);
        for w in waiters {
            w.await.expect("waiter");
        }
        let mut order = Vec::new();
        while let Ok(p) = order_rx.try_recv() {
            order.push(p);
        }
        assert_eq!(order, [H, L, L]);
        assert_eq!(gate.free(), 1);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_lose_the_slot() {
        let gate = Gate::new(1);
        let held = gate.try_acquire().expect("one slot");
        let given_up = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.acquire(H).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        given_up.abort();
        let _ = given_up.await;
        let low = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.acquire(L).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(held);
        let slot = tokio::time::timeout(Duration::from_secs(1), low)
            .await
            .expect("the low waiter got the slot")
            .expect("waiter");
        drop(slot);
        assert_eq!(gate.free(), 1);
    }
}
