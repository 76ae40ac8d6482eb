//! ftvm's initramfs: busybox, the virtio and ext4 modules, and an /init that prints the marker.

use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::cpio::CpioWriter;
use crate::{BOOT_MARKER, ImageError};

/// Modules to load, in dependency order (the kernel package ships no modules.dep).
pub const MODULES: &[(&str, &str)] = &[
    ("crc32c_generic", "crypto/crc32c_generic"),
    ("crc16", "lib/crc16"),
    ("mbcache", "fs/mbcache"),
    ("jbd2", "fs/jbd2/jbd2"),
    ("ext4", "fs/ext4/ext4"),
    ("virtio_mmio", "drivers/virtio/virtio_mmio"),
    ("virtio_blk", "drivers/block/virtio_blk"),
    ("failover", "net/core/failover"),
    ("net_failover", "drivers/net/net_failover"),
    ("virtio_net", "drivers/net/virtio_net"),
    ("virtio-rng", "drivers/char/hw_random/virtio-rng"),
];

fn init_script(modules: &[&str]) -> String {
    let insmods: String = modules
        .iter()
        .map(|m| {
            format!(
                "insmod /lib/modules/{m}.ko 2>/dev/null || echo \"init: module {m} not loaded\"\n"
            )
        })
        .collect();
    format!(
        r#"#!/bin/busybox sh
# ftvm initramfs init: mount the kernel filesystems, load the modules, print the marker, then
# power off (ftvm.init=poweroff) or give the console a shell.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
{insmods}echo {BOOT_MARKER}
case " $(cat /proc/cmdline) " in
  *" ftvm.init=poweroff "*) poweroff -f ;;
esac
cd /root
HOME=/root setsid cttyhack sh -l
poweroff -f
"#
    )
}

/// Builds the gzip-compressed cpio initramfs from an unpacked busybox-static and kernel package.
pub fn build_initramfs(busybox: &[u8], modules_dir: &Path) -> Result<Vec<u8>, ImageError> {
    let mut w = CpioWriter::new();
    for d in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "root",
        "etc",
        "lib",
        "lib/modules",
        "mnt",
        "run",
    ] {
        w.dir(d);
    }
    w.file("bin/busybox", 0o755, busybox);
    w.symlink("bin/sh", "busybox");
    let mut present = vec![];
    for (name, rel) in MODULES {
        let path = modules_dir.join(format!("{rel}.ko.xz"));
        let Ok(packed) = std::fs::read(&path) else {
            continue;
        };
        let mut ko = Vec::new();
        lzma_rs::xz_decompress(&mut &packed[..], &mut ko)
            .map_err(|e| ImageError::Build(format!("cannot decompress {}: {e}", path.display())))?;
        w.file(&format!("lib/modules/{name}.ko"), 0o644, &ko);
        present.push(*name);
    }
    if !present.contains(&"virtio_mmio") {
        return Err(ImageError::Build(format!(
            "kernel modules not found under {}",
            modules_dir.display()
        )));
    }
    w.file("init", 0o755, init_script(&present).as_bytes());
    w.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    let cpio = w.finish();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&cpio)
        .map_err(|e| ImageError::Build(e.to_string()))?;
    gz.finish().map_err(|e| ImageError::Build(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_loads_modules_in_order_and_prints_the_marker() {
        let s = init_script(&["virtio_mmio", "ext4"]);
        let a = s.find("virtio_mmio.ko").unwrap();
        let b = s.find("ext4.ko").unwrap();
        let m = s.find(BOOT_MARKER).unwrap();
        assert!(a < b && b < m);
        assert!(s.contains("ftvm.init=poweroff"));
    }
}
