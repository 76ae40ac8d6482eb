//! The switch process: VM ports over a Unix socket, the gateway, one event loop.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{Backlog, SockFlag, UnixAddr, accept4, bind, listen};

use crate::NetError;
use crate::config::SwitchConfig;
use crate::gateway::GatewayStack;
use crate::port::{self, Link, MAX_FRAME, Recv};
use crate::table::{Dest, MacTable, PortId};

/// The gateway's port number; VM ports count up from 1.
const GATEWAY: PortId = 0;
/// Frames taken from one port per loop turn, so a busy VM cannot starve the others.
const BURST: usize = 256;

/// Counters for status displays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwitchStats {
    pub frames: u64,
    pub bytes: u64,
    /// Frames dropped because the destination's socket was full or gone.
    pub dropped: u64,
    /// Messages that were not Ethernet frames (too short, too long).
    pub malformed: u64,
    pub ports_connected: u64,
    pub ports_gone: u64,
}

pub struct Switch {
    listener: OwnedFd,
    ports: BTreeMap<PortId, Link>,
    /// The TAP uplink's port, if there is one.
    uplink: Option<PortId>,
    next_port: PortId,
    table: MacTable,
    gateway: GatewayStack,
    buf: Vec<u8>,
    pub stats: SwitchStats,
}

impl Switch {
    /// Binds the socket and the forwarded host ports.
    pub fn bind(cfg: &SwitchConfig) -> Result<Switch, NetError> {
        let path = &cfg.socket_path;
        if path.exists() {
            // A live switch answers; a stale socket file from a dead one is replaced.
            if port::Port::connect(path).is_ok() {
                return Err(NetError::InUse(path.clone()));
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = port::seqpacket()?;
        let addr = UnixAddr::new(path).map_err(|e| NetError::Socket("socket path", e))?;
        bind(listener.as_raw_fd(), &addr).map_err(|e| NetError::Bind(path.clone(), e))?;
        listen(&listener, Backlog::new(64).unwrap_or(Backlog::MAXCONN))
            .map_err(|e| NetError::Bind(path.clone(), e))?;
        let mut ports = BTreeMap::new();
        let mut next_port = 1;
        let mut uplink = None;
        if let Some(name) = &cfg.uplink {
            // The host's network is one more port: MACs behind it are learned like a VM's.
            ports.insert(next_port, Link::Tap(crate::tap::Tap::open(name)?));
            uplink = Some(next_port);
            next_port += 1;
        }
        Ok(Switch {
            listener,
            ports,
            uplink,
            next_port,
            table: MacTable::default(),
            gateway: GatewayStack::new(&cfg.gateway, &cfg.forwards)?,
            buf: vec![0; MAX_FRAME + 1],
            stats: SwitchStats::default(),
        })
    }

    /// The host addresses of the forwarded ports (useful when a rule asked for port 0).
    pub fn forward_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.gateway.local_addrs()
    }

    /// Serves until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), NetError> {
        while !stop.load(Ordering::Relaxed) {
            self.turn(Duration::from_millis(100));
        }
        Ok(())
    }

    /// One turn of the loop: wait (at most `max_wait`) for something to do, then do it. Only
    /// what poll reported ready is read: a read that finds nothing costs a system call, and
    /// this loop turns thousands of times a second under load.
    pub fn turn(&mut self, max_wait: Duration) {
        let wait = self.gateway.delay().min(max_wait);
        let ids: Vec<PortId> = self.ports.keys().copied().collect();
        let (accept, ports_ready, gateway_ready) = {
            let mut fds: Vec<PollFd> = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            fds.extend(
                self.ports
                    .values()
                    .map(|link| PollFd::new(link.as_fd(), PollFlags::POLLIN)),
            );
            // A socket wanted for nothing is left out: a hung-up one would wake poll at once.
            let gateway = self.gateway.fds();
            let mut watched = Vec::new();
            for (i, (fd, want)) in gateway.into_iter().enumerate() {
                if want.read || want.write {
                    let mut flags = PollFlags::empty();
                    flags.set(PollFlags::POLLIN, want.read);
                    flags.set(PollFlags::POLLOUT, want.write);
                    fds.push(PollFd::new(fd, flags));
                    watched.push(i);
                }
            }
            let t = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
            let polled = poll(&mut fds, t).is_ok();
            // If poll failed, look at everything (as if all were ready).
            let ready = |fd: &PollFd| !polled || fd.revents().is_some_and(|r| !r.is_empty());
            let ports_ready: Vec<bool> = fds[1..1 + ids.len()].iter().map(ready).collect();
            let mut gateway_ready = vec![!polled; self.gateway.fd_count()];
            for (slot, fd) in watched.iter().zip(&fds[1 + ids.len()..]) {
                gateway_ready[*slot] = ready(fd);
            }
            (ready(&fds[0]), ports_ready, gateway_ready)
        };
        if accept {
            self.accept();
        }
        for (id, ready) in ids.into_iter().zip(ports_ready) {
            if ready {
                self.drain(id);
            }
        }
        let out = self.gateway.poll(&gateway_ready);
        for frame in out {
            self.forward(frame, GATEWAY);
        }
    }

    fn accept(&mut self) {
        while let Ok(fd) = accept4(
            self.listener.as_raw_fd(),
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        ) {
            let fd = port::owned(fd);
            port::tune(&fd);
            self.ports.insert(self.next_port, Link::Socket(fd));
            self.next_port += 1;
            self.stats.ports_connected += 1;
        }
    }

    fn drain(&mut self, id: PortId) {
        for _ in 0..BURST {
            let Some(link) = self.ports.get(&id) else {
                return;
            };
            match link.recv(&mut self.buf) {
                Recv::Frame(frame) => self.forward(frame, id),
                Recv::Empty => return,
                Recv::Malformed(_) => self.stats.malformed += 1,
                Recv::Closed => {
                    // The VM is gone (killed mid-traffic, or powered off): forget it, serve on.
                    // (A TAP uplink that fails is dropped the same way.)
                    self.ports.remove(&id);
                    if self.uplink == Some(id) {
                        self.uplink = None;
                    }
                    self.table.forget_port(id);
                    self.stats.ports_gone += 1;
                    return;
                }
            }
        }
    }

    fn forward(&mut self, frame: Vec<u8>, from: PortId) {
        self.stats.frames += 1;
        self.stats.bytes += frame.len() as u64;
        match self.table.route(&frame, from) {
            None => {}
            Some(Dest::One(GATEWAY)) => self.gateway.input(frame),
            Some(Dest::One(p)) => self.send(p, &frame),
            Some(Dest::Flood) => {
                let targets: Vec<PortId> =
                    self.ports.keys().copied().filter(|&p| p != from).collect();
                for p in targets {
                    self.send(p, &frame);
                }
                if from != GATEWAY {
                    self.gateway.input(frame);
                }
            }
        }
    }

    fn send(&mut self, to: PortId, frame: &[u8]) {
        let sent = self.ports.get(&to).is_some_and(|link| link.send(frame));
        if !sent {
            self.stats.dropped += 1;
        }
    }

    /// Forwarded host connections open now.
    pub fn connections(&self) -> usize {
        self.gateway.connections()
    }

    /// VM ports connected now.
    pub fn ports(&self) -> usize {
        self.ports.len() - usize::from(self.uplink.is_some())
    }

    /// The port a MAC was last seen on.
    pub fn port_of(&self, mac: &[u8; 6]) -> Option<PortId> {
        self.table.port_of(mac)
    }
}

/// Binds and serves `cfg` until `stop` is set.
pub fn run_switch(cfg: &SwitchConfig, stop: &AtomicBool) -> Result<(), NetError> {
    Switch::bind(cfg)?.run(stop)
}
