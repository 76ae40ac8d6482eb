//! Executing one (expanded, 32-bit) instruction: RV64IMA, F/D loads and stores, Zicsr, system.

use crate::hart::{Hart, Privilege, Trap, cause, event, mstatus};
use crate::mmu::Access;
use crate::{Bus, Ram};

#[inline(always)]
fn rd(i: u32) -> usize {
    ((i >> 7) & 31) as usize
}
#[inline(always)]
fn rs1(i: u32) -> usize {
    ((i >> 15) & 31) as usize
}
#[inline(always)]
fn rs2(i: u32) -> usize {
    ((i >> 20) & 31) as usize
}
#[inline(always)]
fn f3(i: u32) -> u32 {
    (i >> 12) & 7
}
#[inline(always)]
fn imm_i(i: u32) -> u64 {
    ((i as i32) >> 20) as i64 as u64
}
#[inline(always)]
fn imm_s(i: u32) -> u64 {
    ((((i as i32) >> 25) << 5) | ((i >> 7) & 31) as i32) as i64 as u64
}
#[inline(always)]
fn imm_b(i: u32) -> u64 {
    let v = (((i as i32) >> 31) << 12)
        | (((i >> 7) & 1) << 11) as i32
        | (((i >> 25) & 0x3f) << 5) as i32
        | (((i >> 8) & 0xf) << 1) as i32;
    v as i64 as u64
}
#[inline(always)]
fn imm_j(i: u32) -> u64 {
    let v = (((i as i32) >> 31) << 20)
        | (i & 0xff000) as i32
        | (((i >> 20) & 1) << 11) as i32
        | (((i >> 21) & 0x3ff) << 1) as i32;
    v as i64 as u64
}
#[inline(always)]
fn sext32(v: u64) -> u64 {
    v as i32 as i64 as u64
}

const FS_DIRTY: u64 = 3 << 13;

impl Hart {
    #[inline(always)]
    fn wr(&mut self, r: usize, v: u64) {
        if r != 0 {
            self.s.x[r] = v;
        }
    }

    fn fp_enabled(&self) -> bool {
        self.s.mstatus & mstatus::FS != 0
    }

    fn fp_dirty(&mut self) {
        self.s.mstatus |= FS_DIRTY | mstatus::SD;
    }

    /// Executes `insn` at pc; returns the next pc.
    #[inline(always)]
    pub(crate) fn execute<B: Bus>(
        &mut self,
        insn: u32,
        len: u64,
        ram: &mut Ram,
        bus: &mut B,
    ) -> Result<u64, Trap> {
        let pc = self.s.pc;
        let next = pc.wrapping_add(len);
        let x = |r: usize| self.s.x[r];
        match insn & 0x7f {
            0x37 => self.wr(rd(insn), (insn & 0xffff_f000) as i32 as i64 as u64),
            0x17 => self.wr(
                rd(insn),
                pc.wrapping_add((insn & 0xffff_f000) as i32 as i64 as u64),
            ),
            0x6f => {
                self.wr(rd(insn), next);
                return Ok(pc.wrapping_add(imm_j(insn)));
            }
            0x67 if f3(insn) == 0 => {
                let target = x(rs1(insn)).wrapping_add(imm_i(insn)) & !1;
                self.wr(rd(insn), next);
                return Ok(target);
            }
            0x63 => {
                let (a, b) = (x(rs1(insn)), x(rs2(insn)));
                let taken = match f3(insn) {
                    0 => a == b,
                    1 => a != b,
                    4 => (a as i64) < (b as i64),
                    5 => (a as i64) >= (b as i64),
                    6 => a < b,
                    7 => a >= b,
                    _ => return Err(Trap::illegal(insn)),
                };
                if taken {
                    return Ok(pc.wrapping_add(imm_b(insn)));
                }
            }
            0x03 => {
                let addr = x(rs1(insn)).wrapping_add(imm_i(insn));
                let v = match f3(insn) {
                    0 => self.load(ram, bus, addr, 1)? as i8 as i64 as u64,
                    1 => self.load(ram, bus, addr, 2)? as i16 as i64 as u64,
                    2 => self.load(ram, bus, addr, 4)? as i32 as i64 as u64,
                    3 => self.load(ram, bus, addr, 8)?,
                    4 => self.load(ram, bus, addr, 1)?,
                    5 => self.load(ram, bus, addr, 2)?,
                    6 => self.load(ram, bus, addr, 4)?,
                    _ => return Err(Trap::illegal(insn)),
                };
                self.wr(rd(insn), v);
            }
            0x23 => {
                let addr = x(rs1(insn)).wrapping_add(imm_s(insn));
                let v = x(rs2(insn));
                let size = match f3(insn) {
                    0 => 1,
                    1 => 2,
                    2 => 4,
                    3 => 8,
                    _ => return Err(Trap::illegal(insn)),
                };
                self.store(ram, bus, addr, size, v)?;
            }
            0x13 => {
                let a = x(rs1(insn));
                let imm = imm_i(insn);
                let sh = (imm & 0x3f) as u32;
                let v = match f3(insn) {
                    0 => a.wrapping_add(imm),
                    1 if insn >> 26 == 0 => a << sh,
                    2 => ((a as i64) < (imm as i64)) as u64,
                    3 => (a < imm) as u64,
                    4 => a ^ imm,
                    5 if insn >> 26 == 0 => a >> sh,
                    5 if insn >> 26 == 0x10 => ((a as i64) >> sh) as u64,
                    6 => a | imm,
                    7 => a & imm,
                    _ => return Err(Trap::illegal(insn)),
                };
                self.wr(rd(insn), v);
            }
            0x1b => {
                let a = x(rs1(insn));
                let sh = (insn >> 20) & 31;
                let v = match (f3(insn), insn >> 25) {
                    (0, _) => sext32(a.wrapping_add(imm_i(insn))),
                    (1, 0) => sext32(((a as u32) << sh) as u64),
                    (5, 0) => sext32(((a as u32) >> sh) as u64),
                    (5, 0x20) => ((a as i32) >> sh) as i64 as u64,
                    _ => return Err(Trap::illegal(insn)),
                };
                self.wr(rd(insn), v);
            }
            0x33 => {
                let (a, b) = (x(rs1(insn)), x(rs2(insn)));
                let v = match (insn >> 25, f3(insn)) {
                    (0, 0) => a.wrapping_add(b),
                    (0x20, 0) => a.wrapping_sub(b),
                    (0, 1) => a << (b & 63),
                    (0, 2) => ((a as i64) < (b as i64)) as u64,
                    (0, 3) => (a < b) as u64,
                    (0, 4) => a ^ b,
                    (0, 5) => a >> (b & 63),
                    (0x20, 5) => ((a as i64) >> (b & 63)) as u64,
                    (0, 6) => a | b,
                    (0, 7) => a & b,
                    (1, 0) => a.wrapping_mul(b),
                    (1, 1) => ((a as i64 as i128 * b as i64 as i128) >> 64) as u64,
                    (1, 2) => ((a as i64 as i128 * b as i128) >> 64) as u64,
                    (1, 3) => ((a as u128 * b as u128) >> 64) as u64,
                    (1, 4) => {
                        if b == 0 {
                            u64::MAX
                        } else {
                            (a as i64).wrapping_div(b as i64) as u64
                        }
                    }
                    (1, 5) => a.checked_div(b).unwrap_or(u64::MAX),
                    (1, 6) => {
                        if b == 0 {
                            a
                        } else {
                            (a as i64).wrapping_rem(b as i64) as u64
                        }
                    }
                    (1, 7) => {
                        if b == 0 {
                            a
                        } else {
                            a % b
                        }
                    }
                    _ => return Err(Trap::illegal(insn)),
                };
                self.wr(rd(insn), v);
            }
            0x3b => {
                let (a, b) = (x(rs1(insn)), x(rs2(insn)));
                let (a32, b32) = (a as i32, b as i32);
                let v = match (insn >> 25, f3(insn)) {
                    (0, 0) => a32.wrapping_add(b32) as i64 as u64,
                    (0x20, 0) => a32.wrapping_sub(b32) as i64 as u64,
                    (0, 1) => ((a32 as u32) << (b & 31)) as i32 as i64 as u64,
                    (0, 5) => ((a32 as u32) >> (b & 31)) as i32 as i64 as u64,
                    (0x20, 5) => (a32 >> (b & 31)) as i64 as u64,
                    (1, 0) => a32.wrapping_mul(b32) as i64 as u64,
                    (1, 4) => {
                        if b32 == 0 {
                            u64::MAX
                        } else {
                            a32.wrapping_div(b32) as i64 as u64
                        }
                    }
                    (1, 5) => {
                        if b32 == 0 {
                            u64::MAX
                        } else {
                            ((a32 as u32) / (b32 as u32)) as i32 as i64 as u64
                        }
                    }
                    (1, 6) => {
                        if b32 == 0 {
                            a32 as i64 as u64
                        } else {
                            a32.wrapping_rem(b32) as i64 as u64
                        }
                    }
                    (1, 7) => {
                        if b32 == 0 {
                            a32 as i64 as u64
                        } else {
                            ((a32 as u32) % (b32 as u32)) as i32 as i64 as u64
                        }
                    }
                    _ => return Err(Trap::illegal(insn)),
                };
                self.wr(rd(insn), v);
            }
            0x0f => match f3(insn) {
                0 | 1 => {} // FENCE, FENCE.I: one hart, no decoded-code cache.
                _ => return Err(Trap::illegal(insn)),
            },
            0x2f => return self.atomic(insn, next, ram, bus),
            0x07 => {
                if !self.fp_enabled() {
                    return Err(Trap::illegal(insn));
                }
                let addr = x(rs1(insn)).wrapping_add(imm_i(insn));
                let v = match f3(insn) {
                    2 => ftvm_fpu::nan_box_s(self.load(ram, bus, addr, 4)? as u32),
                    3 => self.load(ram, bus, addr, 8)?,
                    _ => return Err(Trap::illegal(insn)),
                };
                self.s.f[rd(insn)] = v;
                self.fp_dirty();
            }
            0x27 => {
                if !self.fp_enabled() {
                    return Err(Trap::illegal(insn));
                }
                let addr = x(rs1(insn)).wrapping_add(imm_s(insn));
                let v = self.s.f[rs2(insn)];
                match f3(insn) {
                    2 => self.store(ram, bus, addr, 4, v)?,
                    3 => self.store(ram, bus, addr, 8, v)?,
                    _ => return Err(Trap::illegal(insn)),
                }
            }
            0x43 | 0x47 | 0x4b | 0x4f | 0x53 => {
                if !self.fp_enabled() {
                    return Err(Trap::illegal(insn));
                }
                let a = x(rs1(insn));
                match ftvm_fpu::execute(insn, &mut self.s.f, &mut self.s.fcsr, a) {
                    Ok(ftvm_fpu::Outcome::FpReg) => {}
                    Ok(ftvm_fpu::Outcome::IntReg { rd, value }) => self.wr(rd, value),
                    Err(_) => return Err(Trap::illegal(insn)),
                }
                self.fp_dirty();
            }
            0x73 => return self.system(insn, next),
            _ => return Err(Trap::illegal(insn)),
        }
        Ok(next)
    }

    fn atomic<B: Bus>(
        &mut self,
        insn: u32,
        next: u64,
        ram: &mut Ram,
        bus: &mut B,
    ) -> Result<u64, Trap> {
        crate::hart::count!(self, atomics);
        let size = match f3(insn) {
            2 => 4,
            3 => 8,
            _ => return Err(Trap::illegal(insn)),
        };
        let addr = self.s.x[rs1(insn)];
        let src = self.s.x[rs2(insn)];
        let op = insn >> 27;
        let ext = |v: u64| if size == 4 { v as i32 as i64 as u64 } else { v };
        match op {
            0x02 => {
                if rs2(insn) != 0 {
                    return Err(Trap::illegal(insn));
                }
                let pa = self.amo_paddr(ram, addr, size, true)?;
                let v = self.phys_read(ram, bus, pa, size, addr, Access::Load)?;
                self.s.reservation = Some(addr);
                self.wr(rd(insn), ext(v));
            }
            0x03 => {
                let ok = self.s.reservation == Some(addr);
                if !addr.is_multiple_of(size as u64) {
                    return Err(Trap {
                        cause: cause::STORE_MISALIGNED,
                        tval: addr,
                    });
                }
                self.s.reservation = None;
                if ok {
                    let pa = self.amo_paddr(ram, addr, size, false)?;
                    self.phys_write(ram, bus, pa, size, src, addr)?;
                }
                self.wr(rd(insn), (!ok) as u64);
            }
            _ => {
                let pa = self.amo_paddr(ram, addr, size, false)?;
                let old = ext(self.phys_read(ram, bus, pa, size, addr, Access::Store)?);
                let b = ext(src);
                let new = match op {
                    0x01 => b,
                    0x00 => old.wrapping_add(b),
                    0x04 => old ^ b,
                    0x0c => old & b,
                    0x08 => old | b,
                    0x10 => (old as i64).min(b as i64) as u64,
                    0x14 => (old as i64).max(b as i64) as u64,
                    0x18 => {
                        if size == 4 {
                            (old as u32).min(b as u32) as u64
                        } else {
                            old.min(b)
                        }
                    }
                    0x1c => {
                        if size == 4 {
                            (old as u32).max(b as u32) as u64
                        } else {
                            old.max(b)
                        }
                    }
                    _ => return Err(Trap::illegal(insn)),
                };
                self.phys_write(ram, bus, pa, size, new, addr)?;
                self.wr(rd(insn), old);
            }
        }
        Ok(next)
    }

    fn system(&mut self, insn: u32, next: u64) -> Result<u64, Trap> {
        let p = self.s.privilege;
        if f3(insn) == 0 {
            if insn >> 25 == 0x09 && rd(insn) == 0 {
                // SFENCE.VMA
                if p == Privilege::User
                    || (p == Privilege::Supervisor && self.s.mstatus & mstatus::TVM != 0)
                {
                    return Err(Trap::illegal(insn));
                }
                self.tlb.flush();
                return Ok(next);
            }
            return match insn {
                0x0000_0073 => {
                    if p == Privilege::Supervisor && self.sbi_intercept {
                        self.event |= event::SBI;
                        return Ok(next);
                    }
                    Err(Trap {
                        cause: cause::ECALL_U + p as u64,
                        tval: 0,
                    })
                }
                0x0010_0073 => Err(Trap {
                    cause: cause::BREAKPOINT,
                    tval: self.s.pc,
                }),
                0x3020_0073 if p == Privilege::Machine => {
                    let st = self.s.mstatus;
                    let mpp = Privilege::from_bits(st >> mstatus::MPP_SHIFT);
                    let mut n = st & !(mstatus::MIE | mstatus::MPP) | mstatus::MPIE;
                    if st & mstatus::MPIE != 0 {
                        n |= mstatus::MIE;
                    }
                    if mpp != Privilege::Machine {
                        n &= !mstatus::MPRV;
                    }
                    self.s.mstatus = n;
                    self.xret(mpp);
                    Ok(self.s.mepc)
                }
                0x1020_0073
                    if p == Privilege::Machine
                        || (p == Privilege::Supervisor && self.s.mstatus & mstatus::TSR == 0) =>
                {
                    let st = self.s.mstatus;
                    let spp = if st & mstatus::SPP != 0 {
                        Privilege::Supervisor
                    } else {
                        Privilege::User
                    };
                    let mut n = st & !(mstatus::SIE | mstatus::SPP) | mstatus::SPIE;
                    if st & mstatus::SPIE != 0 {
                        n |= mstatus::SIE;
                    }
                    n &= !mstatus::MPRV;
                    self.s.mstatus = n;
                    self.xret(spp);
                    Ok(self.s.sepc)
                }
                0x1050_0073 => {
                    let tw = self.s.mstatus & mstatus::TW != 0;
                    if p == Privilege::User || (p == Privilege::Supervisor && tw) {
                        return Err(Trap::illegal(insn));
                    }
                    if !self.interrupt_pending() {
                        self.s.waiting = true;
                        self.event |= event::WFI;
                    }
                    Ok(next)
                }
                _ => Err(Trap::illegal(insn)),
            };
        }
        // Zicsr.
        let csr = (insn >> 20) as u16;
        let f = f3(insn);
        let src = if f & 4 != 0 {
            rs1(insn) as u64
        } else {
            self.s.x[rs1(insn)]
        };
        let writes = match f & 3 {
            1 => true,
            _ => rs1(insn) != 0,
        };
        if !self.csr_allowed(csr, writes) {
            return Err(Trap::illegal(insn));
        }
        // Reads have no side effects here, so CSRRW with rd = x0 may read too.
        let old = self.csr_read(csr).ok_or(Trap::illegal(insn))?;
        if writes {
            // A read-modify-write of mip works on the software-writable bits alone: folding the
            // interrupt lines in would latch a device's SEIP (or the SBI timer's STIP) for good.
            let base = if csr == crate::csr::addr::MIP {
                self.s.mip
            } else {
                old
            };
            let new = match f & 3 {
                1 => src,
                2 => base | src,
                _ => base & !src,
            };
            self.csr_write(csr, new).map_err(|_| Trap::illegal(insn))?;
            self.event |= event::IRQ;
        }
        self.wr(rd(insn), old);
        Ok(next)
    }

    fn xret(&mut self, to: Privilege) {
        self.s.privilege = to;
        self.update_data_ctx();
        self.s.reservation = None;
        self.tlb.flush_fetch();
        self.event |= event::IRQ;
    }
}
