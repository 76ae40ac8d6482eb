//! The hart's view of everything that is not RAM: device registers (MMIO).

/// A device access that nothing answers, or that the device refuses: the hart raises an access
/// fault for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusFault;

/// Physical address space outside RAM. Implemented by the machine (`ftvm-machine`).
///
/// After any MMIO access the hart ends its current batch once the instruction completes, so the
/// machine can re-evaluate interrupt lines and timer deadlines: devices never need to call back
/// into the hart.
pub trait Bus {
    /// Read `size` bytes (1, 2, 4 or 8) at physical address `paddr`. `mtime` is the current value of
    /// the machine timer, for the CLINT.
    fn mmio_read(&mut self, paddr: u64, size: u8, mtime: u64) -> Result<u64, BusFault>;
    /// Write the low `size` bytes of `value` at physical address `paddr`.
    fn mmio_write(&mut self, paddr: u64, size: u8, value: u64, mtime: u64) -> Result<(), BusFault>;
}
