//! Turning command-line choices into a bootable machine configuration.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ftvm_machine::{Firmware, MachineConfig};

/// The kernel command line the default guest boots with.
pub const DEFAULT_APPEND: &str = "console=ttyS0 earlycon=sbi";

/// Which prepared guest boots when no `--kernel` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GuestKind {
    /// Debian's kernel and ftvm's busybox initramfs, a shell on the console.
    Default,
    /// The default kernel booting the redis root disk: the network from the command line,
    /// redis on port 6379. Without `--net` it gets a switch of its own forwarding
    /// 127.0.0.1:6379 to it; without `--disk`, a scratch copy of the pristine disk.
    Redis,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GuestArgs {
    /// The prepared guest to boot.
    #[arg(long, value_enum, default_value = "default")]
    pub guest: GuestKind,
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
    /// guest writes to the file itself; a flush in the guest is an fsync on the host. Or
    /// `nbd://HOST[:PORT]/EXPORT`: the disk on an NBD server (a storage host).
    #[arg(long)]
    pub disk: Vec<PathBuf>,
    /// No virtio-rng entropy device (the guest then gathers entropy from timing, slowly).
    #[arg(long)]
    pub no_rng: bool,
    /// A virtio-net NIC: `switch:SOCKET` (the socket `ftvm switch` serves) or `tap:NAME` (a TAP
    /// device on the host, e.g. in a bridge; created if absent, which needs root).
    #[arg(long)]
    pub net: Option<String>,
    /// The NIC's MAC address.
    #[arg(long, default_value = "52:54:00:12:34:56", value_parser = parse_mac)]
    pub mac: [u8; 6],
    /// With `--guest redis`: its address on the network, `ADDR/PREFIX` (default 10.0.2.15/24,
    /// behind the switch's gateway), e.g. an address of the LAN its TAP is bridged to.
    #[arg(long)]
    pub guest_ip: Option<String>,
    /// With `--guest redis`: its default gateway (default 10.0.2.2 with the default address,
    /// none with --guest-ip).
    #[arg(long, requires = "guest_ip")]
    pub guest_gw: Option<String>,
    /// With `--guest redis` and no `--net`: the host ports its own switch forwards (default
    /// `tcp:127.0.0.1:6379=10.0.2.15:6379`). Repeatable.
    #[arg(long, conflicts_with = "net")]
    pub forward: Vec<ftvm_net::Forward>,
}

/// Parses `52:54:00:12:34:56`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let bytes: Option<Vec<u8>> = parts
        .iter()
        .map(|p| {
            (p.len() == 2)
                .then(|| u8::from_str_radix(p, 16).ok())
                .flatten()
        })
        .collect();
    match bytes {
        Some(b) if b.len() == 6 && b[0] & 1 == 0 => Ok([b[0], b[1], b[2], b[3], b[4], b[5]]),
        Some(b) if b.len() == 6 => Err(format!("MAC {s} is a multicast address")),
        _ => Err(format!("invalid MAC '{s}' (use e.g. 52:54:00:12:34:56)")),
    }
}

impl GuestArgs {
    /// The default guest with no extra devices but the entropy source.
    pub fn default_guest(append: String, firmware: &str) -> GuestArgs {
        GuestArgs {
            guest: GuestKind::Default,
            kernel: None,
            initrd: None,
            append,
            firmware: firmware.into(),
            memory: 256 << 20,
            disk: Vec::new(),
            no_rng: false,
            net: None,
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            guest_ip: None,
            guest_gw: None,
            forward: Vec::new(),
        }
    }
}

/// The link behind a NIC named `switch:SOCKET` or `tap:NAME`.
pub fn open_nic(net: &str) -> Result<ftvm_net::Port> {
    Ok(if let Some(path) = net.strip_prefix("switch:") {
        ftvm_net::Port::connect(std::path::Path::new(path))?
    } else if let Some(name) = net.strip_prefix("tap:") {
        ftvm_net::Port::tap(name)?
    } else {
        bail!("--net {net}: expected switch:SOCKET or tap:NAME");
    })
}

/// The virtio devices for `args`, slot by slot (disks first, then the entropy source), and the
/// host backends serving them.
pub fn devices(args: &GuestArgs) -> Result<(Vec<ftvm_virtio::Device>, ftvm_host::IoBackends)> {
    let mut devices = Vec::new();
    let mut io = ftvm_host::IoBackends::default();
    for (i, path) in args.disk.iter().enumerate() {
        let (disk, size) = ftvm_host::open_disk(path)?;
        io.disks.insert(devices.len() as u8, disk);
        devices.push(ftvm_virtio::Device::Block(ftvm_virtio::Block::new(
            size,
            &format!("ftvm-disk-{i}"),
            false,
        )));
    }
    if let Some(net) = &args.net {
        let port = open_nic(net)?;
        io.nets.insert(devices.len() as u8, port);
        devices.push(ftvm_virtio::Device::Net(ftvm_virtio::Net { mac: args.mac }));
    }
    if !args.no_rng {
        io.entropy = true;
        devices.push(ftvm_virtio::Device::Rng(ftvm_virtio::Rng::default()));
    }
    Ok((devices, io))
}

/// What `--guest redis` set up around the VM: files to unlink once the devices hold them open.
struct RedisSetup {
    guest: ftvm_image::RedisGuest,
    unlink_when_attached: Vec<PathBuf>,
}

impl RedisSetup {
    /// The scratch disk and the private switch socket are open now: their names can go, so
    /// nothing is left behind however the run ends.
    fn attached(self) {
        for p in self.unlink_when_attached {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Fills in the redis guest's defaults: its command line, its disk (a copy of the pristine
/// one) and, without `--net`, a switch of its own in this process with the port forwards.
fn prepare_redis(args: &mut GuestArgs) -> Result<RedisSetup> {
    let guest = crate::image::redis_guest(false)?;
    let mut unlink = Vec::new();
    if args.append == DEFAULT_APPEND {
        args.append = ftvm_image::REDIS_APPEND.to_string();
        if let Some(ip) = &args.guest_ip {
            if !ip.contains('/') || ip.contains(char::is_whitespace) {
                bail!("--guest-ip {ip}: expected ADDR/PREFIX, e.g. 10.77.0.100/24");
            }
            let words: Vec<String> = args
                .append
                .split(' ')
                .filter(|w| !w.starts_with("ftvm.ip=") && !w.starts_with("ftvm.gw="))
                .map(String::from)
                .chain(std::iter::once(format!("ftvm.ip={ip}")))
                .chain(args.guest_gw.iter().map(|gw| format!("ftvm.gw={gw}")))
                .collect();
            args.append = words.join(" ");
        }
    }
    match args.disk.first() {
        None => {
            let scratch =
                std::env::temp_dir().join(format!("ftvm-redis-{}.img", std::process::id()));
            ftvm_image::copy_root_disk(&guest, &scratch)
                .context("cannot make the redis guest's scratch disk")?;
            eprintln!(
                "ftvm: the redis guest runs on a scratch copy of its disk (--disk PATH keeps one)"
            );
            args.disk.push(scratch.clone());
            unlink.push(scratch);
        }
        Some(path) if !path.exists() && !path.starts_with("nbd:") => {
            ftvm_image::copy_root_disk(&guest, path)
                .with_context(|| format!("cannot create the redis disk {}", path.display()))?;
            eprintln!(
                "ftvm: created {} from the pristine redis disk",
                path.display()
            );
        }
        Some(_) => {}
    }
    if args.net.is_none() {
        let socket = std::env::temp_dir().join(format!("ftvm-switch-{}.sock", std::process::id()));
        let mut cfg = ftvm_net::SwitchConfig::new(socket.clone());
        cfg.forwards = if args.forward.is_empty() {
            let spec = format!(
                "tcp:127.0.0.1:{port}={ip}:{port}",
                port = ftvm_image::REDIS_PORT,
                ip = ftvm_image::REDIS_GUEST_IP
            );
            vec![spec.parse().map_err(anyhow::Error::msg)?]
        } else {
            args.forward.clone()
        };
        let mut switch = ftvm_net::Switch::bind(&cfg).context(
            "cannot start the redis guest's switch (is the port taken? choose one with \
             --forward tcp:127.0.0.1:PORT=10.0.2.15:6379)",
        )?;
        for (f, at) in cfg.forwards.iter().zip(switch.forward_addrs()) {
            eprintln!("ftvm: host {at} -> guest {}", f.guest);
        }
        std::thread::Builder::new()
            .name("switch".into())
            .spawn(move || {
                let never = std::sync::atomic::AtomicBool::new(false);
                if let Err(e) = switch.run(&never) {
                    eprintln!("ftvm: the switch stopped: {e}");
                }
            })
            .context("cannot start the switch thread")?;
        args.net = Some(format!("switch:{}", socket.display()));
        unlink.push(socket);
    }
    Ok(RedisSetup {
        guest,
        unlink_when_attached: unlink,
    })
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
    let mut args = args.clone();
    let redis = match args.guest {
        GuestKind::Redis => Some(prepare_redis(&mut args)?),
        GuestKind::Default => None,
    };
    let args = &args;
    let default = if let Some(r) = &redis {
        Some(r.guest.base.clone())
    } else if args.kernel.is_none() || args.firmware == "opensbi" {
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
    if let Some(r) = redis {
        r.attached();
    }
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

    #[test]
    fn macs() {
        assert_eq!(
            super::parse_mac("52:54:00:12:34:56"),
            Ok([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert!(
            super::parse_mac("53:54:00:12:34:56")
                .unwrap_err()
                .contains("multicast")
        );
        assert!(super::parse_mac("52:54:00:12:34").is_err());
        assert!(super::parse_mac("52:54:00:12:34:5g").is_err());
    }
}
