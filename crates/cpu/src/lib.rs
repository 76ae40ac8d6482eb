//! The deterministic RV64IMAFDC hart of ftvm.
//!
//! Job: execute guest instructions exactly, one hart, M/S/U modes, with Sv39/Sv48 paging, traps,
//! interrupts and the F/D extensions (delegated to `ftvm-fpu`).
//!
//! Invariants:
//! - Pure: nothing here reads a host clock, spawns threads, iterates a hash map or uses host
//!   floats. The same state and the same `Bus` answers give the same execution, bit for bit.
//! - `Hart::icount` counts every instruction that was executed or that trapped (an interrupt taken
//!   between instructions does not count). `Hart::run(.., until)` never goes past `until`, so the
//!   machine can stop at an exact instruction count: replay depends on it.
//! - Time (`time`/`mtime`) is a function of the instruction count through [`VirtualClock`]; how that
//!   clock follows real time is decided outside, by input events that move its anchor.
//! - Every guest-controlled value (instruction bits, page tables, addresses) yields a guest trap or
//!   a clean `Stop`, never a host panic.

mod block;
pub mod bus;
pub mod clock;
mod compressed;
pub mod csr;
mod exec;
pub mod hart;
pub mod memory;
mod mmu;
pub mod stats;

pub use bus::{Bus, BusFault};
pub use clock::VirtualClock;
pub use hart::{Hart, HartState, Privilege, Stop};
pub use memory::{DirtyConsumer, PAGE_SIZE, Ram};
pub use stats::Stats;

#[cfg(test)]
mod tests;
