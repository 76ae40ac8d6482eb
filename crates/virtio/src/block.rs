//! virtio-blk (device id 2): requests leave as [`BlockOp`]s, completions come back as inputs.
//!
//! IO races: two outstanding requests that touch the same sectors complete in the order the
//! guest issued them, whatever order the backend finishes them in; a finished request waits
//! (`done`) until every earlier overlapping one has been applied. A flush orders against
//! everything issued before it.

use std::collections::BTreeMap;

use ftvm_cpu::Ram;
use serde::{Deserialize, Serialize};

use crate::queue::{Chain, Queue, QueueError};

pub const SECTOR: u64 = 512;
/// The largest request accepted, in bytes: bounds the copy a guest can make the host do.
pub const MAX_REQUEST: u64 = 1 << 20;
/// Segments per request and bytes per segment offered to the driver (their product bounds a
/// request below `MAX_REQUEST`).
const SEG_MAX: u32 = 16;
const SIZE_MAX: u32 = 64 << 10;

const F_SIZE_MAX: u64 = 1 << 1;
const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

/// What the backend must do for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockOp {
    /// Read `len` bytes from byte offset `sector * 512`.
    Read { sector: u64, len: u32 },
    /// Write `data` (copied out of guest memory when the request was taken).
    Write { sector: u64, data: Vec<u8> },
    /// Make every completed write durable.
    Flush,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    chain: Chain,
    op: BlockOp,
    /// Sector range touched; a flush covers everything.
    first: u64,
    end: u64,
    /// The backend's result, waiting for earlier overlapping requests.
    done: Option<(u8, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub capacity_sectors: u64,
    pub read_only: bool,
    /// GET_ID answer (at most 20 bytes).
    pub serial: String,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
}

impl Block {
    pub fn new(capacity_bytes: u64, serial: &str, read_only: bool) -> Block {
        Block {
            capacity_sectors: capacity_bytes / SECTOR,
            read_only,
            serial: serial.chars().take(20).collect(),
            next_id: 0,
            pending: BTreeMap::new(),
        }
    }

    pub fn features(&self) -> u64 {
        F_SIZE_MAX | F_SEG_MAX | F_BLK_SIZE | F_FLUSH | if self.read_only { F_RO } else { 0 }
    }

    pub fn config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 24];
        c[0..8].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        c
    }

    pub fn reset(&mut self) {
        self.pending.clear();
    }

    /// Requests taken but not completed, oldest first (what a new primary reissues).
    pub fn outstanding(&self) -> impl Iterator<Item = (u64, &BlockOp)> {
        self.pending
            .iter()
            .filter(|(_, p)| p.done.is_none())
            .map(|(id, p)| (*id, &p.op))
    }

    /// Takes every available request. Requests the device answers itself (GET_ID, bad ones)
    /// complete at once; the rest are returned for the backend. Returns whether a used buffer
    /// was produced.
    pub fn take_requests(
        &mut self,
        q: &mut Queue,
        ram: &mut Ram,
        out: &mut Vec<(u64, BlockOp)>,
    ) -> Result<bool, QueueError> {
        let mut used = false;
        while let Some(chain) = q.pop(ram)? {
            if let Some(status) = self.take_one(chain.clone(), ram, out) {
                finish(q, ram, &chain, status, &[])?;
                used = true;
            }
        }
        Ok(used)
    }

    /// Returns a status to complete the request with now, or queues it for the backend.
    fn take_one(
        &mut self,
        chain: Chain,
        ram: &mut Ram,
        out: &mut Vec<(u64, BlockOp)>,
    ) -> Option<u8> {
        let header = chain.read_all(ram, 16);
        if header.len() < 16 || chain.writable_len() == 0 {
            return Some(S_IOERR);
        }
        let kind = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let data_in = chain.writable_len() - 1; // the last writable byte is the status
        let (op, first, end) = match kind {
            T_IN => {
                let len = data_in;
                if !self.in_range(sector, len) {
                    return Some(S_IOERR);
                }
                let op = BlockOp::Read {
                    sector,
                    len: len as u32,
                };
                (op, sector, sector + len / SECTOR)
            }
            T_OUT => {
                if self.read_only {
                    return Some(S_IOERR);
                }
                let len = chain.readable_len().saturating_sub(16);
                if !self.in_range(sector, len) {
                    return Some(S_IOERR);
                }
                let all = chain.read_all(ram, (16 + len) as usize);
                let op = BlockOp::Write {
                    sector,
                    data: all[16..].to_vec(),
                };
                (op, sector, sector + len / SECTOR)
            }
            T_FLUSH => (BlockOp::Flush, 0, u64::MAX),
            T_GET_ID => {
                let mut id = self.serial.as_bytes().to_vec();
                id.resize(20, 0);
                let n = (data_in as usize).min(20);
                chain.write_from(ram, 0, &id[..n]);
                return Some(S_OK);
            }
            _ => return Some(S_UNSUPP),
        };
        let id = self.next_id;
        self.next_id += 1;
        out.push((id, op.clone()));
        self.pending.insert(
            id,
            Pending {
                chain,
                op,
                first,
                end,
                done: None,
            },
        );
        None
    }

    fn in_range(&self, sector: u64, len: u64) -> bool {
        len.is_multiple_of(SECTOR)
            && len <= MAX_REQUEST
            && sector
                .checked_add(len / SECTOR)
                .is_some_and(|end| end <= self.capacity_sectors)
    }

    /// The backend finished request `id`. Applies it, and any held completions it unblocks, in
    /// issue order. Returns whether a used buffer was produced; an unknown id (a request
    /// dropped by a device reset) is ignored.
    pub fn complete(
        &mut self,
        q: &mut Queue,
        ram: &mut Ram,
        id: u64,
        status: u8,
        data: Vec<u8>,
    ) -> Result<bool, QueueError> {
        match self.pending.get_mut(&id) {
            Some(p) if p.done.is_none() => p.done = Some((status, data)),
            _ => return Ok(false),
        }
        let mut used = false;
        loop {
            let ready: Option<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| p.done.is_some())
                .map(|(id, _)| *id)
                .find(|id| !self.blocked(*id));
            let Some(id) = ready else { break };
            let Some(p) = self.pending.remove(&id) else {
                break;
            };
            let Some((status, data)) = p.done else { break };
            let data: &[u8] = match p.op {
                BlockOp::Read { len, .. } if status == S_OK => {
                    &data[..data.len().min(len as usize)]
                }
                _ => &[],
            };
            finish(q, ram, &p.chain, status, data)?;
            used = true;
        }
        Ok(used)
    }

    /// Whether an earlier request touching the same sectors has not been applied yet.
    fn blocked(&self, id: u64) -> bool {
        let Some(me) = self.pending.get(&id) else {
            return false;
        };
        self.pending
            .range(..id)
            .any(|(_, p)| p.first < me.end && me.first < p.end)
    }
}

/// Writes read data and the status byte, and returns the chain to the driver.
fn finish(
    q: &mut Queue,
    ram: &mut Ram,
    chain: &Chain,
    status: u8,
    data: &[u8],
) -> Result<(), QueueError> {
    let Some(status_at) = chain.writable_len().checked_sub(1) else {
        return q.push_used(ram, chain.head, 0); // no room even for the status
    };
    let written = chain.write_from(ram, 0, &data[..data.len().min(status_at as usize)]);
    chain.write_from(ram, status_at, &[status]);
    q.push_used(ram, chain.head, written as u32 + 1)
}
