//! End to end: a primary and a backup process in lockstep over the logging channel.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

/// Starts a primary booting the default guest to the marker and powering off; returns it and
/// the address it listens on.
fn start_primary() -> (Child, String) {
    let mut child = ftvm()
        .args([
            "primary",
            "--listen",
            "127.0.0.1:0",
            "--firmware",
            "builtin",
        ])
        .args(["--append", "console=ttyS0 earlycon=sbi ftvm.init=poweroff"])
        .args(["--checkpoint-interval", "50000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    stderr.read_line(&mut line).unwrap();
    // Keep draining: a closed pipe would kill the primary at its next message.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("the primary says where it listens")
        .to_string();
    assert!(line.contains("waiting for a backup"), "{line}");
    (child, addr)
}

#[test]
fn a_backup_replays_the_primary_in_lockstep_to_the_end() {
    guest_ready();
    let (mut primary, addr) = start_primary();
    let backup = ftvm()
        .args(["backup", "--connect", &addr])
        .output()
        .unwrap();
    assert!(primary.wait().unwrap().success());
    let err = text(&backup.stderr);
    assert!(backup.status.success(), "{err}");
    assert!(
        err.contains("the primary finished") && err.contains("checkpoints matched"),
        "{err}"
    );
}

#[test]
fn a_backup_notices_its_primary_killed_mid_boot() {
    guest_ready();
    let (mut primary, addr) = start_primary();
    let backup = ftvm()
        .args(["backup", "--connect", &addr])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    primary.kill().unwrap();
    primary.wait().unwrap();
    let out = backup.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("lost the primary at instruction"), "{err}");
}
