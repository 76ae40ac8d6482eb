//! Where firmware, kernel, initrd and device tree go in RAM, and the hart's state at reset.
//!
//! The layout follows QEMU's virt board so that the same kernel and firmware behave the same on
//! both: firmware at the start of RAM, the kernel at RAM + text_offset (2 MiB), the initrd at half
//! of RAM (at most 128 MiB in), the device tree in the last 2 MiB.

use ftvm_board::fdt::{self, FdtConfig};
use ftvm_board::loader;
use ftvm_board::memmap::*;
use ftvm_cpu::clock::TIMEBASE_HZ;
use ftvm_cpu::{Hart, Privilege, Ram};

use crate::BootError;
use crate::config::{Firmware, ISA, MachineConfig};

const MIB: u64 = 1 << 20;

/// CSR numbers used to set up the hart for the built-in SBI.
mod csr {
    pub const MSTATUS: u16 = 0x300;
    pub const MEDELEG: u16 = 0x302;
    pub const MIDELEG: u16 = 0x303;
    pub const MCOUNTEREN: u16 = 0x306;
    pub const SCOUNTEREN: u16 = 0x106;
}

pub(crate) fn check_ram_size(size: u64) -> Result<(), BootError> {
    if !(16 * MIB..=64 * 1024 * MIB).contains(&size) || !size.is_multiple_of(2 * MIB) {
        return Err(BootError::Invalid(format!(
            "memory size {size} bytes: must be a multiple of 2 MiB between 16 MiB and 64 GiB"
        )));
    }
    Ok(())
}

fn place(ram: &mut Ram, what: &str, addr: u64, bytes: &[u8]) -> Result<(), BootError> {
    ram.write_bytes(addr, bytes).ok_or_else(|| {
        BootError::Invalid(format!(
            "{what} ({} bytes at {addr:#x}) does not fit in RAM ({} MiB)",
            bytes.len(),
            ram.size() / MIB
        ))
    })
}

fn device_tree(
    ram_size: u64,
    bootargs: &str,
    initrd: Option<(u64, u64)>,
) -> Result<Vec<u8>, BootError> {
    fdt::build(&FdtConfig {
        ram_base: RAM_BASE,
        ram_size,
        bootargs: bootargs.to_string(),
        initrd,
        hartid: 0,
        timebase_hz: TIMEBASE_HZ,
        isa: ISA.to_string(),
        virtio: (0..VIRTIO_SLOTS)
            .rev()
            .map(|i| (VIRTIO_BASE + i as u64 * VIRTIO_STRIDE, 1 + i))
            .collect(),
    })
    .map_err(|e| BootError::Invalid(format!("device tree: {e}")))
}

/// The device tree's address: the last 2 MiB-aligned spot that holds it.
fn fdt_addr(ram_size: u64, len: usize) -> Result<u64, BootError> {
    if len as u64 > MIB {
        return Err(BootError::Invalid("device tree larger than 1 MiB".into()));
    }
    Ok(RAM_BASE + ram_size - 2 * MIB)
}

/// Rejects an initrd the kernel could not unpack, before booting rather than after a long boot.
fn check_initrd(bytes: &[u8]) -> Result<(), BootError> {
    const MAGICS: &[&[u8]] = &[
        b"070701",                          // cpio newc
        b"070702",                          // cpio newc with checksums
        b"070707",                          // cpio odc
        &[0x1f, 0x8b],                      // gzip
        &[0xfd, b'7', b'z', b'X', b'Z', 0], // xz
        &[0x28, 0xb5, 0x2f, 0xfd],          // zstd
        &[0x02, 0x21, 0x4c, 0x18],          // lz4 (legacy frame)
        b"BZh",                             // bzip2
        &[0x5d, 0, 0],                      // lzma
        &[0x89, b'L', b'Z', b'O'],          // lzo
    ];
    if MAGICS.iter().any(|m| bytes.starts_with(m)) {
        Ok(())
    } else {
        Err(BootError::Invalid(
            "initrd is neither a cpio archive nor a compressed archive the kernel can unpack"
                .into(),
        ))
    }
}

/// Loads a Linux guest and sets the hart to enter its firmware (or the kernel directly).
pub fn load_linux(cfg: &MachineConfig, ram: &mut Ram, hart: &mut Hart) -> Result<(), BootError> {
    check_ram_size(cfg.ram_size)?;
    let image = loader::parse_linux_image(&cfg.kernel)
        .map_err(|e| BootError::Invalid(format!("kernel: {e}")))?;
    let kernel_addr = RAM_BASE + image.text_offset.max(2 * MIB);
    let kernel_end = kernel_addr + image.image_size.max(cfg.kernel.len() as u64);
    place(ram, "kernel", kernel_addr, &cfg.kernel)?;

    let initrd = match &cfg.initrd {
        Some(bytes) => {
            check_initrd(bytes)?;
            let start = RAM_BASE + (cfg.ram_size / 2).min(128 * MIB);
            let end = start + bytes.len() as u64;
            if start < kernel_end || end > RAM_BASE + cfg.ram_size - 2 * MIB {
                return Err(BootError::Invalid(format!(
                    "initrd of {} bytes does not fit between the kernel and the device tree in \
                     {} MiB of RAM: give the machine more memory",
                    bytes.len(),
                    cfg.ram_size / MIB
                )));
            }
            place(ram, "initrd", start, bytes)?;
            Some((start, end))
        }
        None => None,
    };

    let dtb = device_tree(cfg.ram_size, &cfg.cmdline, initrd)?;
    let dtb_addr = fdt_addr(cfg.ram_size, dtb.len())?;
    place(ram, "device tree", dtb_addr, &dtb)?;

    hart.set_x(10, 0); // a0: hart id
    hart.set_x(11, dtb_addr); // a1: device tree
    match &cfg.firmware {
        Firmware::OpenSbi(fw) => {
            if fw.is_empty() {
                return Err(BootError::Invalid("firmware file is empty".into()));
            }
            if RAM_BASE + fw.len() as u64 > kernel_addr {
                return Err(BootError::Invalid(format!(
                    "firmware of {} bytes overlaps the kernel at {kernel_addr:#x}",
                    fw.len()
                )));
            }
            place(ram, "firmware", RAM_BASE, fw)?;
            // fw_dynamic: a2 points at the info block telling OpenSBI where the kernel is.
            let info = loader::fw_dynamic_info(kernel_addr, 1, 0);
            let info_addr = dtb_addr - 4096;
            place(ram, "fw_dynamic info", info_addr, &info)?;
            hart.set_x(12, info_addr);
            hart.set_pc(RAM_BASE);
            hart.set_privilege(Privilege::Machine);
        }
        Firmware::Builtin => {
            enter_supervisor(hart);
            hart.set_pc(kernel_addr);
        }
    }
    Ok(())
}

/// Sets the hart up as OpenSBI would leave it for the kernel, with the machine answering ECALLs.
fn enter_supervisor(hart: &mut Hart) {
    // Everything but ECALLs from S/M goes to the kernel directly.
    hart.set_csr(csr::MEDELEG, 0xb1ff);
    // Supervisor software, timer and external interrupts.
    hart.set_csr(csr::MIDELEG, 0x222);
    // cycle, time and instret readable from S-mode.
    hart.set_csr(csr::MCOUNTEREN, 0x7);
    // `time` readable from U-mode too: the vDSO's clock_gettime reads it. Under OpenSBI, Linux's
    // SBI PMU driver grants this; the built-in SBI has no PMU extension, so it starts granted.
    hart.set_csr(csr::SCOUNTEREN, 0x2);
    hart.set_csr(csr::MSTATUS, 0);
    hart.sbi_intercept = true;
    hart.set_privilege(Privilege::Supervisor);
}

/// Loads a bare-metal ELF and starts it in M-mode as QEMU's `-bios none -kernel` does.
pub fn load_bare_metal(elf: &[u8], ram: &mut Ram, hart: &mut Hart) -> Result<(), BootError> {
    check_ram_size(ram.size())?;
    let image = loader::parse_elf(elf).map_err(|e| BootError::Invalid(format!("ELF: {e}")))?;
    for seg in &image.segments {
        if seg.memsz > ram.size() {
            return Err(BootError::Invalid(format!(
                "ELF segment of {} bytes at {:#x} is larger than RAM",
                seg.memsz, seg.paddr
            )));
        }
        let mut bytes = seg.data.clone();
        bytes.resize(seg.memsz.max(seg.data.len() as u64) as usize, 0);
        place(ram, "ELF segment", seg.paddr, &bytes)?;
    }
    let dtb = device_tree(ram.size(), "", None)?;
    let dtb_addr = fdt_addr(ram.size(), dtb.len())?;
    place(ram, "device tree", dtb_addr, &dtb)?;
    hart.set_x(10, 0);
    hart.set_x(11, dtb_addr);
    hart.set_pc(image.entry);
    hart.set_privilege(Privilege::Machine);
    Ok(())
}
