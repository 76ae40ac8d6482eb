//! Snapshots: the whole machine in a versioned file, restored to continue bit-identically.
//!
//! Layout: `FTVMSNAP`, a u32 format version, a zstd stream, and a trailing xxh3-64 of the
//! compressed bytes. Inside the stream: a u32 length and the postcard-encoded [`Header`] (CPU and
//! device state, RAM size, state hash), then RAM as (u32 page index, 4096 bytes) records for each
//! page that is not all zeros, ended by index u32::MAX. A file is untrusted input: every length and
//! index is checked, decompression is bounded, and the restored machine must reproduce the
//! recorded state hash.

use std::io::{Read, Write};
use std::path::Path;

use ftvm_cpu::{HartState, PAGE_SIZE};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64;

use crate::devices::Devices;
use crate::hash::StateHash;
use crate::machine::Machine;

const MAGIC: &[u8; 8] = b"FTVMSNAP";
pub const SNAPSHOT_VERSION: u32 = 1;
const END_OF_PAGES: u32 = u32::MAX;
const MAX_HEADER: usize = 16 << 20;

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("I/O error on snapshot file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an ftvm snapshot (bad magic)")]
    BadMagic,
    #[error(
        "snapshot format version {0} is not supported (this ftvm reads version {SNAPSHOT_VERSION})"
    )]
    Version(u32),
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
}

pub(crate) fn corrupt(what: impl Into<String>) -> SnapshotError {
    SnapshotError::Corrupt(what.into())
}

/// Everything but RAM, with the state hash the whole must give.
#[derive(Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) ram_size: u64,
    sbi_intercept: bool,
    hart: HartState,
    devices: Devices,
    pub(crate) state_hash: StateHash,
}

impl Machine {
    pub(crate) fn header(&mut self) -> Header {
        Header {
            ram_size: self.ram.size(),
            sbi_intercept: self.hart.sbi_intercept,
            hart: self.hart.state().clone(),
            devices: self.dev.clone(),
            state_hash: self.state_hash(),
        }
    }

    /// Completes a machine whose RAM is in place with `header`'s state; the result must have
    /// the recorded state hash.
    pub(crate) fn finish_restore(mut self, header: Header) -> Result<Machine, SnapshotError> {
        self.hart.restore(header.hart);
        self.hart.sbi_intercept = header.sbi_intercept;
        self.dev = header.devices;
        let hash = self.state_hash();
        if hash != header.state_hash {
            return Err(corrupt(format!(
                "restored state hash {hash} differs from the recorded {}",
                header.state_hash
            )));
        }
        Ok(self)
    }

    /// Serialises the machine into snapshot bytes.
    pub fn snapshot(&mut self) -> Vec<u8> {
        let header = self.header();
        let header = postcard::to_stdvec(&header).expect("machine state serialises");
        let mut out = Vec::from(&MAGIC[..]);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        let mut z = zstd::Encoder::new(out, 3).expect("zstd encoder");
        let write =
            |z: &mut zstd::Encoder<'_, Vec<u8>>, b: &[u8]| z.write_all(b).expect("in memory");
        write(&mut z, &(header.len() as u32).to_le_bytes());
        write(&mut z, &header);
        for page in 0..self.ram.pages() {
            let bytes = self.ram.page(page);
            if bytes.iter().any(|&b| b != 0) {
                write(&mut z, &(page as u32).to_le_bytes());
                write(&mut z, bytes);
            }
        }
        write(&mut z, &END_OF_PAGES.to_le_bytes());
        let mut out = z.finish().expect("in memory");
        let sum = xxh3_64(&out[12..]);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Writes a snapshot file atomically (a crash never leaves a half-written file behind).
    pub fn save_snapshot(&mut self, path: &Path) -> Result<(), SnapshotError> {
        let bytes = self.snapshot();
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    pub fn load_snapshot(path: &Path) -> Result<Machine, SnapshotError> {
        Machine::restore(&std::fs::read(path)?)
    }

    /// Rebuilds a machine from snapshot bytes.
    pub fn restore(bytes: &[u8]) -> Result<Machine, SnapshotError> {
        if bytes.len() < 20 || &bytes[..8] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(version));
        }
        let (body, sum) = bytes[12..].split_at(bytes.len() - 20);
        if xxh3_64(body) != u64::from_le_bytes(sum.try_into().unwrap()) {
            return Err(corrupt("checksum mismatch (truncated or damaged file)"));
        }
        let mut z = zstd::Decoder::new(body)?;
        let u32_at = |z: &mut zstd::Decoder<'_, _>| -> Result<u32, SnapshotError> {
            let mut b = [0; 4];
            z.read_exact(&mut b)
                .map_err(|_| corrupt("stream ends early"))?;
            Ok(u32::from_le_bytes(b))
        };
        let header_len = u32_at(&mut z)? as usize;
        if header_len > MAX_HEADER {
            return Err(corrupt(format!("header of {header_len} bytes")));
        }
        let mut header = vec![0; header_len];
        z.read_exact(&mut header)
            .map_err(|_| corrupt("header truncated"))?;
        let header: Header =
            postcard::from_bytes(&header).map_err(|e| corrupt(format!("header: {e}")))?;
        crate::boot::check_ram_size(header.ram_size).map_err(|e| corrupt(e.to_string()))?;

        let mut m = Machine::empty(header.ram_size);
        let mut page = vec![0; PAGE_SIZE];
        let mut next = 0usize;
        loop {
            let index = u32_at(&mut z)?;
            if index == END_OF_PAGES {
                break;
            }
            // Strictly increasing indices bound the work a crafted file can cause.
            if (index as usize) < next || index as usize >= m.ram.pages() {
                return Err(corrupt(format!("page {index} out of order or outside RAM")));
            }
            next = index as usize + 1;
            z.read_exact(&mut page)
                .map_err(|_| corrupt("page data truncated"))?;
            m.ram.set_page(index as usize, &page);
        }
        m.finish_restore(header)
    }
}
