//! The logging channel's byte stream, as the primary's and the backup's drivers use it: a
//! trait, so that what carries the log is chosen outside them.
//!
//! `ftvm primary` and `ftvm backup` carry it over TCP; the drivers' own tests also run them
//! over a Unix socket pair in one process; `secure` seals either with Noise.
//! What the drivers need beyond reading and writing is what lets the VM's thread never block
//! on the channel: a look at whether the send queue takes a message now, a read of whatever
//! has arrived without waiting, and a descriptor to wait on next to the guest's own.
//!
//! The protocol's decisions do not see a transport at all: they are `rule`'s, fed with what
//! arrived and when (the simulator feeds them its simulated network).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv};

/// A connection carrying the logging channel (or a live clone) between two hosts.
pub trait Transport: Read + Write + AsFd + Send + Sync {
    /// Another handle on the same connection: one thread reads while another writes.
    fn duplicate(&self) -> io::Result<Connection>;
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    /// Blocking reads give up after `timeout` (`None`: never).
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Blocking writes give up after `timeout` (`None`: never).
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Whether `bytes` more (and a message header) fit in the send queue now, so that a write
    /// cannot block.
    fn has_room(&self, bytes: usize) -> bool;
    /// What has arrived, without waiting: `Ok(0)` once the peer closed, `WouldBlock` when
    /// nothing is there yet.
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Who is at the other end, for the operator (an address, or empty if unknown).
    fn peer(&self) -> String;
}

/// An owned connection, whatever carries it.
pub type Connection = Box<dyn Transport>;

impl std::fmt::Debug for dyn Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection to {:?}", self.peer())
    }
}

/// A stream socket as a transport: what TCP and Unix sockets share, and how to name the peer.
macro_rules! socket_transport {
    ($socket:ty, $peer:expr) => {
        impl Transport for $socket {
            fn duplicate(&self) -> io::Result<Connection> {
                Ok(Box::new(self.try_clone()?))
            }

            fn shutdown(&self, how: Shutdown) -> io::Result<()> {
                <$socket>::shutdown(self, how)
            }

            fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
                <$socket>::set_read_timeout(self, timeout)
            }

            fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
                <$socket>::set_write_timeout(self, timeout)
            }

            fn has_room(&self, bytes: usize) -> bool {
                socket_has_room(self.as_raw_fd(), bytes)
            }

            fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
                read_now(self.as_raw_fd(), buf)
            }

            fn peer(&self) -> String {
                let name: fn(&$socket) -> Option<String> = $peer;
                name(self).unwrap_or_default()
            }
        }
    };
}

socket_transport!(TcpStream, |s| s.peer_addr().ok().map(|a| a.to_string()));
socket_transport!(UnixStream, |s| s
    .peer_addr()
    .ok()
    .and_then(|a| a.as_pathname().map(|p| p.display().to_string())));

/// A message larger than this never counts as fitting (the sender thread sends it instead).
const MAX_UNBLOCKED: usize = 1 << 20;

/// Whether the socket `fd`'s send queue takes `bytes` now, by what the kernel says is queued
/// and how large the queue is.
fn socket_has_room(fd: RawFd, bytes: usize) -> bool {
    if bytes > MAX_UNBLOCKED {
        return false;
    }
    let mut queued: libc::c_int = 0;
    let mut size: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is an open socket its owner borrows for the whole call. SIOCOUTQ
    // (TIOCOUTQ on Linux, for TCP and Unix stream sockets alike) writes one c_int through its
    // pointer, and SO_SNDBUF writes at most `len` bytes; both point at live locals of that size.
    let ok = unsafe {
        libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) == 0
            && libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&mut size as *mut libc::c_int).cast(),
                &mut len,
            ) == 0
    };
    // The kernel counts its own overhead in SO_SNDBUF (about half of it): keep to the other
    // half.
    ok && (queued.max(0) as usize) + bytes + 64 <= (size.max(0) as usize) / 2
}

fn read_now(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match recv(fd, buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_pair_carries_bytes_and_reports_what_waits() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, b): (Connection, Connection) = (Box::new(a), Box::new(b));
        let mut buf = [0u8; 16];
        let e = b.read_now(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "nothing sent yet");
        assert!(a.has_room(100));
        assert!(
            !a.has_room(MAX_UNBLOCKED + 1),
            "a huge message is the sender's"
        );
        a.write_all(b"log").unwrap();
        assert_eq!(b.read_now(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"log");
        let mut again = a.duplicate().unwrap();
        again.write_all(b"!").unwrap();
        Transport::shutdown(&*a, Shutdown::Write).unwrap();
        assert_eq!(b.read_now(&mut buf).unwrap(), 1);
        assert_eq!(b.read_now(&mut buf).unwrap(), 0, "closed: end of stream");
    }
}
