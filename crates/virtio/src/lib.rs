//! ftvm's virtio-mmio devices: block, net and entropy, for a deterministic machine.
//!
//! Job: the guest-visible side of guest I/O. A device never does I/O itself. Following the
//! paper's bounce buffers, a guest request is taken at its QueueNotify (an MMIO write, so a
//! deterministic instruction) and leaves as a [`Request`] with any write data already copied out
//! of guest memory; the backend's answer comes back later as a completion call that the machine
//! applies at an instruction boundary (an input event, logged for replay), which copies read data
//! in, fills the used ring and raises the interrupt.
//!
//! Invariants: guest memory is written only by `process` and the completion calls, through
//! `Ram`, so dirty tracking sees every write; all device state (pending requests included) is
//! serialisable, so a snapshot taken mid-I/O restores and completes; nothing the guest writes
//! (rings, descriptors, registers) can panic the host or make it allocate without bound: a
//! malformed queue puts the device in its error state (DEVICE_NEEDS_RESET) until the driver
//! resets it.
//!
//! Wiring (the machine): slot `i` at `0x1000_1000 + 0x1000 * i`, PLIC source `1 + i`; route MMIO
//! there to [`VirtioMmio::read`]/[`VirtioMmio::write`], call [`VirtioMmio::process`] after each
//! MMIO write the hart reports, turn its requests into effects, and drive the PLIC line from
//! [`VirtioMmio::irq`].

mod block;
mod net;
mod queue;
mod rng;
mod transport;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use block::{Block, BlockOp, MAX_REQUEST, S_IOERR, S_OK, S_UNSUPP, SECTOR};
pub use net::{MAX_FRAME, Net};
pub use queue::{MAX_QUEUE_SIZE, QueueError};
pub use rng::{MAX_ENTROPY, Rng};
pub use transport::{Device, VirtioMmio};

/// Work a device hands to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A disk operation; answer with [`VirtioMmio::complete_block`] and the same `id`.
    Block { id: u64, op: BlockOp },
    /// An Ethernet frame to send (no answer).
    NetTx(Vec<u8>),
    /// `len` bytes of entropy wanted; answer with [`VirtioMmio::complete_entropy`].
    Entropy { id: u64, len: u32 },
}
