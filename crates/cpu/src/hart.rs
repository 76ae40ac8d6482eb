//! The hart: architectural state, the run loop, traps and interrupts.
//!
//! The run loop executes pre-decoded basic blocks (`block.rs`) while a whole block fits before
//! the stop count, and single instructions (decoded as they execute) otherwise, so it always
//! stops at exactly the requested instruction. The fetch page and data translations are cached
//! so most instructions touch no page table.

use serde::{Deserialize, Serialize};

use crate::block::BlockCache;
use crate::mmu::Tlb;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Privilege {
    User = 0,
    Supervisor = 1,
    Machine = 3,
}

impl Privilege {
    pub(crate) fn from_bits(b: u64) -> Privilege {
        match b & 3 {
            0 => Privilege::User,
            1 => Privilege::Supervisor,
            _ => Privilege::Machine,
        }
    }
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
    pub fcsr: u32,
    pub pc: u64,
    pub privilege: Privilege,
    pub icount: u64,
    pub clock: VirtualClock,
    pub waiting: bool,
    pub irq_lines: u64,
    pub hartid: u64,
    /// The LR reservation (virtual address), if any.
    pub reservation: Option<u64>,
    pub mstatus: u64,
    pub medeleg: u64,
    pub mideleg: u64,
    pub mie: u64,
    /// Software-writable mip bits; the machine's lines are ORed in on reads.
    pub mip: u64,
    pub mtvec: u64,
    pub mcounteren: u64,
    pub menvcfg: u64,
    pub mscratch: u64,
    pub mepc: u64,
    pub mcause: u64,
    pub mtval: u64,
    pub mcountinhibit: u64,
    pub stvec: u64,
    pub scounteren: u64,
    pub senvcfg: u64,
    pub sscratch: u64,
    pub sepc: u64,
    pub scause: u64,
    pub stval: u64,
    pub satp: u64,
    /// mcycle/minstret read `icount` plus these (the guest may write them).
    pub mcycle_offset: u64,
    pub minstret_offset: u64,
    pub pmpcfg: [u64; 8],
    pub pmpaddr: Vec<u64>,
}

/// An exception on its way to a trap handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trap {
    pub cause: u64,
    pub tval: u64,
}

pub(crate) mod cause {
    pub const FETCH_ACCESS: u64 = 1;
    pub const ILLEGAL: u64 = 2;
    pub const BREAKPOINT: u64 = 3;
    pub const LOAD_MISALIGNED: u64 = 4;
    pub const LOAD_ACCESS: u64 = 5;
    pub const STORE_MISALIGNED: u64 = 6;
    pub const STORE_ACCESS: u64 = 7;
    pub const ECALL_U: u64 = 8;
    pub const FETCH_PAGE: u64 = 12;
    pub const LOAD_PAGE: u64 = 13;
    pub const STORE_PAGE: u64 = 15;
}

impl Trap {
    pub fn illegal(insn: u32) -> Trap {
        Trap {
            cause: cause::ILLEGAL,
            tval: insn as u64,
        }
    }
}

/// Flags the run loop looks at after an instruction.
pub(crate) mod event {
    pub const MMIO: u8 = 1;
    pub const WFI: u8 = 2;
    pub const SBI: u8 = 4;
    /// Something that can unmask an interrupt changed.
    pub const IRQ: u8 = 8;
    /// A store hit a page holding decoded code.
    pub const CODE: u8 = 16;
}

pub(crate) mod mstatus {
    pub const SIE: u64 = 1 << 1;
    pub const MIE: u64 = 1 << 3;
    pub const SPIE: u64 = 1 << 5;
    pub const MPIE: u64 = 1 << 7;
    pub const SPP: u64 = 1 << 8;
    pub const MPP_SHIFT: u32 = 11;
    pub const MPP: u64 = 3 << MPP_SHIFT;
    pub const FS: u64 = 3 << 13;
    pub const MPRV: u64 = 1 << 17;
    pub const SUM: u64 = 1 << 18;
    pub const MXR: u64 = 1 << 19;
    pub const TVM: u64 = 1 << 20;
    pub const TW: u64 = 1 << 21;
    pub const TSR: u64 = 1 << 22;
    /// UXL = SXL = 64 bits, read-only.
    pub const XLEN_FIELDS: u64 = (2 << 32) | (2 << 34);
    pub const SD: u64 = 1 << 63;
}

pub struct Hart {
    pub(crate) s: HartState,
    /// ECALLs from S-mode stop the run instead of trapping to M-mode (the built-in SBI).
    pub sbi_intercept: bool,
    pub(crate) tlb: Tlb,
    pub(crate) blocks: BlockCache,
    /// (effective data privilege, TLB context) derived from privilege and mstatus.
    pub(crate) data_ctx: (Privilege, u64),
    pub(crate) event: u8,
    compressed: &'static [u32],
    /// What the interpreter did (the `stats` feature only).
    #[cfg(feature = "stats")]
    pub stats: crate::stats::Stats,
}

/// Counts into the hart's stats with the `stats` feature; nothing without it.
macro_rules! count {
    ($hart:expr, $field:ident) => {
        #[cfg(feature = "stats")]
        {
            $hart.stats.$field += 1;
        }
    };
}
pub(crate) use count;

impl Hart {
    pub fn new(hartid: u64) -> Self {
        Hart {
            s: HartState {
                x: [0; 32],
                f: [0; 32],
                fcsr: 0,
                pc: 0,
                privilege: Privilege::Machine,
                icount: 0,
                clock: VirtualClock::default(),
                waiting: false,
                irq_lines: 0,
                hartid,
                reservation: None,
                mstatus: mstatus::XLEN_FIELDS,
                medeleg: 0,
                mideleg: 0,
                mie: 0,
                mip: 0,
                mtvec: 0,
                mcounteren: 0,
                menvcfg: 0,
                mscratch: 0,
                mepc: 0,
                mcause: 0,
                mtval: 0,
                mcountinhibit: 0,
                stvec: 0,
                scounteren: 0,
                senvcfg: 0,
                sscratch: 0,
                sepc: 0,
                scause: 0,
                stval: 0,
                satp: 0,
                mcycle_offset: 0,
                minstret_offset: 0,
                pmpcfg: [0; 8],
                pmpaddr: vec![0; 64],
            },
            sbi_intercept: false,
            tlb: Tlb::new(),
            blocks: BlockCache::new(),
            data_ctx: (Privilege::Machine, Privilege::Machine as u64),
            event: 0,
            compressed: crate::compressed::table(),
            #[cfg(feature = "stats")]
            stats: crate::stats::Stats::default(),
        }
    }

    /// Executes until `icount == until` or another [`Stop`]. Never executes past `until`.
    pub fn run<B: Bus>(&mut self, ram: &mut Ram, bus: &mut B, until: u64) -> Stop {
        if self.s.waiting {
            if !self.interrupt_pending() {
                return Stop::Wfi;
            }
            self.s.waiting = false;
        }
        self.sync_code(ram);
        self.take_interrupt();
        // Out of the hart while blocks execute, so a block can be borrowed from it.
        let mut blocks = std::mem::take(&mut self.blocks);
        let stop = self.run_blocks(&mut blocks, ram, bus, until);
        self.blocks = blocks;
        stop
    }

    fn run_blocks<B: Bus>(
        &mut self,
        blocks: &mut BlockCache,
        ram: &mut Ram,
        bus: &mut B,
        until: u64,
    ) -> Stop {
        while self.s.icount < until {
            self.run_block(blocks, ram, bus, until);
            if self.event != 0 {
                let ev = std::mem::take(&mut self.event);
                if ev & event::CODE != 0 {
                    for page in ram.take_code_written() {
                        blocks.invalidate_page(page as usize);
                    }
                }
                if ev & event::IRQ != 0 {
                    self.take_interrupt();
                }
                if ev & event::SBI != 0 {
                    return Stop::SbiCall;
                }
                if ev & event::MMIO != 0 {
                    return Stop::Mmio;
                }
                if ev & event::WFI != 0 {
                    return Stop::Wfi;
                }
            }
        }
        Stop::Reached
    }

    /// Drops decoded blocks of code pages that were written.
    fn sync_code(&mut self, ram: &mut Ram) {
        for page in ram.take_code_written() {
            self.blocks.invalidate_page(page as usize);
        }
    }

    /// Executes the block at pc if it fits before `until`, else one instruction.
    #[inline(always)]
    fn run_block<B: Bus>(
        &mut self,
        blocks: &mut BlockCache,
        ram: &mut Ram,
        bus: &mut B,
        until: u64,
    ) {
        let off = match self.fetch_offset(ram) {
            Ok(off) => off,
            Err(t) => {
                self.trap(t.cause, t.tval, false);
                self.s.icount += 1;
                return;
            }
        };
        if blocks.get(off).is_none() {
            count!(self, blocks_decoded);
            Hart::decode_block(blocks, ram, off);
        }
        let Some(block) = blocks.get(off) else {
            unreachable!("a block was just decoded at {off:#x}")
        };
        let n = block.len() as u64;
        if n == 0 || self.s.icount + n > until {
            count!(self, single_steps);
            self.step(ram, bus);
            return;
        }
        count!(self, blocks_run);
        // pc and the instruction count live in registers for the block; `exec_op` and the
        // exits below write them back where they can be observed.
        let base = self.s.icount;
        let mut pc = self.s.pc;
        // `icount` counts the block's instructions run so far from `base`; `i` is the op.
        // They part only when a taken branch loops back inside the block.
        let mut icount = base;
        let mut i = 0;
        while i < block.len() {
            let op = &block[i];
            match self.exec_op(op, pc, icount, ram, bus) {
                Ok(next) => {
                    i += 1;
                    icount += 1;
                    pc = next & !crate::block::LEAVE;
                    if next & crate::block::LEAVE != 0 {
                        // A loop: run the block on from the branch's target while the rest of
                        // a whole pass fits before `until` and nothing asked the run loop to
                        // look (an event, a store to code: this block may be stale then).
                        let back = op.back as usize;
                        if back != 0
                            && icount + (block.len() - (back - 1)) as u64 <= until
                            && self.event == 0
                            && !ram.code_was_written()
                        {
                            count!(self, loops_in_block);
                            i = back - 1;
                            continue;
                        }
                        #[cfg(feature = "stats")]
                        if crate::block::is_branch(op.kind) {
                            self.stats.ended_taken_branch += 1;
                        } else {
                            self.stats.ended_event += 1;
                        }
                        break;
                    }
                }
                Err(t) => {
                    count!(self, ended_trap);
                    self.s.pc = pc;
                    self.s.icount = icount;
                    self.trap(t.cause, t.tval, false);
                    self.s.icount += 1;
                    return;
                }
            }
        }
        #[cfg(feature = "stats")]
        if i == block.len() {
            use crate::block::Kind;
            match block[i - 1].kind {
                Kind::J | Kind::Jal => self.stats.ended_jump += 1,
                Kind::Jr | Kind::Jalr => self.stats.ended_indirect_jump += 1,
                Kind::Other => self.stats.ended_system += 1,
                _ if block.len() == crate::block::MAX_OPS => self.stats.ended_length += 1,
                _ => self.stats.ended_page += 1,
            }
        }
        self.s.pc = pc;
        self.s.icount = icount;
        if ram.code_was_written() {
            self.event |= event::CODE;
        }
    }

    #[inline(always)]
    fn step<B: Bus>(&mut self, ram: &mut Ram, bus: &mut B) {
        let result = match self.fetch(ram) {
            Ok(raw) => {
                if raw & 3 == 3 {
                    self.execute(raw, 4, ram, bus)
                } else {
                    let insn = self.compressed[(raw & 0xffff) as usize];
                    if insn == 0 {
                        Err(Trap::illegal(raw & 0xffff))
                    } else {
                        self.execute(insn, 2, ram, bus).map_err(|t| {
                            // An illegal expansion reports the 16-bit instruction, as hardware does.
                            if t.cause == cause::ILLEGAL {
                                Trap::illegal(raw & 0xffff)
                            } else {
                                t
                            }
                        })
                    }
                }
            }
            Err(t) => Err(t),
        };
        match result {
            Ok(next) => self.s.pc = next,
            Err(t) => self.trap(t.cause, t.tval, false),
        }
        self.s.icount += 1;
    }

    /// The interrupt to take now, if any: M-level ones first, each level in the spec's priority
    /// order (external, software, timer; M before S).
    fn pending_cause(&self) -> Option<u64> {
        let pending = (self.s.mip | self.s.irq_lines) & self.s.mie;
        if pending == 0 {
            return None;
        }
        let p = self.s.privilege;
        let m_on = p < Privilege::Machine || self.s.mstatus & mstatus::MIE != 0;
        let s_on = p < Privilege::Supervisor
            || (p == Privilege::Supervisor && self.s.mstatus & mstatus::SIE != 0);
        let m = if m_on { pending & !self.s.mideleg } else { 0 };
        let s = if s_on { pending & self.s.mideleg } else { 0 };
        for set in [m, s] {
            for bit in [11, 3, 7, 9, 1, 5] {
                if set & (1 << bit) != 0 {
                    return Some(bit);
                }
            }
        }
        None
    }

    fn take_interrupt(&mut self) {
        if let Some(c) = self.pending_cause() {
            self.trap(c, 0, true);
        }
    }

    /// Enters a trap handler for `cause` (an interrupt if `interrupt`).
    pub(crate) fn trap(&mut self, cause: u64, tval: u64, interrupt: bool) {
        let deleg = if interrupt {
            self.s.mideleg
        } else {
            self.s.medeleg
        };
        let to_s = self.s.privilege <= Privilege::Supervisor && (deleg >> cause) & 1 != 0;
        let code = cause | if interrupt { 1 << 63 } else { 0 };
        let st = &mut self.s;
        st.reservation = None;
        if to_s {
            st.sepc = st.pc;
            st.scause = code;
            st.stval = tval;
            let sie = st.mstatus & mstatus::SIE != 0;
            st.mstatus &= !(mstatus::SPIE | mstatus::SIE | mstatus::SPP);
            if sie {
                st.mstatus |= mstatus::SPIE;
            }
            if st.privilege == Privilege::Supervisor {
                st.mstatus |= mstatus::SPP;
            }
            st.privilege = Privilege::Supervisor;
            st.pc = vector(st.stvec, cause, interrupt);
        } else {
            st.mepc = st.pc;
            st.mcause = code;
            st.mtval = tval;
            let mie = st.mstatus & mstatus::MIE != 0;
            st.mstatus &= !(mstatus::MPIE | mstatus::MIE | mstatus::MPP);
            if mie {
                st.mstatus |= mstatus::MPIE;
            }
            st.mstatus |= (st.privilege as u64) << mstatus::MPP_SHIFT;
            st.privilege = Privilege::Machine;
            st.pc = vector(st.mtvec, cause, interrupt);
        }
        self.tlb.flush_fetch();
        self.update_data_ctx();
    }

    pub fn icount(&self) -> u64 {
        self.s.icount
    }
    pub fn pc(&self) -> u64 {
        self.s.pc
    }
    pub fn set_pc(&mut self, pc: u64) {
        self.s.pc = pc;
    }
    pub fn x(&self, reg: usize) -> u64 {
        self.s.x[reg]
    }
    /// Writes an integer register; writes to x0 are ignored.
    pub fn set_x(&mut self, reg: usize, value: u64) {
        if reg != 0 {
            self.s.x[reg] = value;
        }
    }
    pub fn privilege(&self) -> Privilege {
        self.s.privilege
    }
    pub fn set_privilege(&mut self, p: Privilege) {
        self.s.privilege = p;
        self.tlb.flush_fetch();
        self.update_data_ctx();
    }
    /// Reads a CSR with no privilege check and no side effects (debugging, boot set-up).
    pub fn csr(&self, addr: u16) -> Option<u64> {
        self.csr_read(addr)
    }
    /// Writes a CSR with no privilege check (boot set-up, e.g. delegation for the built-in SBI).
    pub fn set_csr(&mut self, addr: u16, value: u64) {
        let _ = self.csr_write(addr, value);
        self.event |= event::IRQ;
    }
    /// Sets or clears software-writable mip bits (SSIP for an SBI IPI), leaving the lines alone.
    pub fn set_software_pending(&mut self, bits: u64, on: bool) {
        if on {
            self.s.mip |= bits;
        } else {
            self.s.mip &= !bits;
        }
        self.event |= event::IRQ;
    }

    pub fn clock(&self) -> &VirtualClock {
        &self.s.clock
    }
    pub fn clock_mut(&mut self) -> &mut VirtualClock {
        &mut self.s.clock
    }
    /// The machine timer now.
    #[inline]
    pub fn mtime(&self) -> u64 {
        self.s.clock.mtime_at(self.s.icount)
    }
    /// Sets the device-driven mip bits (MEIP, SEIP, MTIP, MSIP, and STIP for the built-in SBI).
    pub fn set_irq_lines(&mut self, lines: u64) {
        self.s.irq_lines = lines;
    }
    pub fn irq_lines(&self) -> u64 {
        self.s.irq_lines
    }
    pub fn is_waiting(&self) -> bool {
        self.s.waiting
    }
    /// True if some interrupt is pending and enabled in mie (what wakes WFI), whatever the
    /// global enables.
    pub fn interrupt_pending(&self) -> bool {
        (self.s.mip | self.s.irq_lines) & self.s.mie != 0
    }
    /// Drops every cached translation (SBI remote fence, snapshot restore).
    pub fn flush_tlb(&mut self) {
        self.tlb.flush();
    }

    /// Drops every decoded block (RAM was replaced behind the hart's back).
    pub fn flush_decoded(&mut self) {
        self.blocks.flush();
    }
    pub fn state(&self) -> &HartState {
        &self.s
    }
    /// Replaces the architectural state and drops all caches.
    pub fn restore(&mut self, state: HartState) {
        self.s = state;
        if self.s.pmpaddr.len() != 64 {
            self.s.pmpaddr.resize(64, 0);
        }
        self.flush_tlb();
        self.flush_decoded();
        self.update_data_ctx();
    }
}

fn vector(tvec: u64, cause: u64, interrupt: bool) -> u64 {
    let base = tvec & !3;
    if interrupt && tvec & 3 == 1 {
        base.wrapping_add(4 * cause)
    } else {
        base
    }
}
