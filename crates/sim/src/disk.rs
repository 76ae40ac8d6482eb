//! The shared disk: one image that every host reaches over the storage network, served by the
//! binary's own `IoBackends` (the same code that serves a disk image file to `ftvm primary`),
//! with a backend that can be told to fail.
//!
//! A request reaches the disk as a message from the host that let it out, and its completion
//! travels back the same way, naming the run it belongs to; a host's run that has ended takes
//! no completion. A slow disk is a slow link to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ftvm_host::{BlockBackend, IoBackends, IoStats};
use ftvm_machine::InputEvent;
use ftvm_virtio::Request;

use crate::guest::{DISK_BYTES, DISK_SLOT};

/// The image in memory; while `failing` is set every operation fails (the guest sees EIO).
struct Image {
    bytes: Vec<u8>,
    // An atomic only because `BlockBackend` must be `Send`: one thread uses it.
    failing: Arc<AtomicBool>,
}

impl Image {
    fn check(&self, offset: u64, len: usize) -> std::io::Result<std::ops::Range<usize>> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("the shared disk fails (injected)"));
        }
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| std::io::Error::other("beyond the disk's end"))?;
        Ok(start..end)
    }
}

impl BlockBackend for Image {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let r = self.check(offset, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let r = self.check(offset, data.len())?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.check(0, 0).map(|_| ())
    }
}

pub struct SharedDisk {
    io: IoBackends,
    failing: Arc<AtomicBool>,
    /// Faults making it fail now (they may overlap).
    failures: u32,
}

impl SharedDisk {
    pub fn new() -> SharedDisk {
        let failing = Arc::new(AtomicBool::new(false));
        let mut io = IoBackends::default();
        let image = Image {
            bytes: vec![0; DISK_BYTES as usize],
            failing: failing.clone(),
        };
        io.disks.insert(DISK_SLOT, Box::new(image));
        SharedDisk {
            io,
            failing,
            failures: 0,
        }
    }

    /// Carries out a request let out by a VM: the completion to send back.
    pub fn serve(&mut self, slot: u8, request: &Request) -> Option<InputEvent> {
        self.io.serve(slot, request)
    }

    /// A disk-errors fault starts (`true`) or heals.
    pub fn fail(&mut self, on: bool) {
        self.failures = if on {
            self.failures + 1
        } else {
            self.failures.saturating_sub(1)
        };
        self.failing.store(self.failures > 0, Ordering::Relaxed);
    }

    pub fn stats(&self) -> IoStats {
        self.io.stats
    }
}
