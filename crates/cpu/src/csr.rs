//! Control and status registers: access rules, reads and WARL writes.

use crate::hart::{Hart, Privilege, event, irq, mstatus};

/// RV64 with I, M, A, F, D, C, S and U.
const MISA: u64 = (2 << 62)
    | (1 << 0)
    | (1 << 2)
    | (1 << 3)
    | (1 << 5)
    | (1 << 8)
    | (1 << 12)
    | (1 << 18)
    | (1 << 20);

const MSTATUS_WRITABLE: u64 = mstatus::SIE
    | mstatus::MIE
    | mstatus::SPIE
    | mstatus::MPIE
    | mstatus::SPP
    | mstatus::MPP
    | mstatus::FS
    | mstatus::MPRV
    | mstatus::SUM
    | mstatus::MXR
    | mstatus::TVM
    | mstatus::TW
    | mstatus::TSR;
const SSTATUS_VISIBLE: u64 = mstatus::SIE
    | mstatus::SPIE
    | mstatus::SPP
    | mstatus::FS
    | mstatus::SUM
    | mstatus::MXR
    | (3 << 32)
    | mstatus::SD;
const SSTATUS_WRITABLE: u64 =
    mstatus::SIE | mstatus::SPIE | mstatus::SPP | mstatus::FS | mstatus::SUM | mstatus::MXR;
const MIP_WRITABLE: u64 = irq::SSIP | irq::STIP | irq::SEIP;
const MIE_WRITABLE: u64 = 0xaaa;
const MIDELEG_WRITABLE: u64 = irq::SSIP | irq::STIP | irq::SEIP;
/// Every exception but ECALL from M (11) and the reserved codes 10 and 14.
const MEDELEG_WRITABLE: u64 = 0xb3ff;

pub mod addr {
    pub const FFLAGS: u16 = 0x001;
    pub const FRM: u16 = 0x002;
    pub const FCSR: u16 = 0x003;
    pub const CYCLE: u16 = 0xc00;
    pub const TIME: u16 = 0xc01;
    pub const INSTRET: u16 = 0xc02;
    pub const SSTATUS: u16 = 0x100;
    pub const SIE: u16 = 0x104;
    pub const STVEC: u16 = 0x105;
    pub const SCOUNTEREN: u16 = 0x106;
    pub const SENVCFG: u16 = 0x10a;
    pub const SSCRATCH: u16 = 0x140;
    pub const SEPC: u16 = 0x141;
    pub const SCAUSE: u16 = 0x142;
    pub const STVAL: u16 = 0x143;
    pub const SIP: u16 = 0x144;
    pub const SATP: u16 = 0x180;
    pub const MVENDORID: u16 = 0xf11;
    pub const MARCHID: u16 = 0xf12;
    pub const MIMPID: u16 = 0xf13;
    pub const MHARTID: u16 = 0xf14;
    pub const MCONFIGPTR: u16 = 0xf15;
    pub const MSTATUS: u16 = 0x300;
    pub const MISA: u16 = 0x301;
    pub const MEDELEG: u16 = 0x302;
    pub const MIDELEG: u16 = 0x303;
    pub const MIE: u16 = 0x304;
    pub const MTVEC: u16 = 0x305;
    pub const MCOUNTEREN: u16 = 0x306;
    pub const MENVCFG: u16 = 0x30a;
    pub const MCOUNTINHIBIT: u16 = 0x320;
    pub const MSCRATCH: u16 = 0x340;
    pub const MEPC: u16 = 0x341;
    pub const MCAUSE: u16 = 0x342;
    pub const MTVAL: u16 = 0x343;
    pub const MIP: u16 = 0x344;
    pub const MCYCLE: u16 = 0xb00;
    pub const MINSTRET: u16 = 0xb02;
}

impl Hart {
    /// Whether the current privilege may access `csr` (and write it, if `write`).
    pub(crate) fn csr_allowed(&self, csr: u16, write: bool) -> bool {
        let p = self.s.privilege as u16;
        if (csr >> 8) & 3 > p {
            return false;
        }
        if write && csr >> 10 == 3 {
            return false;
        }
        match csr {
            addr::FFLAGS | addr::FRM | addr::FCSR => self.s.mstatus & mstatus::FS != 0,
            0xc00..=0xc1f => {
                let bit = 1 << (csr - 0xc00);
                match self.s.privilege {
                    Privilege::Machine => true,
                    Privilege::Supervisor => self.s.mcounteren & bit != 0,
                    Privilege::User => self.s.mcounteren & self.s.scounteren & bit != 0,
                }
            }
            addr::SATP => {
                !(self.s.privilege == Privilege::Supervisor && self.s.mstatus & mstatus::TVM != 0)
            }
            _ => true,
        }
    }

    fn sstatus_view(&self) -> u64 {
        let st = self.s.mstatus;
        let sd = if st & mstatus::FS == mstatus::FS {
            mstatus::SD
        } else {
            0
        };
        (st | sd) & SSTATUS_VISIBLE
    }

    /// Reads a CSR; `None` if it does not exist.
    pub(crate) fn csr_read(&self, csr: u16) -> Option<u64> {
        let s = &self.s;
        Some(match csr {
            addr::FFLAGS => (s.fcsr & 0x1f) as u64,
            addr::FRM => ((s.fcsr >> 5) & 7) as u64,
            addr::FCSR => (s.fcsr & 0xff) as u64,
            addr::CYCLE => s.icount.wrapping_add(s.mcycle_offset),
            addr::TIME => self.mtime(),
            addr::INSTRET => s.icount.wrapping_add(s.minstret_offset),
            0xc03..=0xc1f => 0,
            addr::SSTATUS => self.sstatus_view(),
            addr::SIE => s.mie & s.mideleg,
            addr::STVEC => s.stvec,
            addr::SCOUNTEREN => s.scounteren,
            addr::SENVCFG => s.senvcfg,
            addr::SSCRATCH => s.sscratch,
            addr::SEPC => s.sepc,
            addr::SCAUSE => s.scause,
            addr::STVAL => s.stval,
            addr::SIP => (s.mip | s.irq_lines) & s.mideleg,
            addr::SATP => s.satp,
            addr::MVENDORID | addr::MARCHID | addr::MIMPID | addr::MCONFIGPTR => 0,
            addr::MHARTID => s.hartid,
            addr::MSTATUS => {
                let sd = if s.mstatus & mstatus::FS == mstatus::FS {
                    mstatus::SD
                } else {
                    0
                };
                s.mstatus | sd | mstatus::XLEN_FIELDS
            }
            addr::MISA => MISA,
            addr::MEDELEG => s.medeleg,
            addr::MIDELEG => s.mideleg,
            addr::MIE => s.mie,
            addr::MTVEC => s.mtvec,
            addr::MCOUNTEREN => s.mcounteren,
            addr::MENVCFG => s.menvcfg,
            addr::MCOUNTINHIBIT => s.mcountinhibit,
            addr::MSCRATCH => s.mscratch,
            addr::MEPC => s.mepc,
            addr::MCAUSE => s.mcause,
            addr::MTVAL => s.mtval,
            addr::MIP => s.mip | s.irq_lines,
            addr::MCYCLE => s.icount.wrapping_add(s.mcycle_offset),
            addr::MINSTRET => s.icount.wrapping_add(s.minstret_offset),
            0xb03..=0xb1f | 0x323..=0x33f => 0, // Zihpm counters and events: none implemented.
            0x3a0..=0x3af if csr.is_multiple_of(2) => s.pmpcfg[(csr as usize - 0x3a0) / 2],
            0x3b0..=0x3ef => s.pmpaddr[csr as usize - 0x3b0],
            _ => return None,
        })
    }

    /// Writes a CSR with WARL rules; `Err` if it does not exist.
    pub(crate) fn csr_write(&mut self, csr: u16, v: u64) -> Result<(), ()> {
        let s = &mut self.s;
        match csr {
            addr::FFLAGS => s.fcsr = (s.fcsr & !0x1f) | (v as u32 & 0x1f),
            addr::FRM => s.fcsr = (s.fcsr & 0x1f) | ((v as u32 & 7) << 5),
            addr::FCSR => s.fcsr = v as u32 & 0xff,
            addr::SSTATUS => {
                s.mstatus = (s.mstatus & !SSTATUS_WRITABLE) | (v & SSTATUS_WRITABLE);
            }
            addr::SIE => s.mie = (s.mie & !s.mideleg) | (v & s.mideleg & MIE_WRITABLE),
            addr::STVEC => s.stvec = v & !2,
            addr::SCOUNTEREN => s.scounteren = v & 0xffff_ffff,
            addr::SENVCFG => s.senvcfg = v & 1,
            addr::SSCRATCH => s.sscratch = v,
            addr::SEPC => s.sepc = v & !1,
            addr::SCAUSE => s.scause = v,
            addr::STVAL => s.stval = v,
            addr::SIP => {
                let m = irq::SSIP & s.mideleg;
                s.mip = (s.mip & !m) | (v & m);
            }
            addr::SATP => {
                // Only Bare, Sv39 and Sv48: any other mode leaves satp as it was, which is how
                // Linux finds the largest mode supported. No ASIDs (the field reads 0).
                let mode = v >> 60;
                if matches!(mode, 0 | 8 | 9) {
                    s.satp = (mode << 60) | (v & ((1 << 44) - 1));
                    self.tlb.flush();
                }
            }
            addr::MSTATUS => {
                let mut n = (s.mstatus & !MSTATUS_WRITABLE) | (v & MSTATUS_WRITABLE);
                if (n >> mstatus::MPP_SHIFT) & 3 == 2 {
                    n &= !mstatus::MPP; // reserved MPP value: WARL, read back as U
                }
                s.mstatus = n;
            }
            addr::MISA => {}
            addr::MEDELEG => s.medeleg = v & MEDELEG_WRITABLE,
            addr::MIDELEG => s.mideleg = v & MIDELEG_WRITABLE,
            addr::MIE => s.mie = v & MIE_WRITABLE,
            addr::MTVEC => s.mtvec = v & !2,
            addr::MCOUNTEREN => s.mcounteren = v & 0xffff_ffff,
            addr::MENVCFG => s.menvcfg = v & 1,
            addr::MCOUNTINHIBIT => s.mcountinhibit = v & 0xffff_fffd,
            addr::MSCRATCH => s.mscratch = v,
            addr::MEPC => s.mepc = v & !1,
            addr::MCAUSE => s.mcause = v,
            addr::MTVAL => s.mtval = v,
            addr::MIP => s.mip = (s.mip & !MIP_WRITABLE) | (v & MIP_WRITABLE),
            // The instruction doing the write retires too, so the counter reads `v` after it.
            addr::MCYCLE => s.mcycle_offset = v.wrapping_sub(s.icount + 1),
            addr::MINSTRET => s.minstret_offset = v.wrapping_sub(s.icount + 1),
            0xb03..=0xb1f | 0x323..=0x33f => {}
            0x3a0..=0x3af if csr.is_multiple_of(2) => s.pmpcfg[(csr as usize - 0x3a0) / 2] = v,
            0x3b0..=0x3ef => s.pmpaddr[csr as usize - 0x3b0] = v & ((1 << 54) - 1),
            0xf11..=0xf15 | 0xc00..=0xc1f => {}
            _ => return Err(()),
        }
        if matches!(csr, addr::MSTATUS | addr::SSTATUS) {
            self.update_data_ctx();
        }
        self.event |= event::IRQ;
        Ok(())
    }
}
