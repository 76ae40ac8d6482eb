//! The learning switch's forwarding decisions, apart from any I/O.

use std::collections::BTreeMap;

/// A switch port: a VM's socket, the gateway, an uplink.
pub type PortId = u32;

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    One(PortId),
    /// Every port but the one it came from.
    Flood,
}

/// MAC address -> the port it was last seen on.
#[derive(Debug, Default)]
pub struct MacTable {
    map: BTreeMap<[u8; 6], PortId>,
}

fn mac_at(frame: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0; 6];
    m.copy_from_slice(&frame[at..at + 6]);
    m
}

impl MacTable {
    /// Learns the frame's source and decides where it goes; `None`: nowhere (its destination
    /// sits on the port it came from). `frame` is at least an Ethernet header.
    pub fn route(&mut self, frame: &[u8], from: PortId) -> Option<Dest> {
        let dst = mac_at(frame, 0);
        let src = mac_at(frame, 6);
        // A multicast source is bogus: never learn it. A unicast one moves at once, which is
        // how a VM that goes live elsewhere takes its traffic with it.
        if src[0] & 1 == 0 {
            self.map.insert(src, from);
        }
        if dst[0] & 1 != 0 {
            return Some(Dest::Flood);
        }
        match self.map.get(&dst) {
            Some(&p) if p == from => None,
            Some(&p) => Some(Dest::One(p)),
            None => Some(Dest::Flood),
        }
    }

    /// Drops every MAC learnt on `port` (it disconnected).
    pub fn forget_port(&mut self, port: PortId) {
        self.map.retain(|_, p| *p != port);
    }

    pub fn port_of(&self, mac: &[u8; 6]) -> Option<PortId> {
        self.map.get(mac).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x06]);
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const BCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn learns_floods_unknown_and_moves_a_mac() {
        let mut t = MacTable::default();
        assert_eq!(t.route(&frame(B, A), 1), Some(Dest::Flood), "B unknown");
        assert_eq!(t.route(&frame(A, B), 2), Some(Dest::One(1)));
        assert_eq!(t.route(&frame(B, A), 1), Some(Dest::One(2)));
        assert_eq!(t.route(&frame(BCAST, A), 1), Some(Dest::Flood));
        // A gratuitous ARP from A on port 3: A's traffic goes there now.
        assert_eq!(t.route(&frame(BCAST, A), 3), Some(Dest::Flood));
        assert_eq!(t.route(&frame(A, B), 2), Some(Dest::One(3)));
        t.forget_port(3);
        assert_eq!(t.route(&frame(A, B), 2), Some(Dest::Flood));
        assert_eq!(t.route(&frame(B, B), 2), None, "hairpin");
    }
}
