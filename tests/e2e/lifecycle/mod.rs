//! The request's lifecycle, one delivery at a time: the dispatcher's and the worker's handlers
//! run in this process on a real nats-server, and each test fetches one message from the real
//! durable consumer, hands it to the handler, and reads what the fleet stored.
//!
//! Each test is a rule of `fleet_common::lifecycle` that the first version broke.

mod dispatcher;
mod rig;
mod worker;
