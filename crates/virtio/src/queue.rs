//! Split virtqueues (virtio 1.x §2.7), read and written through [`Ram`].
//!
//! Written here rather than with `virtio-queue`/`vm-memory` because every device write must go
//! through `Ram::write_bytes`, so dirty-page tracking (state hashes, live clone) sees it, and the
//! machine must stay free of host-mapped guest memory. Everything the guest controls (ring
//! indices, descriptor addresses, lengths, `next` links) is checked; a violation is a
//! [`QueueError`] that puts the device in its error state, never a panic or a host access.

use ftvm_cpu::Ram;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The largest queue a device offers.
pub const MAX_QUEUE_SIZE: u16 = 256;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
/// avail.flags: the driver asks for no interrupt when buffers are used.
const AVAIL_F_NO_INTERRUPT: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueueError {
    #[error("queue ring at {0:#x} is outside guest RAM")]
    RingOutOfRange(u64),
    #[error("available index jumped by {0}, more than the queue size")]
    AvailJump(u16),
    #[error("descriptor index {0} is out of the table")]
    BadIndex(u16),
    #[error("descriptor chain longer than the queue (a loop?)")]
    ChainTooLong,
    #[error("descriptor buffer {addr:#x}+{len} is outside guest RAM")]
    BufferOutOfRange { addr: u64, len: u32 },
    #[error("indirect descriptors were not negotiated")]
    Indirect,
    #[error("a device-readable descriptor follows a device-writable one")]
    ReadAfterWrite,
}

/// One guest buffer: a guest-physical range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buffer {
    pub addr: u64,
    pub len: u32,
}

/// A descriptor chain taken from the available ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// The head index, returned in the used ring.
    pub head: u16,
    /// Device-readable buffers, in order.
    pub readable: Vec<Buffer>,
    /// Device-writable buffers, in order.
    pub writable: Vec<Buffer>,
}

impl Chain {
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|b| b.len as u64).sum()
    }
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|b| b.len as u64).sum()
    }

    /// Copies up to `max` device-readable bytes out of guest memory.
    pub fn read_all(&self, ram: &Ram, max: usize) -> Vec<u8> {
        let total = (self.readable_len() as usize).min(max);
        let mut out = vec![0; total];
        let mut at = 0;
        for b in &self.readable {
            if at == total {
                break;
            }
            let n = (b.len as usize).min(total - at);
            // Ranges were checked when the chain was taken.
            let _ = ram.read_bytes(b.addr, &mut out[at..at + n]);
            at += n;
        }
        out
    }

    /// Writes `data` into the device-writable buffers from byte `skip` on; returns how many
    /// bytes were written (short if the buffers are smaller).
    pub fn write_from(&self, ram: &mut Ram, mut skip: u64, data: &[u8]) -> usize {
        let mut done = 0;
        for b in &self.writable {
            if done == data.len() {
                break;
            }
            let len = b.len as u64;
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = ((len - skip) as usize).min(data.len() - done);
            let _ = ram.write_bytes(b.addr + skip, &data[done..done + n]);
            done += n;
            skip = 0;
        }
        done
    }
}

/// A split virtqueue's configuration and the device's position in it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Queue {
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// The next available-ring entry the device will take.
    pub next_avail: u16,
    /// The next used-ring entry the device will fill.
    pub next_used: u16,
}

impl Queue {
    pub fn reset(&mut self) {
        *self = Queue::default();
    }

    fn read_u16(ram: &Ram, addr: u64) -> Result<u16, QueueError> {
        ram.read(addr, 2)
            .map(|v| v as u16)
            .ok_or(QueueError::RingOutOfRange(addr))
    }

    /// Whether the driver has made a buffer available that the device has not taken.
    pub fn has_available(&self, ram: &Ram) -> bool {
        self.ready && Self::read_u16(ram, self.avail + 2).is_ok_and(|idx| idx != self.next_avail)
    }

    /// Takes the next available chain, if any.
    pub fn pop(&mut self, ram: &Ram) -> Result<Option<Chain>, QueueError> {
        if !self.ready || self.size == 0 {
            return Ok(None);
        }
        let avail_idx = Self::read_u16(ram, self.avail + 2)?;
        let pending = avail_idx.wrapping_sub(self.next_avail);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.size {
            return Err(QueueError::AvailJump(pending));
        }
        let slot = (self.next_avail % self.size) as u64;
        let head = Self::read_u16(ram, self.avail + 4 + 2 * slot)?;
        let chain = self.walk(ram, head)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(Some(chain))
    }

    fn walk(&self, ram: &Ram, head: u16) -> Result<Chain, QueueError> {
        let mut chain = Chain {
            head,
            readable: Vec::new(),
            writable: Vec::new(),
        };
        let mut index = head;
        // A chain visits each descriptor at most once, so more links than the table has entries
        // means a loop.
        for _ in 0..self.size {
            if index >= self.size {
                return Err(QueueError::BadIndex(index));
            }
            let at = self.desc + 16 * index as u64;
            let mut raw = [0u8; 16];
            ram.read_bytes(at, &mut raw)
                .ok_or(QueueError::RingOutOfRange(at))?;
            let addr = u64::from_le_bytes(raw[0..8].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(raw[8..12].try_into().unwrap_or_default());
            let flags = u16::from_le_bytes([raw[12], raw[13]]);
            let next = u16::from_le_bytes([raw[14], raw[15]]);
            if flags & DESC_F_INDIRECT != 0 {
                return Err(QueueError::Indirect);
            }
            if len > 0 && !ram.contains(addr, len as u64) {
                return Err(QueueError::BufferOutOfRange { addr, len });
            }
            let buf = Buffer { addr, len };
            if flags & DESC_F_WRITE != 0 {
                chain.writable.push(buf);
            } else if chain.writable.is_empty() {
                chain.readable.push(buf);
            } else {
                return Err(QueueError::ReadAfterWrite);
            }
            if flags & DESC_F_NEXT == 0 {
                return Ok(chain);
            }
            index = next;
        }
        Err(QueueError::ChainTooLong)
    }

    /// Returns a chain to the driver with `len` bytes written into it.
    pub fn push_used(&mut self, ram: &mut Ram, head: u16, len: u32) -> Result<(), QueueError> {
        if self.size == 0 {
            return Ok(());
        }
        let slot = (self.next_used % self.size) as u64;
        let entry = self.used + 4 + 8 * slot;
        let mut raw = [0u8; 8];
        raw[..4].copy_from_slice(&(head as u32).to_le_bytes());
        raw[4..].copy_from_slice(&len.to_le_bytes());
        ram.write_bytes(entry, &raw)
            .ok_or(QueueError::RingOutOfRange(entry))?;
        self.next_used = self.next_used.wrapping_add(1);
        ram.write_bytes(self.used + 2, &self.next_used.to_le_bytes())
            .ok_or(QueueError::RingOutOfRange(self.used))?;
        Ok(())
    }

    /// Whether the driver wants an interrupt for used buffers now.
    pub fn wants_interrupt(&self, ram: &Ram) -> bool {
        Self::read_u16(ram, self.avail).map_or(true, |f| f & AVAIL_F_NO_INTERRUPT == 0)
    }

    /// Checks the rings lie in RAM when the driver marks the queue ready.
    pub fn validate(&self, ram: &Ram) -> Result<(), QueueError> {
        let n = self.size as u64;
        for (addr, len) in [
            (self.desc, 16 * n),
            (self.avail, 6 + 2 * n),
            (self.used, 6 + 8 * n),
        ] {
            if !ram.contains(addr, len) {
                return Err(QueueError::RingOutOfRange(addr));
            }
        }
        Ok(())
    }
}
