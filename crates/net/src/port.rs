//! The link between a VM's NIC and the switch: a Unix `SOCK_SEQPACKET` socket (or a TAP device).
//!
//! One message is one Ethernet frame, delivered whole or not at all, so a VM process that dies
//! mid-frame leaves nothing half-written for the switch to misparse; end of file tells the switch
//! the VM is gone. Sends never block: a full socket buffer drops the frame, as a congested NIC
//! would, and TCP above recovers.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv, send, setsockopt, socket,
    sockopt,
};

use crate::NetError;
use crate::tap::Tap;

/// The largest frame carried (jumbo frames included); larger messages are dropped.
pub const MAX_FRAME: usize = 65_550;
/// The smallest: an Ethernet header.
pub const MIN_FRAME: usize = 14;
/// Socket buffers: room for a burst of full-size frames in flight.
const SOCKET_BUFFER: usize = 4 << 20;

/// What a non-blocking receive found.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    Frame(Vec<u8>),
    /// Nothing waiting.
    Empty,
    /// The other end closed.
    Closed,
    /// A message of the wrong size was dropped.
    Malformed(usize),
}

pub(crate) fn seqpacket() -> Result<OwnedFd, NetError> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| NetError::Socket("socket", e))?;
    tune(&fd);
    Ok(fd)
}

/// Large buffers; failures only cost throughput.
pub(crate) fn tune(fd: &OwnedFd) {
    let _ = setsockopt(fd, sockopt::SndBuf, &SOCKET_BUFFER);
    let _ = setsockopt(fd, sockopt::RcvBuf, &SOCKET_BUFFER);
}

/// Sends one frame without blocking; false if it was dropped (buffer full or peer gone).
pub(crate) fn send_frame(fd: RawFd, frame: &[u8]) -> bool {
    matches!(send(fd, frame, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL), Ok(n) if n == frame.len())
}

/// Receives one frame without blocking.
pub(crate) fn recv_frame(fd: RawFd, buf: &mut [u8]) -> Recv {
    // MSG_TRUNC: the return value is the message's real length, so an oversized one is seen.
    match recv(fd, buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC) {
        Ok(0) => Recv::Closed,
        Ok(n) if !(MIN_FRAME..=buf.len()).contains(&n) => Recv::Malformed(n),
        Ok(n) => Recv::Frame(buf[..n].to_vec()),
        Err(Errno::EAGAIN) | Err(Errno::EINTR) => Recv::Empty,
        Err(_) => Recv::Closed,
    }
}

/// What carries frames: a SEQPACKET socket (switch and VM, the two ends of a switch port) or a
/// TAP device.
#[derive(Debug)]
pub(crate) enum Link {
    Socket(OwnedFd),
    Tap(Tap),
}

impl Link {
    pub fn send(&self, frame: &[u8]) -> bool {
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            return false;
        }
        match self {
            Link::Socket(fd) => send_frame(fd.as_raw_fd(), frame),
            Link::Tap(t) => t.send(frame),
        }
    }

    pub fn recv(&self, buf: &mut [u8]) -> Recv {
        match self {
            Link::Socket(fd) => recv_frame(fd.as_raw_fd(), buf),
            Link::Tap(t) => t.recv(buf),
        }
    }
}

impl AsFd for Link {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Link::Socket(fd) => fd.as_fd(),
            Link::Tap(t) => t.as_fd(),
        }
    }
}

/// A VM NIC's link to the outside: a switch port, or a TAP device.
#[derive(Debug)]
pub struct Port {
    link: Link,
    buf: Vec<u8>,
}

impl Port {
    /// Connects to the switch listening at `path`.
    pub fn connect(path: &Path) -> Result<Port, NetError> {
        let fd = seqpacket()?;
        let addr = UnixAddr::new(path).map_err(|e| NetError::Socket("socket path", e))?;
        connect(fd.as_raw_fd(), &addr).map_err(|e| NetError::Connect(path.to_path_buf(), e))?;
        Ok(Port::from_link(Link::Socket(fd)))
    }

    /// The TAP device `name` (created if absent), for a NIC bridged by the host.
    pub fn tap(name: &str) -> Result<Port, NetError> {
        Ok(Port::from_link(Link::Tap(Tap::open(name)?)))
    }

    fn from_link(link: Link) -> Port {
        Port {
            link,
            buf: vec![0; MAX_FRAME + 1],
        }
    }

    /// Wraps a connected socket (one end of a socketpair, in tests).
    pub(crate) fn from_fd(fd: OwnedFd) -> Port {
        Port::from_link(Link::Socket(fd))
    }

    /// Sends a frame; false if it was dropped.
    pub fn send(&self, frame: &[u8]) -> bool {
        self.link.send(frame)
    }

    /// The next frame, if one is waiting; `Err(Closed)` once the switch is gone.
    pub fn try_recv(&mut self) -> Result<Option<Vec<u8>>, NetError> {
        loop {
            match self.link.recv(&mut self.buf) {
                Recv::Frame(f) => return Ok(Some(f)),
                Recv::Empty => return Ok(None),
                Recv::Closed => return Err(NetError::Closed),
                Recv::Malformed(_) => continue,
            }
        }
    }

    /// Waits up to `timeout` for a frame.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, NetError> {
        if let Some(f) = self.try_recv()? {
            return Ok(Some(f));
        }
        wait_readable(&[self.link.as_fd()], timeout);
        self.try_recv()
    }

    /// Whether a frame (or the end) is waiting.
    pub fn readable(&self) -> bool {
        wait_readable(&[self.link.as_fd()], Duration::ZERO)
    }
}

impl AsFd for Port {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }
}

/// Waits until one of `fds` is readable or `timeout` passes; true if one is.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> bool {
    let mut polls: Vec<PollFd> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    // Whole milliseconds, rounded up: rounding down turned every sub-millisecond wait into a
    // busy loop until the guest's next timer.
    let ms = timeout.as_micros().div_ceil(1000);
    let t = i32::try_from(ms)
        .ok()
        .and_then(|ms| PollTimeout::try_from(ms).ok())
        .unwrap_or(PollTimeout::MAX);
    matches!(poll(&mut polls, t), Ok(n) if n > 0)
}

/// A connected pair of ports (tests, and VMs wired without a switch).
pub fn pair() -> Result<(Port, Port), NetError> {
    let (a, b) = nix::sys::socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(|e| NetError::Socket("socketpair", e))?;
    tune(&a);
    tune(&b);
    Ok((Port::from_fd(a), Port::from_fd(b)))
}

/// Takes ownership of a raw descriptor returned by `accept`.
pub(crate) fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by accept(2) and is owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_whole_and_a_closed_peer_is_seen() {
        let (a, mut b) = pair().unwrap();
        let frame: Vec<u8> = (0..1500).map(|i| i as u8).collect();
        assert!(a.send(&frame));
        assert!(!a.send(&[1, 2, 3]), "runts are not sent");
        assert_eq!(b.recv_timeout(Duration::from_secs(1)).unwrap(), Some(frame));
        assert_eq!(b.try_recv().unwrap(), None);
        drop(a);
        assert!(matches!(b.try_recv(), Err(NetError::Closed)));
    }
}
