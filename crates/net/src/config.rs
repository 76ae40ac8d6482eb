//! The switch's configuration and the `--forward` rule syntax.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::str::FromStr;

/// A host port forwarded to a guest service: `tcp:HOST_IP:PORT=GUEST_IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Where the switch listens on the host.
    pub host: SocketAddr,
    /// The guest address connections are relayed to.
    pub guest: SocketAddrV4,
}

impl FromStr for Forward {
    type Err = String;

    fn from_str(s: &str) -> Result<Forward, String> {
        let usage =
            "expected tcp:HOST_IP:PORT=GUEST_IP:PORT, e.g. tcp:127.0.0.1:6379=10.0.2.15:6379";
        let rest = s
            .strip_prefix("tcp:")
            .ok_or_else(|| format!("forward '{s}': only tcp is supported; {usage}"))?;
        let (host, guest) = rest
            .split_once('=')
            .ok_or_else(|| format!("forward '{s}': no '='; {usage}"))?;
        let host: SocketAddr = host
            .parse()
            .map_err(|_| format!("forward '{s}': bad host address '{host}'; {usage}"))?;
        let guest: SocketAddrV4 = guest
            .parse()
            .map_err(|_| format!("forward '{s}': bad guest address '{guest}'; {usage}"))?;
        if guest.port() == 0 {
            return Err(format!("forward '{s}': the guest port cannot be 0"));
        }
        Ok(Forward { host, guest })
    }
}

/// The built-in gateway: the switch's own address on the virtual network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub mac: [u8; 6],
}

impl Default for Gateway {
    /// QEMU user networking's gateway, so guests configured for it work unchanged.
    fn default() -> Gateway {
        Gateway {
            ip: Ipv4Addr::new(10, 0, 2, 2),
            prefix: 24,
            mac: [0x52, 0x54, 0x00, 0x12, 0x35, 0x02],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchConfig {
    /// The Unix socket VMs connect to.
    pub socket_path: PathBuf,
    pub forwards: Vec<Forward>,
    pub gateway: Gateway,
    /// A TAP device that connects the switch to the host's network (a bridge), if any.
    pub uplink: Option<String>,
}

impl SwitchConfig {
    pub fn new(socket_path: PathBuf) -> SwitchConfig {
        SwitchConfig {
            socket_path,
            forwards: Vec::new(),
            gateway: Gateway::default(),
            uplink: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_rules_parse_and_bad_ones_say_why() {
        let f: Forward = "tcp:127.0.0.1:6379=10.0.2.15:6379".parse().unwrap();
        assert_eq!(f.host, "127.0.0.1:6379".parse().unwrap());
        assert_eq!(f.guest, "10.0.2.15:6379".parse().unwrap());
        for (bad, why) in [
            ("udp:127.0.0.1:1=10.0.2.15:1", "only tcp"),
            ("tcp:127.0.0.1:6379", "no '='"),
            ("tcp:localhost:1=10.0.2.15:1", "bad host address"),
            ("tcp:127.0.0.1:1=10.0.2.15", "bad guest address"),
            ("tcp:127.0.0.1:1=10.0.2.15:0", "cannot be 0"),
        ] {
            let e = bad.parse::<Forward>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
