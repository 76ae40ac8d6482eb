//! End-to-end record and replay with the real binary and Debian's kernel: every output and
//! checkpoint reproduced, console input replayed, damaged logs and injected faults reported.

mod common;

use common::{MARKER, ftvm, guest_ready, text, tmp};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Output, Stdio};

fn replay(log: &Path, extra: &[&str]) -> Output {
    ftvm()
        .args(["replay", "--quiet", "--log", log.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap()
}

/// Records a boot with the real-time clock in which a shell command is typed after the marker.
fn record_interactive(log: &Path) -> String {
    guest_ready();
    let mut child = ftvm()
        .args([
            "record",
            "--firmware",
            "builtin",
            "--checkpoint-interval",
            "20000000",
            "--log",
        ])
        .arg(log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        let marker = line.contains(MARKER);
        line.clear();
        if marker {
            break;
        }
    }
    assert!(seen.contains(MARKER), "no marker:\n{seen}");
    stdin
        .write_all(b"echo replayed-$((40 + 2))\npoweroff -f\n")
        .unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "record failed:\n{seen}{rest}");
    seen + &rest
}

#[test]
fn interactive_recording_replays_exactly() {
    let log = tmp("interactive.log");
    let console = record_interactive(&log);
    assert!(console.contains("replayed-42"), "{console}");
    let out = replay(&log, &[]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Complete"), "{err}");
    // A replay shows the same console as the recording.
    let shown = ftvm()
        .args(["replay", "--log", log.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(text(&shown.stdout).contains("replayed-42"));
}

#[test]
fn two_recordings_differ_and_each_replays() {
    let (a, b) = (tmp("timing-a.log"), tmp("timing-b.log"));
    record_interactive(&a);
    record_interactive(&b);
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    for log in [&a, &b] {
        let out = replay(log, &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

#[test]
fn damaged_logs_are_reported_at_the_right_record() {
    let log = tmp("damage.log");
    record_interactive(&log);
    let bytes = std::fs::read(&log).unwrap();

    let cut = tmp("damage-cut.log");
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
    let out = replay(&cut, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("truncated in record"),
        "{}",
        text(&out.stderr)
    );

    let flipped = tmp("damage-flip.log");
    let mut b = bytes.clone();
    let at = b.len() * 2 / 3;
    b[at] ^= 0x10;
    std::fs::write(&flipped, &b).unwrap();
    let out = replay(&flipped, &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("record") && (err.contains("corrupt") || err.contains("truncated")),
        "{err}"
    );
}

#[test]
fn flipped_memory_bit_is_caught_at_the_next_checkpoint() {
    let log = tmp("flip.log");
    record_interactive(&log);
    // A bit in the initrd image, which nothing touches this early in the boot.
    let out = replay(&log, &["--flip-bit", "15000000:88000100:3"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("diverged at instruction 20000000"), "{err}");
    assert!(err.contains("state hash"), "{err}");
}

#[test]
fn replay_stops_at_an_exact_instruction() {
    let log = tmp("until.log");
    record_interactive(&log);
    let snap = tmp("until.snap");
    let out = replay(
        &log,
        &[
            "--until",
            "30000000",
            "--dump-regs",
            "--save-snapshot",
            snap.to_str().unwrap(),
        ],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("icount 30000000"), "{err}");
    assert!(snap.exists());
}

#[test]
fn disk_io_and_entropy_replay_without_the_disk() {
    guest_ready();
    let disk = tmp("replay-disk.img");
    let _ = std::fs::remove_file(&disk);
    let mke2fs = std::process::Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4"])
        .arg(&disk)
        .arg("32M")
        .status()
        .unwrap();
    assert!(mke2fs.success());
    let log = tmp("disk.log");
    let mut s = common::Session::start(&[
        "record",
        "--firmware",
        "builtin",
        "--checkpoint-interval",
        "50000000",
        "--disk",
        disk.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
    ]);
    s.wait_for_after(0, MARKER, 120);
    let out = s.command(
        "mount /dev/vda /mnt && seq 1 3000 > /mnt/n.txt && sync && wc -l /mnt/n.txt && umount /mnt",
        "DISK-DONE",
        120,
    );
    assert!(out.contains("3000 /mnt/n.txt"), "{out}");
    s.send("poweroff -f");
    assert!(s.wait(60).success());

    // Replay reads nothing from the host: the disk is gone, its reads come from the log, and
    // every disk write the guest issues is checked against the recording.
    std::fs::remove_file(&disk).unwrap();
    let out = replay(&log, &[]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Complete"), "{err}");
}

#[test]
fn a_redis_guest_serving_host_clients_through_the_switch_replays_exactly() {
    guest_ready();
    let fetch = ftvm().args(["image", "fetch", "--redis"]).output().unwrap();
    assert!(fetch.status.success(), "{}", text(&fetch.stderr));
    let port = common::free_port();
    let log = tmp("redis.log");
    let forward = format!("tcp:127.0.0.1:{port}=10.0.2.15:6379");
    let mut s = common::Session::start(&[
        "record",
        "--guest",
        "redis",
        "--firmware",
        "builtin",
        "--forward",
        &forward,
        "--log",
        log.to_str().unwrap(),
    ]);
    s.wait_for_after(0, "FTVM-REDIS-READY", 180);
    // Host clients through the switch's forwarder: frames in both directions, disk writes
    // (the append-only file), timers, and console input below.
    let bench = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "set,get,incr",
            "-n",
            "300",
            "-q",
        ])
        .output()
        .expect("redis-benchmark (redis-tools) is installed");
    assert!(
        text(&bench.stdout).contains("INCR"),
        "{}",
        text(&bench.stderr)
    );
    let out = s.command("redis-cli get counter:__rand_int__; sync", "REDIS-DONE", 60);
    assert!(out.contains("300"), "{out}");
    s.send("poweroff");
    assert!(s.wait(60).success());

    // No network, no disk, no clock: every frame the guest sent, every disk write and every
    // checkpoint is checked against the recording.
    let out = replay(&log, &[]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Complete"), "{err}");
}
