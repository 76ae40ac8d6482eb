//! The board around the hart, modelled on QEMU's `virt` so Debian's kernel needs no new drivers.
//!
//! Job: device register models (CLINT, PLIC, 16550 UART, test/syscon), the device tree the
//! firmware and kernel read, and parsers for what gets loaded (Linux `Image`, ELF, fw_dynamic).
//! Invariants: devices are plain state machines with no threads, clocks or I/O of their own: time
//! comes in as an argument, output bytes and actions go out as return values. Every register value
//! comes from the guest and is untrusted: bad offsets or sizes give `None` (an access fault), never
//! a panic. All device state is serde-serialisable for snapshots.

pub mod clint;
pub mod fdt;
pub mod loader;
pub mod memmap;
pub mod plic;
pub mod test_device;
pub mod uart;
