//! ftvm's virtual network: the world outside the VMs.
//!
//! Job: a learning L2 Ethernet switch, run as its own process (`ftvm switch`), that VM NICs join
//! over a local `SOCK_SEQPACKET` socket ([`Port`]), with a built-in gateway (a user-space TCP/IP
//! stack) that forwards host ports to guest services; TAP devices connect a NIC or the switch to
//! the host's own network (a bridge) for deployments across hosts.
//!
//! Invariants: a frame goes to the port its destination MAC was last seen on, or floods when
//! unknown or multicast, so a VM that announces its MAC from a new port (a backup going live)
//! takes its traffic with it at once; a VM that dies, even mid-frame, only removes its port;
//! nothing a VM or host client sends can panic the switch or make it queue without bound
//! (socket buffers are the queues; a full one drops the frame and counts it); forwarded TCP
//! connections live in the gateway, outside the VMs, so they survive a failover.

mod config;
mod gateway;
mod port;
mod switch;
mod table;
mod tap;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use thiserror::Error;

pub use config::{Forward, Gateway, SwitchConfig};
pub use port::{MAX_FRAME, Port, pair, wait_readable};
pub use switch::{Switch, SwitchStats, run_switch};
pub use table::{Dest, MacTable, PortId};
pub use tap::Tap;

#[derive(Debug, Error)]
pub enum NetError {
    #[error("{0}: {1}")]
    Socket(&'static str, nix::errno::Errno),
    #[error("cannot reach the switch at {0}: {1} (is `ftvm switch` running?)")]
    Connect(PathBuf, nix::errno::Errno),
    #[error("cannot listen on {0}: {1}")]
    Bind(PathBuf, nix::errno::Errno),
    #[error("another switch is already serving {0}")]
    InUse(PathBuf),
    #[error("cannot listen on the forwarded host address {0}: {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
    #[error(
        "cannot attach to the TAP device {0}: {1} (creating one needs root or CAP_NET_ADMIN; or make it first with `ip tuntap add {0} mode tap user $USER`)"
    )]
    Tap(String, std::io::Error),
    #[error("the switch closed the connection")]
    Closed,
}
