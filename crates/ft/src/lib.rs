//! Fault tolerance: a primary VM and a backup in virtual lockstep (docs/ft-design.md).
//!
//! Job: carry the primary's event log to the backup as it is made, over one TCP connection per
//! pair (the logging channel). The records themselves are `ftvm-log`'s; the primary produces
//! them with `ftvm-replay`'s `Recorder`, the backup consumes them with its `Replayer`, which
//! checks every output and checkpoint, so a backup that diverges says so at once.
//!
//! Invariants: the channel writes through (TCP_NODELAY, no user-space buffer), so a record the
//! primary has appended is on its way before the primary goes on; a peer that closes or dies
//! mid-record shows up at the backup as a log that ends early, never as a record made up.
//!
//! This first slice has no acks, Output Rule, failure detection or go-live yet: the backup
//! replays in lockstep and reports where it lost the primary.

mod channel;

pub use channel::{ChannelError, accept_backup, bind_primary, connect_to_primary};
