//! The whole ftvm machine: a pure, deterministic state machine.
//!
//! Job: put the hart (`ftvm-cpu`), RAM and the board's devices (`ftvm-board`) together, boot a
//! guest (OpenSBI or the built-in SBI), and expose the hypervisor boundary:
//! `state + input events -> state + output effects`.
//!
//! Invariants:
//! - Nothing in here reads a host clock, spawns a thread, does I/O (except snapshot files on
//!   request) or iterates a hash map. Inputs enter only through [`Machine::apply`] at the current
//!   instruction count; outputs leave only through [`Machine::take_effects`].
//! - [`Machine::run`] stops exactly at the requested instruction count, so inputs can be applied
//!   at exactly the instruction they were recorded at.
//! - [`Machine::state_hash`] covers every bit of architectural, device and memory state; a snapshot
//!   restores a machine with the same hash that continues bit-identically, and so does a machine
//!   assembled from a live clone's pieces ([`transfer`]: dirty pages in rounds, then the rest).

mod boot;
pub mod config;
mod debug;
mod devices;
pub mod events;
pub mod hash;
mod machine;
mod sbi;
pub mod snapshot;
pub mod transfer;

use thiserror::Error;

pub use config::{Firmware, MachineConfig};
pub use events::{Effect, EffectKind, InputEvent};
pub use hash::StateHash;
pub use machine::{Exit, Machine, Outcome};
pub use snapshot::SnapshotError;
pub use transfer::Incoming;

/// A guest that cannot be booted as configured: the message says what and why.
#[derive(Debug, Error)]
pub enum BootError {
    #[error("{0}")]
    Invalid(String),
}
