//! Guest images: fetched from Debian's riscv64 archive, built and cached.
//!
//! STUB: the image work fills this in; the signatures are the contract with the CLI.

use std::path::PathBuf;

/// What /init prints once the guest's userland is up: tests and benchmarks wait for it.
pub const BOOT_MARKER: &str = "FTVM-GUEST-READY";

/// The default guest's files, all in the cache.
#[derive(Debug, Clone)]
pub struct GuestFiles {
    /// Linux `Image` (uncompressed, with the RISC-V header).
    pub kernel: PathBuf,
    /// gzip cpio initramfs with busybox, modules and /init.
    pub initrd: PathBuf,
    /// OpenSBI `fw_dynamic.bin`.
    pub firmware: PathBuf,
    /// e.g. "6.12.107+deb13-riscv64".
    pub kernel_version: String,
}
