//! What crosses the machine boundary: input events in, effects out.
//!
//! Every input is applied at the instruction count the machine is stopped at; every output leaves
//! tagged with the instruction count that produced it. This boundary is the hypervisor: the event
//! log, the FT logging channel and the Output Rule all work on these two types.

use serde::{Deserialize, Serialize};

/// A non-deterministic input, applied at the machine's current instruction count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputEvent {
    /// Guest time reads `mtime` from here on (never backwards). How guest time follows real time
    /// is decided outside the machine; this is also what wakes an idle hart.
    ClockAnchor { mtime: u64 },
    /// Bytes typed on the console (the 16550's receive side).
    ConsoleInput(Vec<u8>),
    /// The disk backend finished block request `id` of the device in `slot` (read data for a
    /// read: the bounce buffer copied into guest memory now).
    BlockDone {
        slot: u8,
        id: u64,
        status: u8,
        data: Vec<u8>,
    },
    /// A frame arrived for the NIC in `slot`.
    NetRx { slot: u8, frame: Vec<u8> },
    /// Host entropy for request `id` of the entropy device in `slot`.
    Entropy { slot: u8, id: u64, bytes: Vec<u8> },
}

/// An output of the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EffectKind {
    /// Bytes the guest wrote to its console.
    Console(Vec<u8>),
    /// The guest powered off: 0 for success, else the failure code given to the test device.
    PowerOff(u32),
    /// The guest asked for a reset.
    Reset,
    /// Work for the host from the virtio device in `slot`: a disk operation, a frame to send,
    /// an entropy request.
    Io {
        slot: u8,
        request: ftvm_virtio::Request,
    },
}

/// An output and the instruction count by which it was produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    pub icount: u64,
    pub kind: EffectKind,
}
