//! End-to-end tests: real nats-server, real fleet binaries, fake GitHub.
//!
//! One module per scenario. Build the binaries first: `cargo build --workspace --bins`.

mod bad_input;
mod dead_letter;
mod duplicates;
mod explicit;
mod health;
mod permanent_failure;
mod retries;
mod seed;
mod server_restart;
mod sigkill;
mod sigterm;
