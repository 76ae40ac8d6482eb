//! A TAP device: frames to and from the host kernel's network stack, for real deployments where
//! a Linux bridge (and the physical network behind it) connects hosts. A VM NIC can sit on one
//! directly (`ftvm run --net tap:NAME`), or the switch can use one as its uplink.
//!
//! One read or write is one frame (no packet-information header), like a SEQPACKET message.

use std::os::fd::{AsFd, BorrowedFd};

use tun_rs::{DeviceBuilder, Layer, SyncDevice};

use crate::NetError;
use crate::port::{MIN_FRAME, Recv};

pub struct Tap {
    dev: SyncDevice,
    name: String,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tap({})", self.name)
    }
}

impl Tap {
    /// Attaches to the TAP device `name`, creating it if it does not exist (creating one needs
    /// CAP_NET_ADMIN; a device made beforehand with `ip tuntap add NAME mode tap user U` does
    /// not).
    pub fn open(name: &str) -> Result<Tap, NetError> {
        let err = |e: std::io::Error| NetError::Tap(name.to_string(), e);
        let dev = DeviceBuilder::new()
            .name(name)
            .layer(Layer::L2)
            .build_sync()
            .map_err(err)?;
        dev.set_nonblocking(true).map_err(err)?;
        Ok(Tap {
            dev,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one frame without blocking; false if it was dropped.
    pub fn send(&self, frame: &[u8]) -> bool {
        matches!(self.dev.send(frame), Ok(n) if n == frame.len())
    }

    /// Receives one frame without blocking.
    pub fn recv(&self, buf: &mut [u8]) -> Recv {
        use std::io::ErrorKind::{Interrupted, WouldBlock};
        match self.dev.recv(buf) {
            Ok(n) if n < MIN_FRAME => Recv::Malformed(n),
            Ok(n) => Recv::Frame(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), WouldBlock | Interrupted) => Recv::Empty,
            Err(_) => Recv::Closed,
        }
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }
}
