//! Live clone: a running machine's state copied out in pieces while it keeps running, and
//! a machine assembled from those pieces on the other side.
//!
//! The sender sweeps RAM for pages written since they were last taken (the `Migration` bit
//! of the dirty flags, set by CPU stores and device writes alike) and sends them while the
//! guest runs; the rounds shrink until the rest is small, then, with the machine paused between
//! two instructions, the last dirty pages and the CPU and device state go out. The receiver
//! ends with exactly the sender's machine, which the state hash proves.
//!
//! Page batches are untrusted input on the receiving side: every index and length is checked.

use ftvm_cpu::{DirtyConsumer, PAGE_SIZE};

use crate::hash::StateHash;
use crate::machine::Machine;
use crate::snapshot::{Header, SnapshotError, corrupt};

/// A page record's index has this bit set when the page is all zeros (no data follows).
const ZERO_PAGE: u32 = 1 << 31;

/// The size of one page record in a batch: index plus data.
pub const PAGE_RECORD: usize = 4 + PAGE_SIZE;

impl Machine {
    /// Pages of guest RAM.
    pub fn ram_pages(&self) -> usize {
        self.ram.pages()
    }

    /// Starts a live clone: every page counts as not yet sent.
    pub fn begin_transfer(&mut self) {
        self.ram.mark_all_dirty(DirtyConsumer::Migration);
    }

    /// Pages written since they were last taken for a transfer.
    pub fn transfer_dirty_pages(&self) -> usize {
        self.ram.count_dirty(DirtyConsumer::Migration)
    }

    /// Appends page records to `batch` for the pages at `*cursor` and after that were written
    /// since last taken, until `max_pages` were taken or RAM ends; `*cursor` moves past the
    /// pages looked at. Returns how many were taken.
    pub fn take_transfer_pages(
        &mut self,
        cursor: &mut usize,
        max_pages: usize,
        batch: &mut Vec<u8>,
    ) -> usize {
        let mut taken = 0;
        while *cursor < self.ram.pages() && taken < max_pages {
            let page = *cursor;
            *cursor += 1;
            if !self.ram.take_page_dirty(DirtyConsumer::Migration, page) {
                continue;
            }
            let bytes = self.ram.page(page);
            if bytes.iter().all(|&b| b == 0) {
                batch.extend_from_slice(&(page as u32 | ZERO_PAGE).to_le_bytes());
            } else {
                batch.extend_from_slice(&(page as u32).to_le_bytes());
                batch.extend_from_slice(bytes);
            }
            taken += 1;
        }
        taken
    }

    /// Everything but RAM (CPU, devices, the state hash that RAM and all must give): the last
    /// piece of a live clone, taken with the machine paused; and that state hash.
    pub fn transfer_state(&mut self) -> (Vec<u8>, StateHash) {
        let header = self.header();
        let hash = header.state_hash;
        (
            postcard::to_stdvec(&header).expect("machine state serialises"),
            hash,
        )
    }
}

/// A machine being assembled from a live clone's pieces.
pub struct Incoming {
    m: Machine,
    pages: u64,
}

impl Incoming {
    /// An empty machine with `ram_size` bytes of RAM (checked like a snapshot's).
    pub fn new(ram_size: u64) -> Result<Incoming, SnapshotError> {
        crate::boot::check_ram_size(ram_size).map_err(|e| corrupt(e.to_string()))?;
        Ok(Incoming {
            m: Machine::empty(ram_size),
            pages: 0,
        })
    }

    /// Page records received so far (pages sent again count again).
    pub fn pages_received(&self) -> u64 {
        self.pages
    }

    /// Applies a batch of page records made by [`Machine::take_transfer_pages`].
    pub fn apply_batch(&mut self, mut batch: &[u8]) -> Result<(), SnapshotError> {
        while !batch.is_empty() {
            let Some((index, rest)) = batch.split_first_chunk::<4>() else {
                return Err(corrupt("a page record cut short"));
            };
            let index = u32::from_le_bytes(*index);
            let page = (index & !ZERO_PAGE) as usize;
            if page >= self.m.ram.pages() {
                return Err(corrupt(format!("page {page} outside RAM")));
            }
            if index & ZERO_PAGE != 0 {
                self.m.ram.set_page(page, &[0; PAGE_SIZE]);
                batch = rest;
            } else {
                let Some((bytes, rest)) = rest.split_at_checked(PAGE_SIZE) else {
                    return Err(corrupt("page data cut short"));
                };
                self.m.ram.set_page(page, bytes);
                batch = rest;
            }
            self.pages += 1;
        }
        Ok(())
    }

    /// Completes the machine with the sender's final state; its state hash must match.
    pub fn finish(self, state: &[u8]) -> Result<Machine, SnapshotError> {
        let header: Header =
            postcard::from_bytes(state).map_err(|e| corrupt(format!("machine state: {e}")))?;
        if header.ram_size != self.m.ram.size() {
            return Err(corrupt(format!(
                "the state is for {} bytes of RAM, the pages for {}",
                header.ram_size,
                self.m.ram.size()
            )));
        }
        self.m.finish_restore(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy_machine() -> Machine {
        let mut m = Machine::empty(16 << 20);
        for i in 0..200u64 {
            m.ram
                .write(0x8000_0000 + i * 9000, 8, i * 0x0101_0101)
                .unwrap();
        }
        m
    }

    /// Sends everything dirty in one sweep into `inc`.
    fn sweep(m: &mut Machine, inc: &mut Incoming) -> usize {
        let (mut cursor, mut batch, mut n) = (0, Vec::new(), 0);
        while cursor < m.ram_pages() {
            n += m.take_transfer_pages(&mut cursor, 64, &mut batch);
            inc.apply_batch(&batch).unwrap();
            batch.clear();
        }
        n
    }

    #[test]
    fn rounds_then_state_rebuild_the_same_machine() {
        let mut m = busy_machine();
        m.begin_transfer();
        let mut inc = Incoming::new(16 << 20).unwrap();
        assert_eq!(sweep(&mut m, &mut inc), m.ram_pages());
        // The guest keeps writing: only those pages go again, a zeroed page included.
        m.ram.write(0x8000_0000 + 5 * 9000, 8, 0).unwrap();
        m.ram.write(0x8010_0000, 4, 77).unwrap();
        assert_eq!(m.transfer_dirty_pages(), 2);
        assert_eq!(sweep(&mut m, &mut inc), 2);
        let (state, hash) = m.transfer_state();
        assert_eq!(hash, m.state_hash());
        let mut clone = inc.finish(&state).unwrap();
        assert_eq!(clone.state_hash(), hash);
    }

    #[test]
    fn a_missed_page_is_caught_by_the_state_hash() {
        let mut m = busy_machine();
        m.begin_transfer();
        let mut inc = Incoming::new(16 << 20).unwrap();
        sweep(&mut m, &mut inc);
        m.ram.write(0x8000_0010, 8, 1).unwrap();
        // The last round is skipped: the clone must refuse to finish.
        let err = inc.finish(&m.transfer_state().0).err().expect("diverged");
        assert!(err.to_string().contains("state hash"), "{err}");
    }

    #[test]
    fn bad_batches_are_errors() {
        let mut inc = Incoming::new(16 << 20).unwrap();
        assert!(inc.apply_batch(&[1, 2]).is_err());
        assert!(inc.apply_batch(&u32::MAX.to_le_bytes()).is_err());
        assert!(inc.apply_batch(&5u32.to_le_bytes()).is_err());
        let mut zero = (3u32 | ZERO_PAGE).to_le_bytes().to_vec();
        inc.apply_batch(&zero).unwrap();
        zero.push(0);
        assert!(inc.apply_batch(&zero).is_err());
        assert!(inc.finish(b"junk").is_err());
        assert!(Incoming::new(12345).is_err());
    }
}
