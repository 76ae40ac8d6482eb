//! The simulator's guest: `guest/kv.S`, a bare-metal key-value store on the console.
//!
//! The assembled program is kept next to its source so that `ftvm sim` needs no cross tools;
//! a test (`tests/guest.rs`) rebuilds it from the source and checks the two agree.

/// The guest program (an ELF for `Machine::bare_metal`), 8-byte aligned as ELF readers need.
pub const KV_ELF: &[u8] = &ALIGNED.0;

#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);
const ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!("../guest/kv.elf"));

/// Its RAM: the smallest the board takes.
pub const RAM: u64 = 16 << 20;
