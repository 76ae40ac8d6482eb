//! The host side of a VM: where real time and real I/O meet the pure machine.
//!
//! Job: drive an `ftvm_machine::Machine` in slices, turn host time into `ClockAnchor` events and
//! keystrokes into `ConsoleInput` events, carry effects out, and let an [`Observer`] see every
//! input applied and every effect produced (the recorder, and later the FT primary, are observers).
//!
//! Invariant: the machine is touched only through `run`, `apply` and `take_effects`, so whatever
//! an observer logs is everything needed to replay the run.

pub mod io;
pub mod nbd;
pub mod runner;

pub use io::{BlockBackend, DiskError, FileDisk, IoBackends, IoStats, open_disk};
pub use nbd::{NbdDisk, NbdError, NbdTarget, fuzz_nbd};
pub use runner::{ClockMode, Gate, Host, Observer, RunEnd, Runner, Stop};
