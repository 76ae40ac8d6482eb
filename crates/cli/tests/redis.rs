//! End to end: `ftvm run --guest redis`, served to host clients through the switch's forwarder.

mod common;

use std::process::Command;

use common::*;

const REDIS_MARKER: &str = "FTVM-REDIS-READY";

fn redis_ready() {
    guest_ready();
    let out = ftvm()
        .args(["image", "fetch", "--redis"])
        .output()
        .expect("run ftvm image fetch --redis");
    assert!(
        out.status.success(),
        "building the redis disk failed:\n{}",
        text(&out.stderr)
    );
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (redis-tools) is installed");
    text(&out.stdout).trim().to_string()
}

fn boot(disk: &str, port: u16) -> Session {
    let forward = format!("tcp:127.0.0.1:{port}=10.0.2.15:6379");
    let s = Session::start(&[
        "run",
        "--guest",
        "redis",
        "--firmware",
        "builtin",
        "--disk",
        disk,
        "--forward",
        &forward,
    ]);
    s.wait_for_after(0, REDIS_MARKER, 180);
    s
}

#[test]
fn redis_in_the_guest_answers_host_clients_and_keeps_its_data_across_a_reboot() {
    redis_ready();
    let disk = tmp("redis-root.img");
    let _ = std::fs::remove_file(&disk);
    let disk = disk.to_str().unwrap();
    let port = free_port();

    // The first boot creates the disk from the pristine image.
    let mut vm = boot(disk, port);
    assert_eq!(redis_cli(port, &["ping"]), "PONG");
    assert_eq!(redis_cli(port, &["set", "ftvm:key", "kept"]), "OK");
    let bench = Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-t", "set,get", "-n", "500", "-q"])
        .output()
        .expect("redis-benchmark (redis-tools) is installed");
    let report = text(&bench.stdout);
    assert!(
        report.contains("SET:") && report.contains("GET:"),
        "redis-benchmark did not run:\n{report}{}",
        text(&bench.stderr)
    );
    // A clean poweroff: init shuts redis down (its append-only file on the disk) first.
    vm.send("poweroff");
    assert!(vm.wait(60).success());

    let vm = boot(disk, port);
    assert_eq!(redis_cli(port, &["get", "ftvm:key"]), "kept");
    drop(vm);
    let fsck = Command::new("e2fsck")
        .args(["-f", "-n", disk])
        .output()
        .unwrap();
    // Killed without a shutdown: the journal may need replaying, but nothing is corrupt.
    assert!(
        fsck.status.code().is_some_and(|c| c <= 1) || text(&fsck.stdout).contains("recovering"),
        "fsck found problems:\n{}",
        text(&fsck.stdout)
    );
}

#[test]
fn a_taken_forward_port_gets_a_clear_error() {
    redis_ready();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = ftvm()
        .args(["run", "--guest", "redis", "--firmware", "builtin"])
        .args(["--forward", &format!("tcp:127.0.0.1:{port}=10.0.2.15:6379")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&port.to_string()) && err.contains("--forward"),
        "{err}"
    );
}
