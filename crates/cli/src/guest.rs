//! Turning command-line choices into a bootable machine configuration.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ftvm_machine::{Firmware, MachineConfig};

/// The kernel command line the default guest boots with.
pub const DEFAULT_APPEND: &str = "console=ttyS0 earlycon=sbi";

#[derive(Debug, Clone, clap::Args)]
pub struct GuestArgs {
    /// Linux kernel `Image` to boot (default: Debian's riscv64 kernel, fetched and cached).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initramfs (default: ftvm's busybox initramfs for the default kernel; none for a custom kernel).
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = DEFAULT_APPEND)]
    pub append: String,
    /// Firmware: `opensbi` (Debian's fw_dynamic.bin), `builtin` (ftvm's SBI in Rust), or the path
    /// of an OpenSBI fw_dynamic image.
    #[arg(long, default_value = "opensbi")]
    pub firmware: String,
    /// Guest RAM, e.g. 256M or 1G.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub memory: u64,
    /// A raw disk image for a virtio-blk disk (repeat for more: /dev/vda, /dev/vdb, ...). The
    /// guest writes to the file itself; a flush in the guest is an fsync on the host.
    #[arg(long)]
    pub disk: Vec<PathBuf>,
    /// No virtio-rng entropy device (the guest then gathers entropy from timing, slowly).
    #[arg(long)]
    pub no_rng: bool,
}

impl GuestArgs {
    /// The default guest with no extra devices but the entropy source.
    pub fn default_guest(append: String, firmware: &str) -> GuestArgs {
        GuestArgs {
            kernel: None,
            initrd: None,
            append,
            firmware: firmware.into(),
            memory: 256 << 20,
            disk: Vec::new(),
            no_rng: false,
        }
    }
}

/// The virtio devices for `args`, slot by slot (disks first, then the entropy source), and the
/// host backends serving them.
pub fn devices(args: &GuestArgs) -> Result<(Vec<ftvm_virtio::Device>, ftvm_host::IoBackends)> {
    let mut devices = Vec::new();
    let mut io = ftvm_host::IoBackends::default();
    for (i, path) in args.disk.iter().enumerate() {
        let (disk, size) = ftvm_host::FileDisk::open(path, false)?;
        io.disks.insert(devices.len() as u8, Box::new(disk));
        devices.push(ftvm_virtio::Device::Block(ftvm_virtio::Block::new(
            size,
            &format!("ftvm-disk-{i}"),
            false,
        )));
    }
    if !args.no_rng {
        io.entropy = true;
        devices.push(ftvm_virtio::Device::Rng(ftvm_virtio::Rng::default()));
    }
    Ok((devices, io))
}

/// Parses sizes such as 256M, 1G, 65536.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size '{s}' (use e.g. 256M or 1G)"))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} file {}", path.display()))
}

/// Resolves files (fetching the default guest if needed) into a machine configuration, plus the
/// paths the files came from (kernel, then initrd and firmware if any) and
/// the host backends of its devices.
pub fn resolve(
    args: &GuestArgs,
    extra_append: &str,
) -> Result<(MachineConfig, Vec<String>, ftvm_host::IoBackends)> {
    let default = if args.kernel.is_none() || args.firmware == "opensbi" {
        Some(crate::image::default_guest(false)?)
    } else {
        None
    };
    let kernel_path = match (&args.kernel, &default) {
        (Some(k), _) => k.clone(),
        (None, Some(d)) => d.kernel.clone(),
        (None, None) => unreachable!("the default guest is fetched when no kernel is given"),
    };
    let initrd_path = match (&args.initrd, &args.kernel, &default) {
        (Some(i), _, _) => Some(i.clone()),
        (None, None, Some(d)) => Some(d.initrd.clone()),
        _ => None,
    };
    let firmware_path = match args.firmware.as_str() {
        "builtin" => None,
        "opensbi" => Some(default.as_ref().expect("fetched above").firmware.clone()),
        path => Some(PathBuf::from(path)),
    };
    let firmware = match &firmware_path {
        None => Firmware::Builtin,
        Some(p) => Firmware::OpenSbi(read(p, "firmware")?),
    };
    let paths = std::iter::once(&kernel_path)
        .chain(&initrd_path)
        .chain(&firmware_path)
        .map(|p| {
            std::fs::canonicalize(p)
                .unwrap_or(p.clone())
                .display()
                .to_string()
        })
        .collect();
    if !args.memory.is_multiple_of(2 << 20) {
        bail!("--memory must be a multiple of 2 MiB");
    }
    let mut cmdline = args.append.clone();
    if !extra_append.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(extra_append);
    }
    let (virtio, io) = devices(args)?;
    let config = MachineConfig {
        ram_size: args.memory,
        firmware,
        kernel: read(&kernel_path, "kernel")?,
        initrd: initrd_path
            .as_ref()
            .map(|p| read(p, "initrd"))
            .transpose()?,
        cmdline,
        virtio,
    };
    Ok((config, paths, io))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }
}
