//! Going live: what a side does, in order, the moment the VM starts running on it.
//!
//! A backup that won its claim (or a host a primary moved to) holds a whole machine whose
//! devices were replayed from the log, not attached. Before the guest runs one instruction
//! here, the network must learn where the VM is now (the announcements go out on the new NIC
//! before any frame of the guest's, so a switch never sends the VM's traffic to the dead port
//! after the guest answered from this one), and the I/O the dead primary left unfinished is
//! issued again (its completions never reached the log, so the guest still waits for them).
//! The caller opens the devices (files, sockets, TAP: the host's business); this module decides
//! what happens to them and says so in one [`Event::Live`].

use ftvm_host::IoBackends;
use ftvm_machine::Machine;

use crate::announce;
use crate::event::{Event, emit};

/// The VM's NIC on the side going live.
pub struct LiveNic {
    /// The device slot the guest's virtio-net sits at.
    pub slot: u8,
    /// Its link (a switch port or a TAP device), just opened.
    pub port: ftvm_net::Port,
    /// What the operator named it (`switch:PATH`, `tap:NAME`), for the event.
    pub name: String,
    /// The guest's MAC address, which the announcements carry.
    pub mac: [u8; 6],
}

/// Attaches `nic` (announcing the VM on it first) and issues again what the dead primary left
/// pending; emits and returns the [`Event::Live`] of `generation`. `ip` is the guest's address
/// if the replay saw one in its frames (the gratuitous ARP needs it).
pub fn go_live(
    machine: &mut Machine,
    io: &mut IoBackends,
    generation: u64,
    nic: Option<LiveNic>,
    ip: Option<[u8; 4]>,
) -> Event {
    let mut net = None;
    if let Some(nic) = nic {
        for frame in announce::announcements(nic.mac, ip) {
            nic.port.send(&frame);
        }
        debug_assert!(!io.nets.contains_key(&nic.slot), "a NIC attached twice");
        io.nets.insert(nic.slot, nic.port);
        net = Some(nic.name);
    }
    let reissued = reissue_pending_io(machine, io);
    let live = Event::Live {
        generation,
        icount: machine.icount(),
        disks: io.disks.len(),
        net,
        reissued,
        announced: ip,
    };
    emit(live.clone());
    live
}

/// Issues again, on this side's devices, the I/O a dead primary left unfinished; the count
/// issued. (The simulator's go-live does the same through its own disk.)
pub fn reissue_pending_io(machine: &mut Machine, io: &mut IoBackends) -> usize {
    let pending = machine.outstanding_io();
    for (slot, request) in &pending {
        if let Some(done) = io.serve(*slot, request) {
            machine.apply(&done);
        }
    }
    pending.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The network hears where the VM is before anything else arrives from the new NIC, and
    /// the NIC is the guest's from then on.
    #[test]
    fn going_live_announces_the_vm_first_then_attaches_its_nic() {
        let (port, mut wire) = ftvm_net::pair().unwrap();
        let mut machine = Machine::blank(16 << 20).unwrap();
        let mut io = IoBackends::default();
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let nic = LiveNic {
            slot: 1,
            port,
            name: "tap:ftvm0".into(),
            mac,
        };
        let live = go_live(&mut machine, &mut io, 7, Some(nic), Some([10, 0, 2, 15]));
        let Event::Live {
            generation,
            net,
            reissued,
            announced,
            ..
        } = live
        else {
            panic!("not a Live event: {live:?}");
        };
        assert_eq!((generation, reissued), (7, 0));
        assert_eq!(net.as_deref(), Some("tap:ftvm0"));
        assert_eq!(announced, Some([10, 0, 2, 15]));
        assert!(io.nets.contains_key(&1), "the NIC was not attached");
        let rarp = wire.try_recv().unwrap().expect("no RARP");
        let arp = wire.try_recv().unwrap().expect("no gratuitous ARP");
        assert_eq!((&rarp[6..12], &rarp[12..14]), (&mac[..], &[0x80, 0x35][..]));
        assert_eq!(&arp[12..14], &[0x08, 0x06]);
        assert_eq!(&arp[28..32], &[10, 0, 2, 15]);
        assert!(wire.try_recv().unwrap().is_none());
    }
}
