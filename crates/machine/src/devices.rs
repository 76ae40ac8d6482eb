//! The board's devices behind one physical address decoder: the hart's [`Bus`].

use ftvm_board::clint::{Clint, ClintWrite};
use ftvm_board::memmap::*;
use ftvm_board::plic::Plic;
use ftvm_board::test_device::{TestAction, TestDevice};
use ftvm_board::uart::Uart16550;
use ftvm_cpu::hart::irq;
use ftvm_cpu::{Bus, BusFault};
use ftvm_virtio::VirtioMmio;
use serde::{Deserialize, Serialize};

/// PLIC contexts of hart 0.
const CTX_M: usize = 0;
const CTX_S: usize = 1;

/// Every device of the board and what they produced since the machine last looked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Devices {
    pub clint: Clint,
    pub plic: Plic,
    pub uart: Uart16550,
    pub test: TestDevice,
    /// The built-in SBI's timer compare value (u64::MAX: disarmed).
    pub sbi_timer: u64,
    /// virtio-mmio slots in use, from slot 0; the rest answer "no device".
    pub virtio: Vec<VirtioMmio>,
    /// Console bytes written since the machine last collected them.
    #[serde(skip)]
    pub console_out: Vec<u8>,
    /// A power-off or reset the guest asked for, not yet reported.
    #[serde(skip)]
    pub action: Option<TestAction>,
    /// A guest write to CLINT mtime, for the machine to re-anchor its clock.
    #[serde(skip)]
    pub set_mtime: Option<u64>,
}

impl Devices {
    pub fn new() -> Self {
        Devices {
            clint: Clint::default(),
            plic: Plic::new(PLIC_SOURCES, 2),
            uart: Uart16550::default(),
            test: TestDevice,
            sbi_timer: u64::MAX,
            virtio: Vec::new(),
            console_out: Vec::new(),
            action: None,
            set_mtime: None,
        }
    }

    /// The interrupt lines into the hart at time `mtime`. STIP comes from the built-in SBI's timer;
    /// under OpenSBI `sbi_timer` stays disarmed and the firmware injects STIP itself.
    pub fn irq_lines(&mut self, mtime: u64) -> u64 {
        self.plic.set_level(UART0_IRQ, self.uart.irq());
        for (i, v) in self.virtio.iter().enumerate() {
            self.plic.set_level(1 + i as u32, v.irq());
        }
        let mut lines = 0;
        if self.plic.irq(CTX_M) {
            lines |= irq::MEIP;
        }
        if self.plic.irq(CTX_S) {
            lines |= irq::SEIP;
        }
        if self.clint.mtip(mtime) {
            lines |= irq::MTIP;
        }
        if self.clint.msip() {
            lines |= irq::MSIP;
        }
        if mtime >= self.sbi_timer {
            lines |= irq::STIP;
        }
        lines
    }

    /// The earliest `mtime` after `now` at which a timer line changes, if any.
    pub fn next_deadline(&self, now: u64) -> Option<u64> {
        [self.clint.mtimecmp, self.sbi_timer]
            .into_iter()
            .filter(|&t| t > now && t != u64::MAX)
            .min()
    }
}

impl Default for Devices {
    fn default() -> Self {
        Self::new()
    }
}

fn within(paddr: u64, size: u8, base: u64, len: u64) -> Option<u64> {
    let off = paddr.checked_sub(base)?;
    (off < len && size as u64 <= len - off).then_some(off)
}

impl Bus for Devices {
    fn mmio_read(&mut self, paddr: u64, size: u8, mtime: u64) -> Result<u64, BusFault> {
        let value = if let Some(off) = within(paddr, size, UART0_BASE, UART0_SIZE) {
            self.uart.read(off, size)
        } else if let Some(off) = within(paddr, size, CLINT_BASE, CLINT_SIZE) {
            self.clint.read(off, size, mtime)
        } else if let Some(off) = within(paddr, size, PLIC_BASE, PLIC_SIZE) {
            self.plic.read(off, size)
        } else if within(paddr, size, TEST_BASE, TEST_SIZE).is_some() {
            Some(0)
        } else if within(
            paddr,
            size,
            VIRTIO_BASE,
            VIRTIO_STRIDE * VIRTIO_SLOTS as u64,
        )
        .is_some()
        {
            let slot = ((paddr - VIRTIO_BASE) / VIRTIO_STRIDE) as usize;
            let off = (paddr - VIRTIO_BASE) % VIRTIO_STRIDE;
            match self.virtio.get(slot) {
                Some(dev) => dev.read(off, size),
                // Empty slots answer like QEMU's: magic and version readable, device id 0
                // ("no device"), so a probing driver skips them.
                None => Some(match off {
                    0x000 => 0x7472_6976,
                    0x004 => 2,
                    _ => 0,
                }),
            }
        } else {
            None
        };
        value.ok_or(BusFault)
    }

    fn mmio_write(&mut self, paddr: u64, size: u8, value: u64, mtime: u64) -> Result<(), BusFault> {
        let done = if let Some(off) = within(paddr, size, UART0_BASE, UART0_SIZE) {
            self.uart.write(off, size, value, &mut self.console_out)
        } else if let Some(off) = within(paddr, size, CLINT_BASE, CLINT_SIZE) {
            self.clint.write(off, size, value, mtime).map(|w| {
                if let ClintWrite::SetMtime(t) = w {
                    self.set_mtime = Some(t);
                }
            })
        } else if let Some(off) = within(paddr, size, PLIC_BASE, PLIC_SIZE) {
            self.plic.write(off, size, value)
        } else if let Some(off) = within(paddr, size, TEST_BASE, TEST_SIZE) {
            self.test.write(off, size, value).map(|action| {
                if action.is_some() {
                    self.action = action;
                }
            })
        } else if within(
            paddr,
            size,
            VIRTIO_BASE,
            VIRTIO_STRIDE * VIRTIO_SLOTS as u64,
        )
        .is_some()
        {
            let slot = ((paddr - VIRTIO_BASE) / VIRTIO_STRIDE) as usize;
            let off = (paddr - VIRTIO_BASE) % VIRTIO_STRIDE;
            match self.virtio.get_mut(slot) {
                Some(dev) => dev.write(off, size, value),
                None => Some(()),
            }
        } else {
            None
        };
        done.ok_or(BusFault)
    }
}
