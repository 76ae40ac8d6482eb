//! The state hash: one 128-bit value over registers, CSRs, devices and all of RAM.
//!
//! Cheap enough to put in every log checkpoint: RAM is hashed per page, and only pages stored to
//! since the last hash are rehashed (the RAM's dirty flags). Two machines with equal hashes are
//! in the same state, which is how replay and FT check they have not diverged.

use ftvm_cpu::Ram;
use ftvm_cpu::memory::DirtyConsumer;
use xxhash_rust::xxh3::{Xxh3, xxh3_64, xxh3_128};

use crate::machine::Machine;

/// Per-page hashes of RAM, kept current lazily.
#[derive(Default)]
pub struct PageHashes {
    hashes: Vec<u64>,
}

impl PageHashes {
    /// Brings every page hash up to date and returns the hash of RAM as a whole.
    pub fn update(&mut self, ram: &mut Ram) -> u128 {
        if self.hashes.len() != ram.pages() {
            self.hashes = vec![0; ram.pages()];
        }
        let hashes = &mut self.hashes;
        ram.take_dirty(DirtyConsumer::Hash, |page, bytes| {
            hashes[page] = xxh3_64(bytes)
        });
        let words: Vec<u8> = self.hashes.iter().flat_map(|h| h.to_le_bytes()).collect();
        xxh3_128(&words)
    }
}

/// A state hash, printed as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct StateHash(pub u128);

impl std::fmt::Display for StateHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl Machine {
    /// The hash of the whole machine state at this instruction count.
    pub fn state_hash(&mut self) -> StateHash {
        let ram = self.page_hashes.update(&mut self.ram);
        let mut h = Xxh3::new();
        // postcard of plain data is a deterministic encoding: same state, same bytes.
        h.update(&postcard::to_stdvec(self.hart.state()).expect("hart state serialises"));
        h.update(&postcard::to_stdvec(&self.dev).expect("device state serialises"));
        h.update(&ram.to_le_bytes());
        StateHash(h.digest128())
    }
}
