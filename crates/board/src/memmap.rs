//! Physical memory map, as on QEMU's virt board.

pub const TEST_BASE: u64 = 0x0010_0000;
pub const TEST_SIZE: u64 = 0x1000;
pub const CLINT_BASE: u64 = 0x0200_0000;
pub const CLINT_SIZE: u64 = 0x1_0000;
pub const PLIC_BASE: u64 = 0x0c00_0000;
pub const PLIC_SIZE: u64 = 0x60_0000;
pub const UART0_BASE: u64 = 0x1000_0000;
pub const UART0_SIZE: u64 = 0x100;
pub const UART0_IRQ: u32 = 10;
/// virtio-mmio transports: slot `i` at `VIRTIO_BASE + i * VIRTIO_STRIDE`, interrupt `1 + i`.
pub const VIRTIO_BASE: u64 = 0x1000_1000;
pub const VIRTIO_STRIDE: u64 = 0x1000;
pub const VIRTIO_SLOTS: u32 = 8;
pub const PLIC_SOURCES: u32 = 96;
pub const RAM_BASE: u64 = 0x8000_0000;
pub const DEFAULT_RAM_SIZE: u64 = 256 << 20;
