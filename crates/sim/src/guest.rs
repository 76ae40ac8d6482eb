//! The simulator's guest: `guest/kv.S`, a bare-metal key-value store on the console whose
//! values live on a virtio disk (key k in sector k).
//!
//! The assembled program is kept next to its source so that `ftvm sim` needs no cross tools;
//! a test (`tests/guest.rs`) rebuilds it from the source and checks the two agree.

use ftvm_machine::Machine;
use ftvm_virtio::{Block, Device, SECTOR};

/// The guest program (an ELF for `Machine::bare_metal`), 8-byte aligned as ELF readers need.
pub const KV_ELF: &[u8] = &ALIGNED.0;

#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);
const ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!("../guest/kv.elf"));

/// Its RAM: the smallest the board takes.
pub const RAM: u64 = 16 << 20;

/// Its disk, in virtio slot 0: a sector for each of the 256 keys.
pub const DISK_SLOT: u8 = 0;
pub const DISK_BYTES: u64 = 256 * SECTOR;

/// The guest's machine at its first instruction.
pub fn machine() -> Machine {
    let disk = Device::Block(Block::new(DISK_BYTES, "ftvm-sim", false));
    Machine::bare_metal_with(KV_ELF, RAM, vec![disk]).expect("the guest loads")
}
