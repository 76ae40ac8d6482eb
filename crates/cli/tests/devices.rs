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

/// A switch process for a test, killed at the end.
struct SwitchProcess {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl SwitchProcess {
    fn start(name: &str, forwards: &[&str]) -> SwitchProcess {
        Self::start_with(name, forwards, &[])
    }

    fn start_with(name: &str, forwards: &[&str], extra: &[&str]) -> SwitchProcess {
        let socket = tmp(&format!("{name}.sock"));
        let mut cmd = ftvm();
        cmd.args(["switch", "--socket", socket.to_str().unwrap()]);
        cmd.args(extra);
        for f in forwards {
            cmd.args(["--forward", f]);
        }
        let child = cmd.spawn().expect("start ftvm switch");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !socket.exists() {
            assert!(std::time::Instant::now() < deadline, "switch did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        SwitchProcess { child, socket }
    }

    fn net_arg(&self) -> String {
        format!("switch:{}", self.socket.display())
    }
}

impl Drop for SwitchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's `/metrics`, once it has copied its counters out (a few times a second).
fn scrape_metrics(addr: &str) -> String {
    use std::io::{Read, Write};
    std::thread::sleep(std::time::Duration::from_millis(400));
    let mut c = std::net::TcpStream::connect(addr).expect("the switch's metrics");
    write!(c, "GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// Sends `len` bytes to the echo service at `addr` and checks they come back unchanged.
fn echo_round_trip(addr: impl std::net::ToSocketAddrs, len: usize) {
    use std::io::{Read, Write};
    // The guest's `nc` starts in the background after the shell answered: give it a moment.
    // Until it listens, a direct connection is refused, and one through the switch's forward
    // is accepted by the gateway and then reset when the guest refuses the relay: both retry.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let addr: Vec<_> = addr.to_socket_addrs().unwrap().collect();
    let msg: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    loop {
        let attempt = std::net::TcpStream::connect(&addr[..]).and_then(|mut conn| {
            conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
            conn.write_all(&msg)?;
            let mut back = vec![0u8; msg.len()];
            conn.read_exact(&mut back)?;
            Ok(back)
        });
        match attempt {
            Ok(back) => {
                assert!(back == msg, "the echo differs");
                return;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                use std::io::ErrorKind::{BrokenPipe, ConnectionRefused, ConnectionReset};
                assert!(
                    matches!(e.kind(), ConnectionRefused | ConnectionReset | BrokenPipe),
                    "{e}"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("the guest's echo service never answered: {e}"),
        }
    }
}

/// Boots a guest on the switch with `ip` on eth0.
fn boot_on_switch(sw: &SwitchProcess, mac: &str, ip: &str) -> Session {
    boot_on_switch_with(sw, mac, ip, &[])
}

/// [`boot_on_switch`] with `extra` arguments for `ftvm run`.
fn boot_on_switch_with(sw: &SwitchProcess, mac: &str, ip: &str, extra: &[&str]) -> Session {
    let net = sw.net_arg();
    let mut args = vec!["run", "--firmware", "builtin", "--net", &net, "--mac", mac];
    args.extend(extra);
    let mut s = Session::start(&args);
    s.wait_for_after(0, MARKER, 120);
    s.wait_for_after(0, "# ", 60);
    let out = s.command(
        &format!("ip link set lo up && ip addr add {ip}/24 dev eth0 && ip link set eth0 up"),
        "NET-UP",
        60,
    );
    assert!(!out.contains("ip:"), "network set-up failed:\n{out}");
    s
}

#[test]
fn a_host_client_reaches_a_guest_echo_service_through_a_port_forward() {
    guest_ready();
    let port = free_port();
    let sw = SwitchProcess::start("fwd", &[&format!("tcp:127.0.0.1:{port}=10.0.2.15:7")]);
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut vm = boot_on_switch_with(
        &sw,
        "52:54:00:12:34:56",
        "10.0.2.15",
        &["--metrics", &metrics],
    );
    let out = vm.command("ping -c 1 -W 5 10.0.2.2", "PING-DONE", 60);
    assert!(
        out.contains("1 packets received"),
        "no answer from the gateway:\n{out}"
    );
    vm.command("(nc -ll -p 7 -e cat &)", "ECHO-UP", 30);

    echo_round_trip(("127.0.0.1", port), 64 << 10);
    // A VM without FT serves its metrics too: its role, and the frames it exchanged.
    let scraped = scrape_metrics(&metrics);
    for line in ["ftvm_role{role=\"solo\"} 1", "ftvm_generation 0"] {
        assert!(
            scraped.lines().any(|l| l == line),
            "no {line} in\n{scraped}"
        );
    }
    for name in [
        "ftvm_net_frames_sent_total",
        "ftvm_net_frames_received_total",
        "ftvm_guest_instructions_total",
    ] {
        let v: f64 = scraped
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{scraped}"));
        assert!(v > 40.0, "{name} {v}");
    }
    vm.send("poweroff -f");
    assert!(vm.wait(60).success());
}

#[test]
fn two_vms_on_one_switch_reach_each_other_and_a_killed_vm_leaves_the_rest_served() {
    guest_ready();
    let metrics = format!("127.0.0.1:{}", free_port());
    let sw = SwitchProcess::start_with("pair", &[], &["--metrics", &metrics]);
    let mut a = boot_on_switch(&sw, "52:54:00:00:00:0a", "10.0.2.21");
    let mut b = boot_on_switch(&sw, "52:54:00:00:00:0b", "10.0.2.22");
    let out = a.command("ping -c 2 -W 5 10.0.2.22", "PING-B", 60);
    assert!(
        out.contains("2 packets received"),
        "A cannot reach B:\n{out}"
    );
    // A third VM is killed (SIGKILL) mid-traffic: A and B and the gateway carry on.
    let mut c = boot_on_switch(&sw, "52:54:00:00:00:0c", "10.0.2.23");
    c.send("ping -f -c 100000 10.0.2.21 > /dev/null");
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(c);
    let out = b.command(
        "ping -c 2 -W 5 10.0.2.21 && ping -c 1 -W 5 10.0.2.2",
        "PING-A",
        60,
    );
    assert!(out.contains("2 packets received"), "B lost A:\n{out}");
    assert!(
        out.contains("1 packets received"),
        "B lost the gateway:\n{out}"
    );
    // The switch's metrics saw three VMs join, one leave, and the frames between them.
    let scraped = scrape_metrics(&metrics);
    let value = |name: &str| -> f64 {
        scraped
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{scraped}"))
    };
    assert!(
        value("ftvm_switch_ports_connected_total") >= 3.0,
        "{scraped}"
    );
    assert!(value("ftvm_switch_ports_gone_total") >= 1.0, "{scraped}");
    assert!(value("ftvm_switch_frames_total") >= 10.0, "{scraped}");
    for vm in [a, b] {
        let mut vm = vm;
        vm.send("poweroff -f");
        assert!(vm.wait(60).success());
    }
}

#[test]
fn a_guest_on_a_tap_device_serves_the_host_network() {
    // Needs root (to make the TAP device); CI runs as root, so there it always runs.
    if !nix::unistd::geteuid().is_root() || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("TAP test not run: needs root and /dev/net/tun");
        return;
    }
    guest_ready();
    let name = format!("fte{}", std::process::id() % 100_000);
    let ip = |args: &[&str]| {
        let ok = Command::new("ip").args(args).status();
        assert!(ok.is_ok_and(|s| s.success()), "ip {args:?} failed");
    };
    ip(&["tuntap", "add", "dev", &name, "mode", "tap"]);
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
    let _remove = Remove(name.clone());
    ip(&["addr", "add", "10.215.0.1/24", "dev", &name]);
    ip(&["link", "set", &name, "up"]);

    let net = format!("tap:{name}");
    let mut vm = Session::start(&["run", "--firmware", "builtin", "--net", &net]);
    vm.wait_for_after(0, MARKER, 120);
    vm.wait_for_after(0, "# ", 60);
    let out = vm.command(
        "ip addr add 10.215.0.2/24 dev eth0 && ip link set eth0 up && ping -c 1 -W 5 10.215.0.1",
        "TAP-UP",
        60,
    );
    assert!(
        out.contains("1 packets received"),
        "the host did not answer:\n{out}"
    );
    vm.command("(nc -ll -p 7 -e cat &)", "ECHO-UP", 30);

    // The host kernel's own TCP stack, no ftvm process in between.
    echo_round_trip(("10.215.0.2", 7), 16 << 10);
    vm.send("poweroff -f");
    assert!(vm.wait(60).success());
}
