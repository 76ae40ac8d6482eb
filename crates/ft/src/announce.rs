//! The frames a backup that goes live sends so the network finds the VM at its new port.
//!
//! The guest keeps its MAC and IP across a failover; only the switch port behind them moves.
//! A RARP (as VMware's FT sends) and a gratuitous ARP from the new port teach every learning
//! switch on the way, and the ARP refreshes neighbours' caches. They are made host-side, not by
//! the guest, so the guest's state is untouched.

const BROADCAST: [u8; 6] = [0xff; 6];

fn arp_like(ethertype: u16, op: u16, mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]); // Ethernet, IPv4, lengths
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(if ethertype == 0x8035 { &mac } else { &[0; 6] });
    f.extend_from_slice(&ip);
    f.resize(60, 0); // the Ethernet minimum
    f
}

/// The announcements for a VM with `mac` (and `ip`, when the backup learned it from the
/// guest's own frames).
pub fn announcements(mac: [u8; 6], ip: Option<[u8; 4]>) -> Vec<Vec<u8>> {
    let mut frames = vec![arp_like(0x8035, 3, mac, [0; 4])];
    if let Some(ip) = ip {
        frames.push(arp_like(0x0806, 1, mac, ip));
    }
    frames
}

/// The IPv4 address a guest's frame is sent from (IPv4 or ARP), if it has one.
pub fn source_ipv4(frame: &[u8]) -> Option<[u8; 4]> {
    let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    let at = match ethertype {
        0x0800 => 26,
        0x0806 => 28,
        _ => return None,
    };
    let ip: [u8; 4] = frame.get(at..at + 4)?.try_into().ok()?;
    (ip != [0; 4]).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_carry_the_vms_addresses() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let f = announcements(mac, Some([10, 0, 2, 15]));
        assert_eq!(f.len(), 2);
        let (rarp, arp) = (&f[0], &f[1]);
        assert_eq!(&rarp[6..12], &mac);
        assert_eq!(&rarp[12..14], &[0x80, 0x35]);
        assert_eq!(&arp[12..14], &[0x08, 0x06]);
        // The gratuitous ARP names the VM as sender and target.
        assert_eq!(source_ipv4(arp), Some([10, 0, 2, 15]));
        assert_eq!(&arp[38..42], &[10, 0, 2, 15]);
        assert_eq!(announcements(mac, None).len(), 1);
    }

    #[test]
    fn source_addresses_of_odd_frames() {
        assert_eq!(source_ipv4(&[]), None);
        assert_eq!(source_ipv4(&[0; 13]), None);
        let mut ip = vec![0u8; 34];
        ip[12..14].copy_from_slice(&[0x08, 0x00]);
        ip[26..30].copy_from_slice(&[10, 0, 2, 15]);
        assert_eq!(source_ipv4(&ip), Some([10, 0, 2, 15]));
        assert_eq!(source_ipv4(&ip[..28]), None);
    }
}
