//! The switch with real sockets: learning, flooding, a VM dying, a MAC moving, and host port
//! forwarding to a guest stack (smoltcp on a `Port`) including across a MAC move.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant as StdInstant};

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

use crate::*;

fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5, tag]);
    f.resize(60, 0);
    f
}

const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xa];
const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xb];
const C: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xc];
const BCAST: [u8; 6] = [0xff; 6];

fn switch(dir: &tempfile::TempDir, forwards: Vec<Forward>) -> (Switch, std::path::PathBuf) {
    let path = dir.path().join("switch.sock");
    let mut cfg = SwitchConfig::new(path.clone());
    cfg.forwards = forwards;
    (Switch::bind(&cfg).unwrap(), path)
}

fn turns(sw: &mut Switch, n: usize) {
    for _ in 0..n {
        sw.turn(Duration::from_millis(5));
    }
}

fn recv(p: &mut Port) -> Option<Vec<u8>> {
    p.recv_timeout(Duration::from_millis(200)).unwrap()
}

#[test]
fn learns_floods_and_survives_a_vm_that_disappears() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sw, path) = switch(&dir, vec![]);
    let mut a = Port::connect(&path).unwrap();
    let mut b = Port::connect(&path).unwrap();
    let mut c = Port::connect(&path).unwrap();
    turns(&mut sw, 2);
    assert_eq!(sw.ports(), 3);

    // Unknown destination: flooded to everyone else.
    assert!(a.send(&frame(B, A, 1)));
    turns(&mut sw, 2);
    assert_eq!(recv(&mut b).unwrap()[14], 1);
    assert_eq!(recv(&mut c).unwrap()[14], 1);
    // B answers: A was learnt, so only A gets it.
    assert!(b.send(&frame(A, B, 2)));
    turns(&mut sw, 2);
    assert_eq!(recv(&mut a).unwrap()[14], 2);
    assert_eq!(c.try_recv().unwrap(), None);
    // Broadcast floods.
    assert!(c.send(&frame(BCAST, C, 3)));
    turns(&mut sw, 2);
    assert_eq!(recv(&mut a).unwrap()[14], 3);
    assert_eq!(recv(&mut b).unwrap()[14], 3);

    // B's process dies (its socket closes, possibly mid-burst): the rest carry on.
    for i in 0..50 {
        b.send(&frame(A, B, 100 + i));
    }
    drop(b);
    turns(&mut sw, 3);
    assert_eq!(sw.ports(), 2);
    while a.try_recv().unwrap().is_some() {}
    assert!(c.send(&frame(A, C, 4)));
    turns(&mut sw, 2);
    assert_eq!(recv(&mut a).unwrap()[14], 4);
    assert_eq!(sw.stats.ports_gone, 1);
}

#[test]
fn a_mac_announced_from_a_new_port_takes_its_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sw, path) = switch(&dir, vec![]);
    let mut old = Port::connect(&path).unwrap();
    let mut new = Port::connect(&path).unwrap();
    let peer = Port::connect(&path).unwrap();
    turns(&mut sw, 2);
    assert!(old.send(&frame(BCAST, A, 1)));
    turns(&mut sw, 2);
    while new.try_recv().unwrap().is_some() {}
    // A gratuitous ARP for A from the new port (the backup going live).
    assert!(new.send(&frame(BCAST, A, 2)));
    turns(&mut sw, 2);
    while old.try_recv().unwrap().is_some() {}
    assert!(peer.send(&frame(A, B, 3)));
    turns(&mut sw, 2);
    assert_eq!(recv(&mut new).unwrap()[14], 3);
    assert_eq!(old.try_recv().unwrap(), None);
}

#[test]
fn garbage_messages_are_counted_not_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sw, path) = switch(&dir, vec![]);
    let raw = Port::connect(&path).unwrap();
    let mut other = Port::connect(&path).unwrap();
    turns(&mut sw, 2);
    // Below the Port's own checks: a 3-byte message straight on the socket.
    assert!(crate::port::send_frame(
        std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&raw)),
        &[1, 2, 3]
    ));
    turns(&mut sw, 2);
    assert_eq!(sw.stats.malformed, 1);
    assert_eq!(other.try_recv().unwrap(), None);
}

/// A guest's TCP/IP stack on a switch port: the far end of a forward.
struct GuestLink {
    port: Port,
}

struct GRx(Vec<u8>);
struct GTx<'a>(&'a Port);

impl RxToken for GRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for GTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.send(&buf);
        r
    }
}

impl Device for GuestLink {
    type RxToken<'a> = GRx;
    type TxToken<'a> = GTx<'a>;
    fn receive(&mut self, _: Instant) -> Option<(GRx, GTx<'_>)> {
        let f = self.port.try_recv().ok()??;
        Some((GRx(f), GTx(&self.port)))
    }
    fn transmit(&mut self, _: Instant) -> Option<GTx<'_>> {
        Some(GTx(&self.port))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

/// Runs an echo server at 10.0.2.15:7 until `stop`; after `move_after` bytes echoed it moves
/// to a fresh switch port and announces itself there (what a failover does).
fn echo_guest(path: std::path::PathBuf, stop: Arc<AtomicBool>, move_after: Option<usize>) {
    let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    let mut link = GuestLink {
        port: Port::connect(&path).unwrap(),
    };
    let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    cfg.random_seed = 7;
    let mut iface = Interface::new(cfg, &mut link, Instant::from_micros(0));
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::v4(10, 0, 2, 15), 24));
    });
    iface
        .routes_mut()
        .add_default_ipv4_route(Ipv4Address::new(10, 0, 2, 2))
        .unwrap();
    let mut sockets = SocketSet::new(Vec::new());
    let mut sock = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 256 << 10]),
        tcp::SocketBuffer::new(vec![0; 256 << 10]),
    );
    sock.listen(7).unwrap();
    let h = sockets.add(sock);
    let started = StdInstant::now();
    let mut echoed = 0usize;
    let mut moved = false;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::from_micros(started.elapsed().as_micros() as i64);
        iface.poll(now, &mut link, &mut sockets);
        let s = sockets.get_mut::<tcp::Socket>(h);
        if !s.is_open() {
            s.listen(7).unwrap();
        }
        while s.can_recv() && s.can_send() {
            let room = s.send_capacity() - s.send_queue();
            let mut buf = vec![0; room.min(64 << 10)];
            let n = s.recv_slice(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            s.send_slice(&buf[..n]).unwrap();
            echoed += n;
        }
        if s.may_send() && !s.may_recv() {
            s.close();
        }
        if let Some(limit) = move_after
            && !moved
            && echoed >= limit
        {
            // Old port dropped (the primary died), new port, gratuitous ARP.
            link.port = Port::connect(&path).unwrap();
            let mut garp = vec![0xff; 6];
            garp.extend_from_slice(&mac);
            garp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
            garp.extend_from_slice(&mac);
            garp.extend_from_slice(&[10, 0, 2, 15]);
            garp.extend_from_slice(&[0; 6]);
            garp.extend_from_slice(&[10, 0, 2, 15]);
            garp.resize(60, 0);
            link.port.send(&garp);
            moved = true;
        }
        let delay = iface
            .poll_delay(now, &sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(Duration::from_millis(5))
            .min(Duration::from_millis(5));
        wait_readable(&[std::os::fd::AsFd::as_fd(&link.port)], delay);
    }
}

fn forward_roundtrip(move_after: Option<usize>) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let fwd: Forward = "tcp:127.0.0.1:0=10.0.2.15:7".parse().unwrap();
    let (mut sw, path) = switch(&dir, vec![fwd]);
    let host_addr = sw.forward_addrs()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let sw_stop = stop.clone();
    let switch_thread = std::thread::spawn(move || sw.run(&sw_stop));
    let guest_stop = stop.clone();
    let guest_path = path.clone();
    let guest = std::thread::spawn(move || echo_guest(guest_path, guest_stop, move_after));

    let mut conn = TcpStream::connect(host_addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    conn.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"ping");

    let data: Vec<u8> = (0..(1 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    let started = StdInstant::now();
    let mut writer = conn.try_clone().unwrap();
    let to_send = data.clone();
    let w = std::thread::spawn(move || writer.write_all(&to_send).unwrap());
    let mut back = vec![0u8; data.len()];
    conn.read_exact(&mut back).unwrap();
    let secs = started.elapsed().as_secs_f64();
    w.join().unwrap();
    assert!(back == data, "echoed bytes differ");
    stop.store(true, Ordering::Relaxed);
    guest.join().unwrap();
    switch_thread.join().unwrap().unwrap();
    (2 << 20) as f64 / secs / 1e6
}

#[test]
fn a_host_client_reaches_a_guest_service_through_a_forward() {
    let mbps = forward_roundtrip(None);
    eprintln!("1 MiB echoed through the forward: {mbps:.1} MB/s both ways");
}

#[test]
fn a_forwarded_connection_survives_the_guest_moving_to_another_port() {
    forward_roundtrip(Some(300 << 10));
}

#[test]
fn a_client_waiting_for_a_guest_that_does_not_answer_leaves_the_switch_asleep() {
    // The client's bytes stay unread while the guest connection opens: the switch must not
    // wake for them again and again (it once spun a core doing that while a VM was away).
    let dir = tempfile::tempdir().unwrap();
    let fwd: Forward = "tcp:127.0.0.1:0=10.0.2.15:7".parse().unwrap();
    let (mut sw, _path) = switch(&dir, vec![fwd]);
    let mut client = TcpStream::connect(sw.forward_addrs()[0]).unwrap();
    client.write_all(b"PING\r\n").unwrap();
    turns(&mut sw, 3);
    assert_eq!(sw.connections(), 1);
    let started = StdInstant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(500) {
        sw.turn(Duration::from_millis(50));
        n += 1;
    }
    assert!(n < 60, "{n} loop turns in half a second with nothing to do");
}

#[test]
fn a_second_switch_on_the_same_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_sw, path) = switch(&dir, vec![]);
    let err = Switch::bind(&SwitchConfig::new(path)).err().unwrap();
    assert!(err.to_string().contains("already serving"), "{err}");
}

/// A TAP device named for this test, with `addr` on the host side; removed on drop. `None`
/// (and a note) where this process may not make one: CI runs as root, so there it always runs.
struct HostTap(String);

impl HostTap {
    fn name(tag: &str) -> Option<String> {
        if !nix::unistd::geteuid().is_root() || !std::path::Path::new("/dev/net/tun").exists() {
            eprintln!("TAP test not run: needs root and /dev/net/tun");
            return None;
        }
        Some(format!("ft{tag}{}", std::process::id() % 100_000))
    }

    /// Gives the (already attached) device `name` the host address `addr` and brings it up.
    fn configure(name: &str, addr: &str) -> HostTap {
        for args in [
            vec!["addr", "add", addr, "dev", name],
            vec!["link", "set", name, "up"],
        ] {
            let ok = std::process::Command::new("ip").args(&args).status();
            assert!(ok.is_ok_and(|s| s.success()), "ip {args:?} failed");
        }
        HostTap(name.to_string())
    }
}

impl Drop for HostTap {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .status();
    }
}

/// An ARP request from `mac`/`ip` for `target`.
fn arp_request(mac: [u8; 6], ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = BCAST.to_vec();
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

fn is_arp_reply_from(f: &[u8], ip: [u8; 4]) -> bool {
    f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] && f[28..32] == ip
}

#[test]
fn a_nic_on_a_tap_device_talks_to_the_host_kernel() {
    let Some(name) = HostTap::name("n") else {
        return;
    };
    let mut port = Port::tap(&name).unwrap();
    let _host = HostTap::configure(&name, "10.213.0.1/24");
    let deadline = StdInstant::now() + Duration::from_secs(10);
    loop {
        assert!(port.send(&arp_request(A, [10, 213, 0, 2], [10, 213, 0, 1])));
        let got = recv(&mut port);
        if got.is_some_and(|f| is_arp_reply_from(&f, [10, 213, 0, 1])) {
            break;
        }
        assert!(StdInstant::now() < deadline, "the host never answered ARP");
    }
}

#[test]
fn the_switch_uplink_bridges_vms_to_the_host_network() {
    let Some(name) = HostTap::name("u") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switch.sock");
    let mut cfg = SwitchConfig::new(path.clone());
    cfg.uplink = Some(name.clone());
    let mut sw = Switch::bind(&cfg).unwrap();
    let _host = HostTap::configure(&name, "10.214.0.1/24");
    let mut vm = Port::connect(&path).unwrap();
    turns(&mut sw, 2);
    assert_eq!(sw.ports(), 1, "the uplink is not counted as a VM");
    let deadline = StdInstant::now() + Duration::from_secs(10);
    loop {
        assert!(vm.send(&arp_request(B, [10, 214, 0, 2], [10, 214, 0, 1])));
        turns(&mut sw, 4);
        let got = recv(&mut vm);
        if got.is_some_and(|f| is_arp_reply_from(&f, [10, 214, 0, 1])) {
            break;
        }
        assert!(
            StdInstant::now() < deadline,
            "no ARP reply through the uplink"
        );
    }
}
