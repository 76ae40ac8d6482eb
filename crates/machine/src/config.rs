//! How a machine is put together and what it boots.

use ftvm_board::memmap;

/// What runs first.
#[derive(Debug, Clone)]
pub enum Firmware {
    /// Real M-mode firmware loaded at the start of RAM and entered with the OpenSBI fw_dynamic
    /// protocol (Debian's `fw_dynamic.bin`).
    OpenSbi(Vec<u8>),
    /// ftvm's SBI in Rust: the kernel starts in S-mode and its ECALLs are answered by the machine.
    /// Faster, since timer interrupts need no M-mode round trip.
    Builtin,
}

/// Everything needed to boot a Linux guest.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    pub ram_size: u64,
    pub firmware: Firmware,
    /// A Linux `Image` (flat binary with the RISC-V header).
    pub kernel: Vec<u8>,
    pub initrd: Option<Vec<u8>>,
    pub cmdline: String,
    /// virtio-mmio devices, in slot order (slot `i` at `0x1000_1000 + 0x1000 * i`, PLIC
    /// source `1 + i`); at most `memmap::VIRTIO_SLOTS`.
    pub virtio: Vec<ftvm_virtio::Device>,
}

impl MachineConfig {
    pub fn new(kernel: Vec<u8>) -> Self {
        MachineConfig {
            ram_size: memmap::DEFAULT_RAM_SIZE,
            firmware: Firmware::Builtin,
            kernel,
            initrd: None,
            cmdline: String::new(),
            virtio: Vec::new(),
        }
    }
}

/// The ISA string advertised in the device tree: what the hart implements.
pub const ISA: &str = "rv64imafdc_zicsr_zifencei_zicntr_zihpm_zihintpause";
