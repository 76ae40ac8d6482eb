//! The switch's built-in gateway: a user-space TCP/IP stack (smoltcp) on one switch port that
//! answers ARP and ping and relays forwarded host ports to guest services.
//!
//! Each host connection accepted on a forwarded port becomes a TCP connection from the gateway
//! to the guest. Bytes move without per-byte work and with backpressure both ways: the host
//! socket is read only while the guest connection has send room, and guest data stays in
//! smoltcp's receive buffer (closing its window) while the host socket is full. The TCP state
//! lives here, outside the VMs, so it survives a failover: the guest's MAC moving to another
//! switch port is invisible to it, and retransmission covers frames lost meanwhile.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant as StdInstant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use crate::config::{Forward, Gateway};
use crate::{NetError, port::MAX_FRAME};

/// Per-connection TCP buffers: big enough that a LAN-speed stream is not window-limited.
const TCP_BUFFER: usize = 256 << 10;
/// Frames queued towards the switch at most; beyond that the stack's own retransmission copes.
const MAX_QUEUED: usize = 4096;
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

/// The stack's link: frames in from the switch, frames out to it.
#[derive(Default)]
struct Link {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        if self.0.len() < MAX_QUEUED {
            self.0.push_back(buf);
        }
        r
    }
}

impl Device for Link {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((Rx(frame), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// What the switch loop waits for on a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub read: bool,
    pub write: bool,
}

/// One forwarded connection: a host socket and the gateway's connection to the guest.
struct Conn {
    host: TcpStream,
    handle: SocketHandle,
    local_port: u16,
    host_eof: bool,
    host_shut: bool,
    established: bool,
}

pub struct GatewayStack {
    iface: Interface,
    link: Link,
    sockets: SocketSet<'static>,
    listeners: Vec<(TcpListener, Forward)>,
    conns: Vec<Conn>,
    next_port: u16,
    started: StdInstant,
    buf: Vec<u8>,
    /// Forwarded connections accepted so far.
    pub accepted: u64,
}

impl GatewayStack {
    pub fn new(gw: &Gateway, forwards: &[Forward]) -> Result<GatewayStack, NetError> {
        let mut link = Link::default();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(gw.mac)));
        // Initial sequence numbers: distinct per switch start, which is all TCP asks.
        // (`Instant::now().elapsed()` is always about zero: the wall clock is what varies.)
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        config.random_seed = now ^ std::process::id() as u64;
        let started = StdInstant::now();
        let mut iface = Interface::new(config, &mut link, Instant::from_micros(0));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(gw.ip), gw.prefix));
        });
        let mut listeners = Vec::new();
        for f in forwards {
            let l = TcpListener::bind(f.host).map_err(|e| NetError::Listen(f.host, e))?;
            l.set_nonblocking(true)
                .map_err(|e| NetError::Listen(f.host, e))?;
            listeners.push((l, *f));
        }
        Ok(GatewayStack {
            iface,
            link,
            sockets: SocketSet::new(Vec::new()),
            listeners,
            conns: Vec::new(),
            next_port: *EPHEMERAL.start(),
            started,
            buf: vec![0; 64 << 10],
            accepted: 0,
        })
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.started.elapsed().as_micros() as i64)
    }

    /// A frame from the switch for the gateway.
    pub fn input(&mut self, frame: Vec<u8>) {
        if frame.len() <= MAX_FRAME && self.link.rx.len() < MAX_QUEUED {
            self.link.rx.push_back(frame);
        }
    }

    /// The host addresses the gateway listens on (the forwards' bound addresses).
    pub fn local_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// Descriptors (and what of them) whose readiness should wake the switch loop. A host
    /// socket is watched for reading only while its guest connection can take bytes, and for
    /// writing only while guest bytes wait for it: a readable socket the relay would not read
    /// (a connection still opening, a full window) would otherwise wake the loop at once,
    /// forever, and burn a core.
    pub fn fds(&self) -> Vec<(BorrowedFd<'_>, Want)> {
        let listeners = self.listeners.iter().map(|(l, _)| {
            (
                l.as_fd(),
                Want {
                    read: true,
                    write: false,
                },
            )
        });
        let conns = self.conns.iter().map(|c| {
            let sock = self.sockets.get::<tcp::Socket>(c.handle);
            let want = Want {
                read: !c.host_eof && sock.may_send() && sock.send_queue() < sock.send_capacity(),
                write: sock.can_recv(),
            };
            (c.host.as_fd(), want)
        });
        listeners.chain(conns).collect()
    }

    /// How long the stack may sleep before it needs a poll (retransmission timers).
    pub fn delay(&mut self) -> Duration {
        let now = self.now();
        match self.iface.poll_delay(now, &self.sockets) {
            Some(d) => Duration::from_micros(d.total_micros()),
            None => Duration::from_millis(100),
        }
    }

    /// How many entries [`GatewayStack::fds`] returns.
    pub fn fd_count(&self) -> usize {
        self.listeners.len() + self.conns.len()
    }

    /// Runs the stack and the relays; returns the frames to send into the switch. `ready`
    /// says, in the order of [`GatewayStack::fds`], which descriptors poll found ready: only
    /// those are read (a connection accepted since counts as ready).
    pub fn poll(&mut self, ready: &[bool]) -> Vec<Vec<u8>> {
        let now = self.now();
        self.iface.poll(now, &mut self.link, &mut self.sockets);
        let n = self.listeners.len();
        let (listeners_ready, conns_ready) = ready.split_at(n.min(ready.len()));
        for i in 0..n {
            if listeners_ready.get(i).copied().unwrap_or(true) {
                self.accept_on(i);
            }
        }
        self.relay(conns_ready);
        let now = self.now();
        self.iface.poll(now, &mut self.link, &mut self.sockets);
        self.link.tx.drain(..).collect()
    }

    fn free_port(&mut self) -> u16 {
        loop {
            let p = self.next_port;
            self.next_port = if p == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                p + 1
            };
            if !self.conns.iter().any(|c| c.local_port == p) {
                return p;
            }
        }
    }

    fn accept_on(&mut self, i: usize) {
        while let Ok((host, _)) = self.listeners[i].0.accept() {
            let guest = self.listeners[i].1.guest;
            if host.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = host.set_nodelay(true);
            let mut sock = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
                tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
            );
            sock.set_nagle_enabled(false);
            let local_port = self.free_port();
            let remote = IpEndpoint::new(IpAddress::Ipv4(*guest.ip()), guest.port());
            if sock
                .connect(self.iface.context(), remote, local_port)
                .is_err()
            {
                continue;
            }
            let handle = self.sockets.add(sock);
            self.accepted += 1;
            self.conns.push(Conn {
                host,
                handle,
                local_port,
                host_eof: false,
                host_shut: false,
                established: false,
            });
        }
    }

    fn relay(&mut self, host_ready: &[bool]) {
        let mut done = Vec::new();
        for (i, c) in self.conns.iter_mut().enumerate() {
            let sock = self.sockets.get_mut::<tcp::Socket>(c.handle);
            if sock.state() == tcp::State::Established {
                c.established = true;
            }
            // Host -> guest, only as much as the connection can take now (and only from a
            // socket poll found readable: a new connection's counts as readable).
            let readable = host_ready.get(i).copied().unwrap_or(true);
            while readable && !c.host_eof && sock.may_send() {
                let room = sock.send_capacity() - sock.send_queue();
                if room == 0 {
                    break;
                }
                let want = room.min(self.buf.len());
                match c.host.read(&mut self.buf[..want]) {
                    Ok(0) => {
                        c.host_eof = true;
                        sock.close();
                    }
                    Ok(n) => {
                        let _ = sock.send_slice(&self.buf[..n]);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        sock.abort();
                        c.host_eof = true;
                        break;
                    }
                }
            }
            // Guest -> host: what the host socket takes now; the rest waits in the stack.
            let mut host_failed = false;
            while sock.can_recv() {
                let host = &mut c.host;
                let r = sock.recv(|data| match host.write(data) {
                    Ok(n) => (n, n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => (0, 0),
                    Err(_) => {
                        host_failed = true;
                        (0, 0)
                    }
                });
                if !matches!(r, Ok(n) if n > 0) {
                    break;
                }
            }
            if host_failed {
                sock.abort();
            }
            // The guest finished sending: pass the FIN on.
            if !c.host_shut && c.established && !sock.may_recv() && sock.recv_queue() == 0 {
                let _ = c.host.shutdown(Shutdown::Write);
                c.host_shut = true;
            }
            let over = match sock.state() {
                tcp::State::Closed | tcp::State::TimeWait => true,
                // The guest refused or never answered before the host gave up.
                _ => host_failed,
            };
            if over {
                done.push(i);
            }
        }
        for i in done.into_iter().rev() {
            let c = self.conns.swap_remove(i);
            self.sockets.remove(c.handle);
            // Dropping the host stream closes it; a refused connection is seen as a reset.
        }
    }

    /// Forwarded connections open now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}
