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
                "insmod /lib/modules/{m}.ko 2>/dev/null || echo \"init: {m} not loaded (built in or already loaded?)\"\n"
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
cmdline=" $(cat /proc/cmdline) "
case "$cmdline" in
  *" ftvm.init=poweroff "*) poweroff -f ;;
esac
# ftvm.root=DEV: a root disk (the redis guest's) takes over, its own init run as PID 1.
root=$(echo "$cmdline" | sed -n 's/.* ftvm\.root=\([^ ]*\) .*/\1/p')
if [ -n "$root" ]; then
  mkdir -p /newroot
  if mount -t ext4 "$root" /newroot; then
    for d in dev proc sys; do mount --move /$d /newroot/$d; done
    exec switch_root /newroot /usr/sbin/ftvm-init
  fi
  echo "init: cannot mount the root disk $root; staying in the initramfs"
fi
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
    w.char_dev("dev/console", 0o600, 5, 1);
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
    fn the_archive_holds_busybox_the_modules_present_and_init() {
        let modules = tempfile::tempdir().unwrap();
        let ko = b"\x7fELF a module".repeat(100);
        for rel in ["drivers/virtio/virtio_mmio", "fs/ext4/ext4"] {
            let path = modules.path().join(format!("{rel}.ko.xz"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut xz = Vec::new();
            lzma_rs::xz_compress(&mut &ko[..], &mut xz).unwrap();
            std::fs::write(path, xz).unwrap();
        }
        let gz = build_initramfs(b"busybox binary", modules.path()).unwrap();
        assert_eq!(&gz[..2], b"\x1f\x8b");
        let mut cpio = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut cpio).unwrap();
        let entries = crate::cpio::tests::parse(&cpio);
        let get = |n: &str| entries.iter().find(|e| e.0 == n);
        assert_eq!(get("bin/busybox").unwrap().2, b"busybox binary");
        assert_eq!(get("bin/sh").unwrap().2, b"busybox");
        assert_eq!(get("dev/console").unwrap().3, (5, 1));
        for d in ["dev", "proc", "sys", "tmp", "root"] {
            assert_eq!(get(d).unwrap().1 & 0o170000, crate::cpio::DIR, "{d}");
        }
        assert_eq!(get("lib/modules/virtio_mmio.ko").unwrap().2, ko);
        assert_eq!(get("lib/modules/ext4.ko").unwrap().2, ko);
        assert!(get("lib/modules/virtio_blk.ko").is_none());
        let init = String::from_utf8(get("init").unwrap().2.clone()).unwrap();
        assert_eq!(get("init").unwrap().1 & 0o777, 0o755);
        // Only the modules that exist are loaded, in dependency order.
        assert!(init.find("ext4.ko").unwrap() < init.find("virtio_mmio.ko").unwrap());
        assert!(!init.contains("virtio_blk"));
    }

    #[test]
    fn without_virtio_mmio_the_build_fails_clearly() {
        let modules = tempfile::tempdir().unwrap();
        let err = build_initramfs(b"bb", modules.path()).unwrap_err();
        assert!(
            err.to_string().contains("kernel modules not found"),
            "{err}"
        );
    }

    #[test]
    fn init_loads_modules_in_order_and_prints_the_marker() {
        let s = init_script(&["virtio_mmio", "ext4"]);
        let a = s.find("virtio_mmio.ko").unwrap();
        let b = s.find("ext4.ko").unwrap();
        let m = s.find(BOOT_MARKER).unwrap();
        assert!(a < b && b < m);
        assert!(s.contains("ftvm.init=poweroff"));
        assert!(s.contains("switch_root /newroot /usr/sbin/ftvm-init"));
    }
}
