//! The virtio-mmio transport (virtio 1.x §4.2, version 2, modern only): register file, feature
//! negotiation, queue set-up, interrupts, and the device error state.
//!
//! MMIO accesses come from the hart without guest memory at hand, so a QueueNotify only marks
//! the queue; the machine calls [`VirtioMmio::process`] right after the notifying instruction,
//! which is where requests are taken. That point is an instruction boundary fixed by the guest,
//! so it is the same on replay.

use ftvm_cpu::Ram;
use serde::{Deserialize, Serialize};

use crate::block::Block;
use crate::net::{self, Net};
use crate::queue::{MAX_QUEUE_SIZE, Queue, QueueError};
use crate::rng::Rng;
use crate::{BlockOp, Request};

const MAGIC: u32 = 0x7472_6976; // "virt"
const VENDOR: u32 = 0x4d56_5446; // "FTVM"
const F_VERSION_1: u64 = 1 << 32;

mod status {
    pub const FEATURES_OK: u32 = 8;
    pub const NEEDS_RESET: u32 = 64;
}

const INT_USED: u32 = 1;
const INT_CONFIG: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Device {
    Block(Block),
    Net(Net),
    Rng(Rng),
}

impl Device {
    fn id(&self) -> u32 {
        match self {
            Device::Net(_) => 1,
            Device::Block(_) => 2,
            Device::Rng(_) => 4,
        }
    }

    fn queues(&self) -> usize {
        match self {
            Device::Net(_) => 2,
            _ => 1,
        }
    }

    fn features(&self) -> u64 {
        F_VERSION_1
            | match self {
                Device::Block(b) => b.features(),
                Device::Net(n) => n.features(),
                Device::Rng(_) => 0,
            }
    }

    fn config(&self) -> Vec<u8> {
        match self {
            Device::Block(b) => b.config(),
            Device::Net(n) => n.config(),
            Device::Rng(_) => Vec::new(),
        }
    }

    fn reset(&mut self) {
        match self {
            Device::Block(b) => b.reset(),
            Device::Net(_) => {}
            Device::Rng(r) => r.reset(),
        }
    }
}

/// One virtio-mmio slot with its device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioMmio {
    pub device: Device,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    interrupt_status: u32,
    config_generation: u32,
    /// Queues notified since the last `process`.
    notified: u32,
    /// Why the device stopped (its error state), until the driver resets it.
    error: Option<String>,
}

impl VirtioMmio {
    pub fn new(device: Device) -> VirtioMmio {
        let n = device.queues();
        VirtioMmio {
            device,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues: vec![Queue::default(); n],
            interrupt_status: 0,
            config_generation: 0,
            notified: 0,
            error: None,
        }
    }

    /// The interrupt line (level).
    pub fn irq(&self) -> bool {
        self.interrupt_status != 0
    }

    /// The reason the device is in its error state, if it is.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn reset(&mut self) {
        let n = self.queues.len();
        self.status = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.queues = vec![Queue::default(); n];
        self.interrupt_status = 0;
        self.notified = 0;
        self.error = None;
        self.device.reset();
    }

    fn fail(&mut self, e: QueueError) {
        self.error = Some(e.to_string());
        self.status |= status::NEEDS_RESET;
        self.interrupt_status |= INT_CONFIG;
        self.notified = 0;
    }

    fn queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    /// A register read; `None` is a bus error.
    pub fn read(&self, offset: u64, size: u8) -> Option<u64> {
        if offset >= 0x100 {
            let config = self.device.config();
            let at = (offset - 0x100) as usize;
            let mut v = 0u64;
            for i in 0..size as usize {
                v |= (*config.get(at + i).unwrap_or(&0) as u64) << (8 * i);
            }
            return Some(v);
        }
        let q = self.queue();
        let v: u32 = match offset {
            0x000 => MAGIC,
            0x004 => 2,
            0x008 => self.device.id(),
            0x00c => VENDOR,
            0x010 => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            0x034 => q.map_or(0, |_| MAX_QUEUE_SIZE as u32),
            0x044 => q.is_some_and(|q| q.ready) as u32,
            0x060 => self.interrupt_status,
            0x070 => self.status,
            0x0fc => self.config_generation,
            _ => 0,
        };
        Some(v as u64)
    }

    /// A register write; `None` is a bus error.
    pub fn write(&mut self, offset: u64, _size: u8, value: u64) -> Option<()> {
        let v = value as u32;
        if offset >= 0x100 {
            return Some(()); // no writable config fields are offered
        }
        let sel = self.queue_sel as usize;
        let set_half = |old: u64, high: bool| {
            if high {
                (old & 0xffff_ffff) | ((v as u64) << 32)
            } else {
                (old & !0xffff_ffff) | v as u64
            }
        };
        match offset {
            0x014 => self.device_features_sel = v,
            0x020 => match self.driver_features_sel {
                0 => self.driver_features = set_half(self.driver_features, false),
                1 => self.driver_features = set_half(self.driver_features, true),
                _ => {}
            },
            0x024 => self.driver_features_sel = v,
            0x030 => self.queue_sel = v,
            0x038 => {
                if let Some(q) = self.queues.get_mut(sel) {
                    // Split queues have power-of-two sizes; anything else leaves it unusable.
                    q.size = if v.is_power_of_two() && v <= MAX_QUEUE_SIZE as u32 {
                        v as u16
                    } else {
                        0
                    };
                }
            }
            0x044 => {
                if let Some(q) = self.queues.get_mut(sel) {
                    q.ready = v == 1;
                }
            }
            0x050 if (v as usize) < self.queues.len() && self.error.is_none() => {
                self.notified |= 1 << v;
            }
            0x064 => self.interrupt_status &= !v,
            0x070 => self.write_status(v),
            0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 => {
                if let Some(q) = self.queues.get_mut(sel) {
                    let high = offset & 4 != 0;
                    match offset & !4 {
                        0x080 => q.desc = set_half(q.desc, high),
                        0x090 => q.avail = set_half(q.avail, high),
                        _ => q.used = set_half(q.used, high),
                    }
                }
            }
            _ => {}
        }
        Some(())
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let mut v = v;
        if v & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            let offered = self.device.features();
            let ok =
                self.driver_features & F_VERSION_1 != 0 && self.driver_features & !offered == 0;
            if !ok {
                // The driver reads FEATURES_OK back and gives up: no legacy mode here.
                v &= !status::FEATURES_OK;
            }
        }
        self.status = v | (self.status & status::NEEDS_RESET);
    }

    /// Takes the requests of every notified queue. Call right after a notifying MMIO write.
    pub fn process(&mut self, ram: &mut Ram) -> Vec<Request> {
        let notified = std::mem::take(&mut self.notified);
        let mut requests = Vec::new();
        for qi in 0..self.queues.len() {
            if notified & (1 << qi) == 0 {
                continue;
            }
            if let Err(e) = self.process_queue(qi, ram, &mut requests) {
                self.fail(e);
                break;
            }
        }
        requests
    }

    fn process_queue(
        &mut self,
        qi: usize,
        ram: &mut Ram,
        requests: &mut Vec<Request>,
    ) -> Result<(), QueueError> {
        let q = &mut self.queues[qi];
        let used = match &mut self.device {
            Device::Block(b) => {
                let mut ops = Vec::new();
                let used = b.take_requests(q, ram, &mut ops)?;
                requests.extend(ops.into_iter().map(|(id, op)| Request::Block { id, op }));
                used
            }
            Device::Net(n) if qi == net::TX => {
                let mut frames = Vec::new();
                let used = n.transmit(q, ram, &mut frames)?;
                requests.extend(frames.into_iter().map(Request::NetTx));
                used
            }
            // New receive buffers: the host sees them through `rx_ready`.
            Device::Net(_) => false,
            Device::Rng(r) => {
                let mut asks = Vec::new();
                let used = r.take_requests(q, ram, &mut asks)?;
                requests.extend(
                    asks.into_iter()
                        .map(|(id, len)| Request::Entropy { id, len }),
                );
                used
            }
        };
        self.after_used(qi, used, ram);
        Ok(())
    }

    fn after_used(&mut self, qi: usize, used: bool, ram: &Ram) {
        if used && self.queues[qi].wants_interrupt(ram) {
            self.interrupt_status |= INT_USED;
        }
    }

    fn finish(&mut self, qi: usize, result: Result<bool, QueueError>, ram: &Ram) {
        match result {
            Ok(used) => self.after_used(qi, used, ram),
            Err(e) => self.fail(e),
        }
    }

    /// The backend's answer to block request `id`. Ignored if the device has no such request
    /// (it was reset since).
    pub fn complete_block(&mut self, id: u64, status: u8, data: Vec<u8>, ram: &mut Ram) {
        if self.error.is_some() {
            return;
        }
        if let Device::Block(b) = &mut self.device {
            let r = b.complete(&mut self.queues[0], ram, id, status, data);
            self.finish(0, r, ram);
        }
    }

    /// Host entropy for request `id`.
    pub fn complete_entropy(&mut self, id: u64, bytes: &[u8], ram: &mut Ram) {
        if self.error.is_some() {
            return;
        }
        if let Device::Rng(r) = &mut self.device {
            let res = r.complete(&mut self.queues[0], ram, id, bytes);
            self.finish(0, res, ram);
        }
    }

    /// Whether a received frame would find a buffer now.
    pub fn rx_ready(&self, ram: &Ram) -> bool {
        matches!(self.device, Device::Net(_))
            && self.error.is_none()
            && self.status & 4 != 0 // DRIVER_OK
            && self.queues[net::RX].has_available(ram)
    }

    /// Delivers a received frame; false if it was dropped (no buffer, or not a NIC).
    pub fn deliver_rx(&mut self, frame: &[u8], ram: &mut Ram) -> bool {
        if !self.rx_ready(ram) {
            return false;
        }
        let Device::Net(n) = &mut self.device else {
            return false;
        };
        let r = n.receive(&mut self.queues[net::RX], ram, frame);
        let delivered = matches!(r, Ok(true));
        self.finish(net::RX, r, ram);
        delivered
    }

    /// Requests taken from the guest and not completed, oldest first: what a backup that goes
    /// live must issue again.
    pub fn outstanding(&self) -> Vec<Request> {
        match &self.device {
            Device::Block(b) => b
                .outstanding()
                .map(|(id, op)| Request::Block { id, op: op.clone() })
                .collect(),
            Device::Rng(r) => r
                .outstanding()
                .map(|(id, len)| Request::Entropy { id, len })
                .collect(),
            Device::Net(_) => Vec::new(),
        }
    }
}

impl BlockOp {
    /// Bytes this operation moves (for accounting).
    pub fn len(&self) -> u64 {
        match self {
            BlockOp::Read { len, .. } => *len as u64,
            BlockOp::Write { data, .. } => data.len() as u64,
            BlockOp::Flush => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
