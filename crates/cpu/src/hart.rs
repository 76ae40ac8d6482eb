//! The hart: architectural state and the run loop.
//!
//! STUB: the CPU work replaces the bodies; the public signatures here are the contract with
//! `ftvm-machine` and stay as they are.

use serde::{Deserialize, Serialize};

use crate::{Bus, Ram, VirtualClock};

/// mip/mie bit positions.
pub mod irq {
    pub const SSIP: u64 = 1 << 1;
    pub const MSIP: u64 = 1 << 3;
    pub const STIP: u64 = 1 << 5;
    pub const MTIP: u64 = 1 << 7;
    pub const SEIP: u64 = 1 << 9;
    pub const MEIP: u64 = 1 << 11;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Privilege {
    User = 0,
    Supervisor = 1,
    Machine = 3,
}

/// Why [`Hart::run`] returned. In every case the hart is at an instruction boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `icount` reached the `until` passed to `run`.
    Reached,
    /// The last instruction accessed MMIO: interrupt lines or timer deadlines may have changed.
    Mmio,
    /// WFI executed with no interrupt pending: the hart waits (`is_waiting`) until
    /// `interrupt_pending()` becomes true.
    Wfi,
    /// ECALL from S-mode with `sbi_intercept` on. The ecall counted as executed and `pc` is past
    /// it; a0..a7 hold the call and the machine writes the result to a0/a1.
    SbiCall,
}

/// Everything architectural: what snapshots save and state hashes cover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HartState {
    pub x: [u64; 32],
    pub f: [u64; 32],
    pub pc: u64,
    pub privilege: Privilege,
    pub icount: u64,
    pub clock: VirtualClock,
    pub waiting: bool,
    pub irq_lines: u64,
}

pub struct Hart {
    state: HartState,
    /// ECALLs from S-mode stop the run instead of trapping to M-mode (the built-in SBI).
    pub sbi_intercept: bool,
}

impl Hart {
    pub fn new(hartid: u64) -> Self {
        let _ = hartid;
        Hart {
            state: HartState {
                x: [0; 32],
                f: [0; 32],
                pc: 0,
                privilege: Privilege::Machine,
                icount: 0,
                clock: VirtualClock::default(),
                waiting: false,
                irq_lines: 0,
            },
            sbi_intercept: false,
        }
    }

    /// Executes until `icount == until` or another [`Stop`]. Never executes past `until`.
    pub fn run<B: Bus>(&mut self, ram: &mut Ram, bus: &mut B, until: u64) -> Stop {
        let _ = (ram, bus, until);
        unimplemented!("stub")
    }

    pub fn icount(&self) -> u64 {
        self.state.icount
    }
    pub fn pc(&self) -> u64 {
        self.state.pc
    }
    pub fn set_pc(&mut self, pc: u64) {
        self.state.pc = pc;
    }
    pub fn x(&self, reg: usize) -> u64 {
        self.state.x[reg]
    }
    /// Writes an integer register; writes to x0 are ignored.
    pub fn set_x(&mut self, reg: usize, value: u64) {
        if reg != 0 {
            self.state.x[reg] = value;
        }
    }
    pub fn privilege(&self) -> Privilege {
        self.state.privilege
    }
    pub fn set_privilege(&mut self, p: Privilege) {
        self.state.privilege = p;
    }
    /// Reads a CSR with no privilege check and no side effects (debugging, boot set-up).
    pub fn csr(&self, addr: u16) -> Option<u64> {
        let _ = addr;
        None
    }
    /// Writes a CSR with no privilege check (boot set-up, e.g. delegation for the built-in SBI).
    pub fn set_csr(&mut self, addr: u16, value: u64) {
        let _ = (addr, value);
    }
    pub fn clock(&self) -> &VirtualClock {
        &self.state.clock
    }
    pub fn clock_mut(&mut self) -> &mut VirtualClock {
        &mut self.state.clock
    }
    /// The machine timer now.
    pub fn mtime(&self) -> u64 {
        self.state.clock.mtime_at(self.state.icount)
    }
    /// Sets the device-driven mip bits (MEIP, SEIP, MTIP, MSIP, and STIP for the built-in SBI).
    pub fn set_irq_lines(&mut self, lines: u64) {
        self.state.irq_lines = lines;
    }
    pub fn irq_lines(&self) -> u64 {
        self.state.irq_lines
    }
    pub fn is_waiting(&self) -> bool {
        self.state.waiting
    }
    /// True if some interrupt is pending and enabled in mie (what wakes WFI), whatever the
    /// global enables.
    pub fn interrupt_pending(&self) -> bool {
        false
    }
    /// Drops every cached translation (SBI remote fence, snapshot restore).
    pub fn flush_tlb(&mut self) {}
    pub fn state(&self) -> &HartState {
        &self.state
    }
    /// Replaces the architectural state and drops all caches.
    pub fn restore(&mut self, state: HartState) {
        self.state = state;
        self.flush_tlb();
    }
}
