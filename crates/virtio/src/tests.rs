//! Drives the devices through the register file the way a driver does, with rings built by
//! hand in a small RAM.

use ftvm_cpu::Ram;

use crate::block::{Block, S_IOERR, S_OK};
use crate::net::Net;
use crate::rng::Rng;
use crate::{BlockOp, Device, Request, VirtioMmio};

const BASE: u64 = 0x8000_0000;
const DESC: u64 = BASE + 0x1000;
const AVAIL: u64 = BASE + 0x2000;
const USED: u64 = BASE + 0x3000;
const DATA: u64 = BASE + 0x10000;
const QSIZE: u16 = 16;

/// A minimal driver: one queue at a time, descriptors allocated from 0 each chain.
struct Driver {
    ram: Ram,
    dev: VirtioMmio,
    avail_idx: u16,
    next_desc: u16,
}

impl Driver {
    fn new(device: Device) -> Driver {
        let mut d = Driver {
            ram: Ram::new(BASE, 1 << 20),
            dev: VirtioMmio::new(device),
            avail_idx: 0,
            next_desc: 0,
        };
        assert_eq!(d.reg(0x000), 0x7472_6976);
        assert_eq!(d.reg(0x004), 2);
        d.set(0x070, 1 | 2);
        d.set(0x024, 1);
        d.set(0x020, 1); // VERSION_1
        d.set(0x070, 1 | 2 | 8);
        assert_eq!(d.reg(0x070) & 8, 8, "FEATURES_OK accepted");
        d
    }

    fn reg(&self, off: u64) -> u64 {
        self.dev.read(off, 4).unwrap()
    }

    fn set(&mut self, off: u64, v: u64) {
        self.dev.write(off, 4, v).unwrap();
    }

    fn setup_queue(&mut self, q: u32, desc: u64, avail: u64, used: u64) {
        self.set(0x030, q as u64);
        assert!(self.reg(0x034) >= QSIZE as u64);
        self.set(0x038, QSIZE as u64);
        self.set(0x080, desc & 0xffff_ffff);
        self.set(0x084, desc >> 32);
        self.set(0x090, avail & 0xffff_ffff);
        self.set(0x094, avail >> 32);
        self.set(0x0a0, used & 0xffff_ffff);
        self.set(0x0a4, used >> 32);
        self.set(0x044, 1);
    }

    fn start(&mut self) {
        self.setup_queue(0, DESC, AVAIL, USED);
        self.set(0x070, 1 | 2 | 8 | 4);
    }

    /// Writes a descriptor; returns its index.
    fn desc(&mut self, table: u64, addr: u64, len: u32, write: bool, next: Option<u16>) -> u16 {
        let i = self.next_desc;
        self.next_desc += 1;
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        let flags = if next.is_some() { 1 } else { 0 } | if write { 2 } else { 0 };
        raw[12..14].copy_from_slice(&(flags as u16).to_le_bytes());
        raw[14..16].copy_from_slice(&next.unwrap_or(0).to_le_bytes());
        self.ram.write_bytes(table + 16 * i as u64, &raw).unwrap();
        i
    }

    fn offer(&mut self, avail: u64, head: u16) {
        let slot = (self.avail_idx % QSIZE) as u64;
        self.ram
            .write(avail + 4 + 2 * slot, 2, head as u64)
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.ram.write(avail + 2, 2, self.avail_idx as u64).unwrap();
    }

    fn notify(&mut self, q: u64) -> Vec<Request> {
        self.set(0x050, q);
        self.dev.process(&mut self.ram)
    }

    fn used_idx(&self, used: u64) -> u16 {
        self.ram.read(used + 2, 2).unwrap() as u16
    }

    fn used_entry(&self, used: u64, i: u16) -> (u32, u32) {
        let e = used + 4 + 8 * (i % QSIZE) as u64;
        (
            self.ram.read(e, 4).unwrap() as u32,
            self.ram.read(e + 4, 4).unwrap() as u32,
        )
    }

    fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.ram.read_bytes(addr, &mut v).unwrap();
        v
    }

    /// A block request at `at`: header, data buffer (device-writable for reads), and the
    /// status byte at `at + 0xfff`. Returns the head index.
    fn block_request(
        &mut self,
        kind: u32,
        sector: u64,
        data: &[u8],
        read_len: u32,
        at: u64,
    ) -> u16 {
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&kind.to_le_bytes());
        hdr[8..16].copy_from_slice(&sector.to_le_bytes());
        self.ram.write_bytes(at, &hdr).unwrap();
        let h = self.next_desc;
        self.desc(DESC, at, 16, false, Some(h + 1));
        if read_len > 0 {
            self.desc(DESC, at + 16, read_len, true, Some(h + 2));
        } else {
            self.ram.write_bytes(at + 16, data).unwrap();
            self.desc(DESC, at + 16, data.len() as u32, false, Some(h + 2));
        }
        self.desc(DESC, at + 0xfff, 1, true, None);
        self.offer(AVAIL, h);
        h
    }
}

fn block_driver() -> Driver {
    let mut d = Driver::new(Device::Block(Block::new(1 << 20, "ftvm-disk-0", false)));
    d.start();
    d
}

#[test]
fn block_write_then_read_round_trips_through_the_backend() {
    let mut d = block_driver();
    assert_eq!(d.reg(0x008), 2);
    assert_eq!(d.dev.read(0x100, 8), Some((1 << 20) / 512));
    let mut disk = vec![0u8; 1 << 20];

    let payload: Vec<u8> = (0..1024).map(|i| (i * 7) as u8).collect();
    d.block_request(1, 4, &payload, 0, DATA);
    let reqs = d.notify(0);
    let [
        Request::Block {
            id,
            op: BlockOp::Write { sector: 4, data },
        },
    ] = &reqs[..]
    else {
        panic!("one write expected, got {reqs:?}");
    };
    assert_eq!(data, &payload);
    assert_eq!(d.used_idx(USED), 0, "nothing used before the completion");
    disk[4 * 512..4 * 512 + 1024].copy_from_slice(data);
    d.dev.complete_block(*id, S_OK, vec![], &mut d.ram);
    assert_eq!(d.used_idx(USED), 1);
    assert!(d.dev.irq());
    assert_eq!(d.bytes(DATA + 0xfff, 1), [S_OK]);
    d.set(0x064, 1);
    assert!(!d.dev.irq());

    d.block_request(0, 4, &[], 1024, DATA + 0x4000);
    let reqs = d.notify(0);
    let [
        Request::Block {
            id,
            op: BlockOp::Read {
                sector: 4,
                len: 1024,
            },
        },
    ] = &reqs[..]
    else {
        panic!("one read expected, got {reqs:?}");
    };
    d.dev
        .complete_block(*id, S_OK, disk[4 * 512..5 * 512 + 512].to_vec(), &mut d.ram);
    assert_eq!(d.bytes(DATA + 0x4000 + 16, 1024), payload);
    assert_eq!(d.used_entry(USED, 1).1, 1025, "data plus status");
}

#[test]
fn overlapping_requests_complete_in_issue_order() {
    let mut d = block_driver();
    let first = d.block_request(1, 0, &[1u8; 512], 0, DATA);
    let second = d.block_request(1, 0, &[2u8; 512], 0, DATA + 0x4000);
    let third = d.block_request(1, 100, &[3u8; 512], 0, DATA + 0x8000);
    let reqs = d.notify(0);
    let ids: Vec<u64> = reqs
        .iter()
        .map(|r| match r {
            Request::Block { id, .. } => *id,
            _ => panic!(),
        })
        .collect();
    // The backend finishes the second write first: it is held behind the first.
    d.dev.complete_block(ids[1], S_OK, vec![], &mut d.ram);
    assert_eq!(d.used_idx(USED), 0);
    // The unrelated third is not held.
    d.dev.complete_block(ids[2], S_OK, vec![], &mut d.ram);
    assert_eq!(d.used_idx(USED), 1);
    assert_eq!(d.used_entry(USED, 0).0, third as u32);
    d.dev.complete_block(ids[0], S_OK, vec![], &mut d.ram);
    assert_eq!(d.used_idx(USED), 3);
    assert_eq!(d.used_entry(USED, 1).0, first as u32);
    assert_eq!(d.used_entry(USED, 2).0, second as u32);
}

#[test]
fn out_of_range_and_get_id_complete_inside_the_device() {
    let mut d = block_driver();
    d.block_request(0, (1 << 20) / 512, &[], 512, DATA);
    assert!(d.notify(0).is_empty());
    assert_eq!(d.bytes(DATA + 0xfff, 1), [S_IOERR]);
    d.block_request(8, 0, &[], 20, DATA + 0x4000);
    assert!(d.notify(0).is_empty());
    assert_eq!(&d.bytes(DATA + 0x4000 + 16, 11), b"ftvm-disk-0");
    assert_eq!(d.used_idx(USED), 2);
    // Flush reaches the backend.
    let n = d.next_desc;
    let h = d.desc(DESC, DATA + 0x8000, 16, false, Some(n + 1));
    d.desc(DESC, DATA + 0x8fff, 1, true, None);
    d.ram.write(DATA + 0x8000, 4, 4).unwrap();
    d.offer(AVAIL, h);
    assert!(matches!(
        &d.notify(0)[..],
        [Request::Block {
            op: BlockOp::Flush,
            ..
        }]
    ));
}

#[test]
fn pending_requests_survive_a_snapshot_and_are_listed() {
    let mut d = block_driver();
    d.block_request(1, 0, &[9u8; 512], 0, DATA);
    let reqs = d.notify(0);
    assert_eq!(d.dev.outstanding(), reqs);
    let json = serde_json_like(&d.dev);
    let mut restored = d.dev.clone();
    assert_eq!(serde_json_like(&restored), json);
    let Request::Block { id, .. } = reqs[0] else {
        panic!()
    };
    restored.complete_block(id, S_OK, vec![], &mut d.ram);
    assert!(restored.outstanding().is_empty());
}

/// Stands in for a snapshot: the Debug form covers every field.
fn serde_json_like(d: &VirtioMmio) -> String {
    format!("{d:?}")
}

#[test]
fn features_without_version_1_are_refused() {
    let mut d = Driver {
        ram: Ram::new(BASE, 1 << 20),
        dev: VirtioMmio::new(Device::Rng(Rng::default())),
        avail_idx: 0,
        next_desc: 0,
    };
    d.set(0x070, 3);
    d.set(0x024, 0);
    d.set(0x020, 0);
    d.set(0x070, 3 | 8);
    assert_eq!(d.reg(0x070) & 8, 0);
    // Unknown feature bits are refused too.
    d.set(0x070, 0);
    d.set(0x070, 3);
    d.set(0x024, 1);
    d.set(0x020, 1 | 2);
    d.set(0x070, 3 | 8);
    assert_eq!(d.reg(0x070) & 8, 0);
}

fn assert_error_state(d: &Driver) {
    assert!(
        d.dev.error().is_some(),
        "device should be in its error state"
    );
    assert_eq!(d.reg(0x070) & 64, 64, "DEVICE_NEEDS_RESET");
    assert!(d.dev.irq(), "config-change interrupt");
}

#[test]
fn descriptor_loop_is_an_error_not_a_hang() {
    let mut d = block_driver();
    d.desc(DESC, DATA, 16, false, Some(1));
    d.desc(DESC, DATA, 16, false, Some(0));
    d.offer(AVAIL, 0);
    assert!(d.notify(0).is_empty());
    assert_error_state(&d);
    // A reset clears it and the device works again.
    d.set(0x070, 0);
    assert!(d.dev.error().is_none());
}

#[test]
fn bad_rings_and_buffers_are_errors() {
    // Buffer outside RAM.
    let mut d = block_driver();
    d.desc(DESC, 0x1000, 16, false, None);
    d.offer(AVAIL, 0);
    d.notify(0);
    assert_error_state(&d);
    // Descriptor index beyond the table.
    let mut d = block_driver();
    d.offer(AVAIL, 200);
    d.notify(0);
    assert_error_state(&d);
    // Available index jumping past the queue size.
    let mut d = block_driver();
    d.ram.write(AVAIL + 2, 2, 100).unwrap();
    d.notify(0);
    assert_error_state(&d);
    // Rings outside RAM.
    let mut d = Driver::new(Device::Block(Block::new(1 << 20, "x", false)));
    d.setup_queue(0, 0x10, 0x20, 0x30);
    d.set(0x070, 15);
    d.notify(0);
    assert_error_state(&d);
    // Indirect descriptors were not offered.
    let mut d = block_driver();
    d.ram
        .write_bytes(DESC, &[0, 0, 1, 0x80, 0, 0, 0, 0, 16, 0, 0, 0, 4, 0, 0, 0])
        .unwrap();
    d.offer(AVAIL, 0);
    d.notify(0);
    assert_error_state(&d);
}

#[test]
fn random_descriptor_tables_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..300 {
        let device = match round % 3 {
            0 => Device::Block(Block::new(1 << 16, "r", false)),
            1 => Device::Net(Net {
                mac: [2, 0, 0, 0, 0, 1],
            }),
            _ => Device::Rng(Rng::default()),
        };
        let mut d = Driver::new(device);
        d.start();
        if round % 3 == 1 {
            d.setup_queue(1, DESC, AVAIL, USED);
        }
        for i in 0..QSIZE as u64 {
            let r = next();
            let addr = if r & 3 == 0 {
                next()
            } else {
                DATA + (next() % 0x8000)
            };
            let len = (next() % 0x3000) as u32;
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&((r >> 8) as u16 & 7).to_le_bytes());
            raw[14..16].copy_from_slice(&((r >> 24) as u16 % 12).to_le_bytes());
            d.ram.write_bytes(DESC + 16 * i, &raw).unwrap();
            d.ram.write(AVAIL + 4 + 2 * i, 2, next() % 10).unwrap();
        }
        d.ram.write(AVAIL + 2, 2, next() % 12).unwrap();
        for r in d.notify(0).into_iter().chain(d.notify(1)) {
            match r {
                Request::Block { id, op } => {
                    let len = match op {
                        BlockOp::Read { len, .. } => len as usize,
                        _ => 0,
                    };
                    d.dev.complete_block(id, S_OK, vec![7; len], &mut d.ram);
                }
                Request::Entropy { id, len } => {
                    d.dev
                        .complete_entropy(id, &vec![1; len as usize], &mut d.ram)
                }
                Request::NetTx(frame) => assert!(frame.len() <= crate::MAX_FRAME),
            }
        }
        d.dev.deliver_rx(&[0xab; 60], &mut d.ram);
    }
}

#[test]
fn net_transmits_and_receives_frames() {
    let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    let mut d = Driver::new(Device::Net(Net { mac }));
    assert_eq!(d.reg(0x008), 1);
    assert_eq!(d.dev.read(0x100, 4), Some(0x1200_5452));
    assert_eq!(d.dev.read(0x106, 2), Some(1), "link up");
    // RX queue 0 at the usual place, TX queue 1 elsewhere.
    d.setup_queue(0, DESC, AVAIL, USED);
    d.setup_queue(1, DESC + 0x800, AVAIL + 0x800, USED + 0x800);
    d.set(0x070, 15);
    assert!(!d.dev.rx_ready(&d.ram));
    assert!(
        !d.dev.deliver_rx(&[1; 60], &mut d.ram),
        "no buffer: dropped"
    );

    // Transmit: header + frame in one buffer.
    let mut pkt = vec![0u8; 12];
    pkt.extend((0..60).map(|i| i as u8));
    d.ram.write_bytes(DATA, &pkt).unwrap();
    d.next_desc = 0;
    let h = d.desc(DESC + 0x800, DATA, pkt.len() as u32, false, None);
    d.offer(AVAIL + 0x800, h);
    let reqs = d.notify(1);
    assert_eq!(reqs, vec![Request::NetTx(pkt[12..].to_vec())]);
    assert_eq!(d.used_idx(USED + 0x800), 1);

    // Receive into a posted buffer.
    d.avail_idx = 0;
    d.next_desc = 0;
    let h = d.desc(DESC, DATA + 0x4000, 1526, true, None);
    d.offer(AVAIL, h);
    assert!(d.notify(0).is_empty());
    assert!(d.dev.rx_ready(&d.ram));
    let frame: Vec<u8> = (0..100).map(|i| (255 - i) as u8).collect();
    assert!(d.dev.deliver_rx(&frame, &mut d.ram));
    assert_eq!(d.bytes(DATA + 0x4000 + 12, 100), frame);
    assert_eq!(d.bytes(DATA + 0x4000 + 10, 2), [1, 0], "num_buffers");
    assert_eq!(d.used_entry(USED, 0), (h as u32, 112));
    assert!(d.dev.irq());
}

#[test]
fn entropy_requests_are_answered_with_host_bytes() {
    let mut d = Driver::new(Device::Rng(Rng::default()));
    d.start();
    assert_eq!(d.reg(0x008), 4);
    let h = d.desc(DESC, DATA, 64, true, None);
    d.offer(AVAIL, h);
    let reqs = d.notify(0);
    let [Request::Entropy { id, len: 64 }] = reqs[..] else {
        panic!("{reqs:?}")
    };
    d.dev.complete_entropy(id, &[0x5a; 64], &mut d.ram);
    assert_eq!(d.bytes(DATA, 64), vec![0x5a; 64]);
    assert_eq!(d.used_entry(USED, 0), (h as u32, 64));
}
