//! Guest RAM: one contiguous block with per-page dirty flags.
//!
//! Every store through [`Ram`] marks its page, so state hashes rehash only touched pages and live
//! migration copies only pages written since the last round. The flags are a byte per page with
//! one bit per consumer, so one consumer taking its set does not clear another's.

use serde::{Deserialize, Serialize};

pub const PAGE_SIZE: usize = 4096;
pub const PAGE_SHIFT: u32 = 12;

/// Consumers of the dirty flags. Each owns one bit of a page's flag byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirtyConsumer {
    /// The incremental state hash.
    Hash = 0,
    /// Live clone / migration pre-copy rounds.
    Migration = 1,
    /// The hart's decoded-instruction cache: a store to a page holding decoded code invalidates it.
    CodeCache = 2,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Ram {
    base: u64,
    #[serde(skip)]
    data: Vec<u8>,
    #[serde(skip)]
    dirty: Vec<u8>,
    /// Pages that held decoded code and were written since the hart last looked: the hart drops
    /// its decoded blocks for them. Writes from outside the hart (devices, restore) land here too.
    #[serde(skip)]
    code_written: Vec<u32>,
}

impl std::fmt::Debug for Ram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Ram {{ base: {:#x}, size: {:#x} }}",
            self.base,
            self.data.len()
        )
    }
}

impl Ram {
    /// Zeroed RAM of `size` bytes (a multiple of the page size) at physical address `base`.
    /// The host commits pages lazily, so an untouched guest page costs nothing.
    pub fn new(base: u64, size: usize) -> Self {
        assert!(
            size.is_multiple_of(PAGE_SIZE),
            "RAM size must be page aligned"
        );
        let pages = size / PAGE_SIZE;
        // Hash and migration start with everything dirty: nothing has been hashed or sent yet.
        Ram {
            base,
            data: vec![0; size],
            dirty: vec![0b11; pages],
            code_written: Vec::new(),
        }
    }

    #[inline]
    pub fn base(&self) -> u64 {
        self.base
    }

    #[inline]
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn pages(&self) -> usize {
        self.dirty.len()
    }

    /// The offset into RAM of `len` bytes at `paddr`, if they lie wholly inside RAM.
    #[inline]
    pub fn offset(&self, paddr: u64, len: u64) -> Option<usize> {
        let off = paddr.wrapping_sub(self.base);
        if off < self.data.len() as u64 && len <= self.data.len() as u64 - off {
            Some(off as usize)
        } else {
            None
        }
    }

    #[inline]
    pub fn contains(&self, paddr: u64, len: u64) -> bool {
        self.offset(paddr, len).is_some()
    }

    /// Loads `size` (1, 2, 4, 8) little-endian bytes at RAM offset `off`. The caller checked bounds.
    #[inline(always)]
    pub fn load_at(&self, off: usize, size: u8) -> u64 {
        let d = &self.data;
        match size {
            1 => d[off] as u64,
            2 => u16::from_le_bytes([d[off], d[off + 1]]) as u64,
            4 => u32::from_le_bytes(d[off..off + 4].try_into().unwrap()) as u64,
            _ => u64::from_le_bytes(d[off..off + 8].try_into().unwrap()),
        }
    }

    /// Stores the low `size` bytes of `value` at RAM offset `off` and marks the page(s) dirty.
    /// Returns true if a touched page held decoded code (the caller must invalidate its cache).
    #[inline(always)]
    pub fn store_at(&mut self, off: usize, size: u8, value: u64) -> bool {
        match size {
            1 => self.data[off] = value as u8,
            2 => self.data[off..off + 2].copy_from_slice(&(value as u16).to_le_bytes()),
            4 => self.data[off..off + 4].copy_from_slice(&(value as u32).to_le_bytes()),
            _ => self.data[off..off + 8].copy_from_slice(&value.to_le_bytes()),
        }
        let first = off >> PAGE_SHIFT;
        let last = (off + size as usize - 1) >> PAGE_SHIFT;
        let mut code = self.mark(first);
        if last != first {
            code |= self.mark(last);
        }
        code
    }

    #[inline(always)]
    fn mark(&mut self, page: usize) -> bool {
        let flags = &mut self.dirty[page];
        let had_code = *flags & (1 << DirtyConsumer::CodeCache as u8) != 0;
        *flags = 0b11;
        if had_code {
            self.code_written.push(page as u32);
        }
        had_code
    }

    /// Pages holding decoded code that were written since the last call (each reported once:
    /// its code mark is cleared until the hart decodes from it again).
    pub fn take_code_written(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.code_written)
    }

    /// Whether code pages were written since [`Ram::take_code_written`].
    #[inline(always)]
    pub fn code_was_written(&self) -> bool {
        !self.code_written.is_empty()
    }

    /// Physical read; `None` if any byte is outside RAM.
    pub fn read(&self, paddr: u64, size: u8) -> Option<u64> {
        self.offset(paddr, size as u64)
            .map(|off| self.load_at(off, size))
    }

    /// Physical write; `None` if any byte is outside RAM. See [`Ram::store_at`] for the result.
    pub fn write(&mut self, paddr: u64, size: u8, value: u64) -> Option<bool> {
        let off = self.offset(paddr, size as u64)?;
        Some(self.store_at(off, size, value))
    }

    /// Copies `bytes` into RAM at `paddr` (image loading, device completions).
    pub fn write_bytes(&mut self, paddr: u64, bytes: &[u8]) -> Option<()> {
        let off = self.offset(paddr, bytes.len() as u64)?;
        self.data[off..off + bytes.len()].copy_from_slice(bytes);
        if !bytes.is_empty() {
            for page in (off >> PAGE_SHIFT)..=((off + bytes.len() - 1) >> PAGE_SHIFT) {
                self.mark(page);
            }
        }
        Some(())
    }

    /// Copies RAM at `paddr` into `out` (device requests reading guest buffers).
    pub fn read_bytes(&self, paddr: u64, out: &mut [u8]) -> Option<()> {
        let off = self.offset(paddr, out.len() as u64)?;
        out.copy_from_slice(&self.data[off..off + out.len()]);
        Some(())
    }

    /// The bytes of page `page` (by index from the base).
    pub fn page(&self, page: usize) -> &[u8] {
        &self.data[page * PAGE_SIZE..(page + 1) * PAGE_SIZE]
    }

    /// Overwrites page `page` (snapshot restore, migration) and marks it dirty.
    pub fn set_page(&mut self, page: usize, bytes: &[u8]) {
        self.data[page * PAGE_SIZE..(page + 1) * PAGE_SIZE].copy_from_slice(bytes);
        self.mark(page);
    }

    /// The whole of RAM, read-only.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// Marks that `page` holds decoded instructions, so the next store to it reports back.
    #[inline]
    pub fn mark_code(&mut self, page: usize) {
        self.dirty[page] |= 1 << DirtyConsumer::CodeCache as u8;
    }

    /// Whether `page` was written since `consumer` last took it; takes it (clears the bit).
    #[inline]
    pub fn take_page_dirty(&mut self, consumer: DirtyConsumer, page: usize) -> bool {
        let bit = 1u8 << consumer as u8;
        let was = self.dirty[page] & bit != 0;
        self.dirty[page] &= !bit;
        was
    }

    /// Pages written since `consumer` last took them.
    pub fn count_dirty(&self, consumer: DirtyConsumer) -> usize {
        let bit = 1u8 << consumer as u8;
        self.dirty.iter().filter(|&&f| f & bit != 0).count()
    }

    /// Marks every page dirty for `consumer` (a live clone starts by sending everything).
    pub fn mark_all_dirty(&mut self, consumer: DirtyConsumer) {
        let bit = 1u8 << consumer as u8;
        for f in &mut self.dirty {
            *f |= bit;
        }
    }

    /// Calls `f` with each page dirty for `consumer`, clearing that consumer's bit.
    pub fn take_dirty(&mut self, consumer: DirtyConsumer, mut f: impl FnMut(usize, &[u8])) {
        let bit = 1u8 << consumer as u8;
        for (page, flags) in self.dirty.iter_mut().enumerate() {
            if *flags & bit != 0 {
                *flags &= !bit;
                f(page, &self.data[page * PAGE_SIZE..(page + 1) * PAGE_SIZE]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let mut ram = Ram::new(0x8000_0000, 2 * PAGE_SIZE);
        assert_eq!(ram.read(0x7fff_ffff, 1), None);
        assert_eq!(ram.read(0x8000_1ffd, 4), None);
        assert_eq!(ram.write(u64::MAX, 8, 0), None);
        assert_eq!(
            ram.write(0x8000_1ff8, 8, 0x1122_3344_5566_7788),
            Some(false)
        );
        assert_eq!(ram.read(0x8000_1ff8, 8), Some(0x1122_3344_5566_7788));
    }

    #[test]
    fn store_across_pages_marks_both() {
        let mut ram = Ram::new(0, 2 * PAGE_SIZE);
        ram.take_dirty(DirtyConsumer::Hash, |_, _| {});
        ram.mark_code(1);
        assert_eq!(ram.write(PAGE_SIZE as u64 - 2, 4, u64::MAX), Some(true));
        let mut seen = vec![];
        ram.take_dirty(DirtyConsumer::Hash, |p, _| seen.push(p));
        assert_eq!(seen, vec![0, 1]);
    }
}
