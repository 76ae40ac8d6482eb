//! End to end: the real binary, Debian's kernel, ftvm's virtio devices.

mod common;

use std::process::Command;

use common::*;

const BOOT: &[&str] = &["run", "--firmware", "builtin", "--clock", "virtual"];

fn boot_with_disk(disk: &str) -> Session {
    let mut args = BOOT.to_vec();
    args.extend(["--disk", disk]);
    let s = Session::start(&args);
    s.wait_for_after(0, MARKER, 120);
    s.wait_for_after(0, "# ", 60);
    s
}

#[test]
fn a_file_written_to_the_disk_survives_a_reboot_and_fsck_is_clean() {
    guest_ready();
    let disk = tmp("persist.img");
    let _ = std::fs::remove_file(&disk);
    let status = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4"])
        .arg(&disk)
        .arg("64M")
        .status()
        .expect("mke2fs (e2fsprogs) is installed");
    assert!(status.success());
    let disk = disk.to_str().unwrap();

    let mut s = boot_with_disk(disk);
    let out = s.command(
        "mount /dev/vda /mnt && seq 1 20000 > /mnt/numbers.txt && echo persisted-42 > /mnt/f.txt && umount /mnt",
        "STEP-1-DONE",
        120,
    );
    assert!(!out.contains("mount:"), "mount failed:\n{out}");
    s.send("poweroff -f");
    assert!(s.wait(60).success());

    let mut s = boot_with_disk(disk);
    let out = s.command(
        "mount -o ro /dev/vda /mnt && cat /mnt/f.txt && md5sum /mnt/numbers.txt && seq 1 20000 | md5sum",
        "STEP-2-DONE",
        120,
    );
    assert!(out.contains("persisted-42"), "the file is gone:\n{out}");
    let sums: Vec<&str> = out
        .lines()
        .filter(|l| l.len() >= 32 && l[..32].bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|l| &l[..32])
        .collect();
    assert_eq!(sums.len(), 2, "two checksums expected:\n{out}");
    assert_eq!(sums[0], sums[1], "the file's content changed:\n{out}");
    s.send("poweroff -f");
    assert!(s.wait(60).success());

    let fsck = Command::new("e2fsck")
        .args(["-f", "-n", disk])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "fsck found problems:\n{}",
        text(&fsck.stdout)
    );
}

#[test]
fn the_entropy_device_makes_the_kernel_rng_ready_during_boot() {
    guest_ready();
    let out = ftvm()
        .args(BOOT)
        .args(["--append", "console=ttyS0 earlycon=sbi ftvm.init=poweroff"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let console = text(&out.stdout);
    let crng = console.find("random: crng init done");
    let marker = console.find(MARKER);
    assert!(
        matches!((crng, marker), (Some(c), Some(m)) if c < m),
        "the kernel's rng was not ready by the marker:\n{console}"
    );
}

#[test]
fn a_missing_or_odd_sized_disk_image_gets_a_clear_error() {
    let out = ftvm()
        .args(BOOT)
        .args(["--disk", "/nonexistent/disk.img"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("/nonexistent/disk.img"), "{err}");
    let odd = tmp("odd.img");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    let out = ftvm()
        .args(BOOT)
        .args(["--disk", odd.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("512-byte sectors"),
        "{}",
        text(&out.stderr)
    );
}
