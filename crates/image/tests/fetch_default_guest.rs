//! The real thing: fetches Debian's riscv64 packages through the host's mirror into an empty
//! cache, builds the default guest, then checks that a damaged cache is noticed and repaired.
//! Needs the network and a Debian host (about 115 MB downloaded).

use std::io::Read;

use ftvm_image::{FetchOptions, ensure_default_guest};

#[test]
fn fetches_builds_verifies_and_repairs_the_default_guest() {
    let cache = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        cache_dir: cache.path().to_path_buf(),
        progress: true,
        force: false,
    };
    let guest = ensure_default_guest(&opts).expect("the default guest builds");

    let kernel = std::fs::read(&guest.kernel).unwrap();
    assert_eq!(&kernel[48..53], b"RISCV", "RISC-V Image header magic");
    assert!(kernel.len() > 1 << 20);
    let initrd = std::fs::read(&guest.initrd).unwrap();
    assert_eq!(&initrd[..2], b"\x1f\x8b", "gzip magic");
    let mut cpio = Vec::new();
    flate2::read::GzDecoder::new(&initrd[..])
        .read_to_end(&mut cpio)
        .unwrap();
    assert_eq!(&cpio[..6], b"070701", "newc cpio inside");
    for needle in [
        &b"bin/busybox\0"[..],
        b"lib/modules/virtio_blk.ko\0",
        b"lib/modules/ext4.ko\0",
        ftvm_image::BOOT_MARKER.as_bytes(),
    ] {
        assert!(
            cpio.windows(needle.len()).any(|w| w == needle),
            "initramfs lacks {}",
            String::from_utf8_lossy(needle)
        );
    }
    assert!(std::fs::metadata(&guest.firmware).unwrap().len() > 0);
    assert!(guest.kernel_version.ends_with("-riscv64"));
    assert!(
        guest
            .kernel
            .starts_with(cache.path().join("guest").join(&guest.kernel_version))
    );

    // The unpacked trees are gone, the .debs stay.
    assert!(!cache.path().join("unpack").exists());
    let debs = std::fs::read_dir(cache.path().join("apt-riscv64/archives"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "deb")
        })
        .count();
    assert_eq!(debs, 3);

    // Cached: same files, no rebuild.
    let again = ensure_default_guest(&opts).unwrap();
    assert_eq!(again.initrd, guest.initrd);

    // A corrupted file is noticed and rebuilt from the cached .debs.
    std::fs::write(&guest.firmware, b"corrupted").unwrap();
    let repaired = ensure_default_guest(&opts).unwrap();
    assert_eq!(
        std::fs::metadata(&repaired.firmware).unwrap().len(),
        std::fs::metadata(&guest.firmware).unwrap().len()
    );
    assert_ne!(std::fs::read(&repaired.firmware).unwrap(), b"corrupted");
    // The rebuilt initramfs is byte-identical: the build is deterministic.
    assert_eq!(std::fs::read(&repaired.initrd).unwrap(), initrd);
}
