//! The request's life in one place: its states, its one result, its dead letters.
//!
//! The dispatcher, the workers and the `fleet` client act on a request only through the verbs
//! of [`Fleet`](crate::topology::Fleet) defined here, never through the connection:
//!
//! | who | verbs |
//! |---|---|
//! | dispatcher | [`receive`](crate::topology::Fleet::receive) (the duplicate guard), [`queue`](crate::topology::Fleet::queue), [`reject`](crate::topology::Fleet::reject), [`settle_foreign`](crate::topology::Fleet::settle_foreign) |
//! | worker | [`start`](crate::topology::Fleet::start), [`mark_running`](crate::topology::Fleet::mark_running), [`retry`](crate::topology::Fleet::retry), [`hand_back`](crate::topology::Fleet::hand_back), [`settle`](crate::topology::Fleet::settle), [`bury`](crate::topology::Fleet::bury), [`record_final`](crate::topology::Fleet::record_final) |
//! | operator | [`cancel`](crate::topology::Fleet::cancel), [`approve`](crate::topology::Fleet::approve), [`deny`](crate::topology::Fleet::deny) |
//! | client | [`list`](crate::topology::Fleet::list), [`view`](crate::topology::Fleet::view), [`follow`](crate::topology::Fleet::follow), [`replay`](crate::topology::Fleet::replay), [`dead_letters`](crate::topology::Fleet::dead_letters) |
//!
//! The rules of which state may follow which are pure functions in [`rules`]. What keeps a
//! request's path short: one awaited status write before its task is published (the duplicate
//! guard, which already says `queued` when the route is known without the LLM), none while a
//! fast task runs (`running` is written once a task has run for [`RUNNING_VISIBLE_AFTER`], or
//! at once on a redelivery), and the final state written after the result without holding up
//! the next message. Readers take the stored result first, so a state that lags never shows.
//!
//! # Layout
//!
//! - [`rules`] - the state rules, unit-tested without NATS.
//! - `records` - results (first writer wins), status records (forward-only writes), dead letters.
//! - `requests` - the dispatcher's verbs.
//! - `attempts` - the worker's verbs.
//! - `replay` - the dead-letter queue: listing and replaying.
//! - `view` - what the client reads: a request's state and result, followed live.
//! - [`timing`] - `delay` / `not_before` / `deadline`, unit-tested without NATS.
//! - `control` - what a person does to a request: cancel, approve, deny, list.
//! - `settler` - the final state of results stored by workers in other languages.

mod attempts;
mod control;
mod records;
mod replay;
mod requests;
pub mod rules;
mod settler;
mod stats;
pub mod timing;
mod view;

pub use attempts::{Attempt, RUNNING_VISIBLE_AFTER, Retried, Start};
pub use control::{Approval, BY_HEADER, Cancellation, Denial, Listed};
pub use records::DeadLetter;
pub use replay::Replayed;
pub use requests::{
    Arrival, ORIGINAL_SHA256_HEADER, ORIGINAL_SIZE_HEADER, Receipt, Ticket, UNREADABLE_KEPT_BYTES,
    truncated,
};
pub use settler::{Settling, writes_own_status};
pub use stats::{Backlog, TaskStats};
pub use view::{Event, Follow, View};
