//! Pre-decoded basic blocks: the interpreter's fast path.
//!
//! A block is the run of instructions from one physical address up to and including the first
//! indirect jump, jump out of the page or system instruction (at most `MAX_OPS`), following
//! direct jumps and calls within the page; a taken conditional branch leaves it early.
//! Instructions are decoded once into [`Op`]s with their fields extracted; common integer, load
//! and store instructions execute from the op directly, everything else goes through the
//! general executor with the raw bits. Blocks are cached by physical address and
//! hold no virtual addresses (pc-relative instructions read the live pc), so one block serves
//! every mapping of its page. A store to a page holding decoded code drops that page's blocks
//! (the RAM reports it), which keeps self-modifying code and module loading correct.

use crate::hart::{Hart, Trap};
use crate::{Bus, Ram};

pub(crate) const MAX_OPS: usize = 128;
/// 64K sets of two ways (2 MiB of slots). A network-heavy guest's hot code (kernel TCP/IP,
/// virtio, redis, libc) thrashed a direct-mapped table of 16K, re-decoding a block every ~250
/// instructions.
const SETS: usize = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// An instruction with no architectural effect (an ALU op writing x0).
    Nop,
    /// `jal x0` and `jalr x0`: jumps that link nothing.
    J,
    Jr,
    Lui,
    Auipc,
    Jal,
    Jalr,
    Beq,
    Bne,
    Blt,
    Bge,
    Bltu,
    Bgeu,
    Lb,
    Lh,
    Lw,
    Ld,
    Lbu,
    Lhu,
    Lwu,
    Sb,
    Sh,
    Sw,
    Sd,
    Addi,
    Slti,
    Sltiu,
    Xori,
    Ori,
    Andi,
    Slli,
    Srli,
    Srai,
    Addiw,
    Slliw,
    Srliw,
    Sraiw,
    Add,
    Sub,
    Sll,
    Slt,
    Sltu,
    Xor,
    Srl,
    Sra,
    Or,
    And,
    Mul,
    Mulh,
    Mulhsu,
    Mulhu,
    Div,
    Divu,
    Rem,
    Remu,
    Mulw,
    Addw,
    Subw,
    Sllw,
    Srlw,
    Sraw,
    /// Anything else: executed from the raw bits by the general executor.
    Other,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Op {
    pub kind: Kind,
    pub rd: u8,
    pub rs1: u8,
    pub rs2: u8,
    /// Instruction length in bytes (2 or 4).
    pub len: u8,
    /// A conditional branch whose target is an earlier op of its own block: that op's index
    /// plus one (0: none). A taken branch there runs on inside the block (a loop) instead of
    /// leaving it for a lookup.
    pub back: u8,
    pub imm: i64,
    /// The expanded 32-bit instruction (for `Other` and traps).
    pub insn: u32,
    /// The original bits (16-bit for compressed) for illegal-instruction reports.
    pub raw: u32,
}

/// Set in the pc an op returns when the block must end after it: a taken conditional branch
/// (blocks run on past branches that fall through: half of a kernel's do, which halves the
/// block lookups), or an op that raised a run-loop event (MMIO, a store to code, anything the
/// general executor runs). A pc is always even, so the bit is free, and the block loop pays
/// one test per op for both.
pub(crate) const LEAVE: u64 = 1;

/// Whether `kind` is a conditional branch.
pub(crate) fn is_branch(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Beq | Kind::Bne | Kind::Blt | Kind::Bge | Kind::Bltu | Kind::Bgeu
    )
}

impl Op {
    /// Whether the block must end after this op.
    fn ends_block(&self) -> bool {
        match self.kind {
            Kind::Jal | Kind::Jalr | Kind::J | Kind::Jr => true,
            // SYSTEM (traps, xRET, CSRs, WFI, SFENCE), FENCE.I (FENCE is a Nop), and anything
            // illegal.
            Kind::Other => matches!(self.insn & 0x7f, 0x73 | 0x0f) || self.insn == 0,
            _ => false,
        }
    }
}

fn imm_i(i: u32) -> i64 {
    ((i as i32) >> 20) as i64
}

fn imm_s(i: u32) -> i64 {
    ((((i as i32) >> 25) << 5) | ((i >> 7) & 31) as i32) as i64
}

fn imm_b(i: u32) -> i64 {
    ((((i as i32) >> 31) << 12)
        | (((i >> 7) & 1) << 11) as i32
        | (((i >> 25) & 0x3f) << 5) as i32
        | (((i >> 8) & 0xf) << 1) as i32) as i64
}

fn imm_j(i: u32) -> i64 {
    ((((i as i32) >> 31) << 20)
        | (i & 0xff000) as i32
        | (((i >> 20) & 1) << 11) as i32
        | (((i >> 21) & 0x3ff) << 1) as i32) as i64
}

/// Decodes an expanded instruction (`insn` = 0 for an illegal compressed one).
pub(crate) fn decode(insn: u32, raw: u32, len: u8) -> Op {
    use Kind::*;
    let f3 = (insn >> 12) & 7;
    let f7 = insn >> 25;
    let (kind, imm) = match insn & 0x7f {
        0x37 => (Lui, (insn & 0xffff_f000) as i32 as i64),
        0x17 => (Auipc, (insn & 0xffff_f000) as i32 as i64),
        0x6f => (Jal, imm_j(insn)),
        // FENCE orders memory between harts and devices; one hart whose device accesses
        // complete in order needs nothing from it, so it no longer ends the block (the
        // kernel's MMIO accessors put one around every access). FENCE.I still does.
        0x0f if f3 == 0 => (Nop, 0),
        0x67 if f3 == 0 => (Jalr, imm_i(insn)),
        0x63 => match f3 {
            0 => (Beq, imm_b(insn)),
            1 => (Bne, imm_b(insn)),
            4 => (Blt, imm_b(insn)),
            5 => (Bge, imm_b(insn)),
            6 => (Bltu, imm_b(insn)),
            7 => (Bgeu, imm_b(insn)),
            _ => (Other, 0),
        },
        0x03 => match f3 {
            0 => (Lb, imm_i(insn)),
            1 => (Lh, imm_i(insn)),
            2 => (Lw, imm_i(insn)),
            3 => (Ld, imm_i(insn)),
            4 => (Lbu, imm_i(insn)),
            5 => (Lhu, imm_i(insn)),
            6 => (Lwu, imm_i(insn)),
            _ => (Other, 0),
        },
        0x23 => match f3 {
            0 => (Sb, imm_s(insn)),
            1 => (Sh, imm_s(insn)),
            2 => (Sw, imm_s(insn)),
            3 => (Sd, imm_s(insn)),
            _ => (Other, 0),
        },
        0x13 => {
            let imm = imm_i(insn);
            match f3 {
                0 => (Addi, imm),
                1 if insn >> 26 == 0 => (Slli, imm & 63),
                2 => (Slti, imm),
                3 => (Sltiu, imm),
                4 => (Xori, imm),
                5 if insn >> 26 == 0 => (Srli, imm & 63),
                5 if insn >> 26 == 0x10 => (Srai, imm & 63),
                6 => (Ori, imm),
                7 => (Andi, imm),
                _ => (Other, 0),
            }
        }
        0x1b => match (f3, f7) {
            (0, _) => (Addiw, imm_i(insn)),
            (1, 0) => (Slliw, ((insn >> 20) & 31) as i64),
            (5, 0) => (Srliw, ((insn >> 20) & 31) as i64),
            (5, 0x20) => (Sraiw, ((insn >> 20) & 31) as i64),
            _ => (Other, 0),
        },
        0x33 => match (f7, f3) {
            (0, 0) => (Add, 0),
            (0x20, 0) => (Sub, 0),
            (0, 1) => (Sll, 0),
            (0, 2) => (Slt, 0),
            (0, 3) => (Sltu, 0),
            (0, 4) => (Xor, 0),
            (0, 5) => (Srl, 0),
            (0x20, 5) => (Sra, 0),
            (0, 6) => (Or, 0),
            (0, 7) => (And, 0),
            (1, 0) => (Mul, 0),
            (1, 1) => (Mulh, 0),
            (1, 2) => (Mulhsu, 0),
            (1, 3) => (Mulhu, 0),
            (1, 4) => (Div, 0),
            (1, 5) => (Divu, 0),
            (1, 6) => (Rem, 0),
            (1, 7) => (Remu, 0),
            _ => (Other, 0),
        },
        0x3b => match (f7, f3) {
            (1, 0) => (Mulw, 0),
            (0, 0) => (Addw, 0),
            (0x20, 0) => (Subw, 0),
            (0, 1) => (Sllw, 0),
            (0, 5) => (Srlw, 0),
            (0x20, 5) => (Sraw, 0),
            _ => (Other, 0),
        },
        _ => (Other, 0),
    };
    let rd = ((insn >> 7) & 31) as u8;
    // With x0 as destination the specialised kinds drop the write entirely, so the executor
    // writes registers without testing rd. Loads to x0 still access memory (they may fault or
    // touch a device): the general executor runs those.
    let kind = match kind {
        _ if rd != 0 => kind,
        Jal => J,
        Jalr => Jr,
        Beq | Bne | Blt | Bge | Bltu | Bgeu | Sb | Sh | Sw | Sd | Other => kind,
        Lb | Lh | Lw | Ld | Lbu | Lhu | Lwu => Other,
        _ => Nop,
    };
    Op {
        kind,
        rd,
        rs1: ((insn >> 15) & 31) as u8,
        rs2: ((insn >> 20) & 31) as u8,
        len,
        back: 0,
        imm,
        insn,
        raw,
    }
}

/// One cached block: where it starts and where its ops lie in the arena. 16 bytes, so a set of
/// two ways is one half of a cache line.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// RAM offset of the first instruction plus one; 0 for a free way.
    start: usize,
    /// Index of the first op in the arena.
    at: u32,
    len: u32,
}

/// Ops the arena holds before it is emptied (and every block decoded again): 24 MiB.
const ARENA_MAX: usize = 1 << 20;

/// Decoded blocks by RAM offset: a two-way set-associative table of small slots over one arena
/// of ops. Blocks decoded together (a hot path) sit together in the arena, and the table is a
/// quarter of what one slot per block with its own allocation took: a network-heavy guest's hot
/// kernel code does not fit in the host's caches, and each block's lookup used to wait on two
/// cache misses (its slot, then its separately allocated ops). Invalidated blocks leave their
/// ops behind until the arena is full, then everything is dropped at once. The run loop takes
/// the cache out of the hart while it executes, which lets a block be borrowed meanwhile.
#[derive(Default)]
pub(crate) struct BlockCache {
    slots: Vec<Slot>,
    arena: Vec<Op>,
}

impl BlockCache {
    pub fn new() -> Self {
        BlockCache {
            slots: vec![Slot::default(); 2 * SETS],
            arena: Vec::with_capacity(ARENA_MAX),
        }
    }

    /// The first way of the set for `off`. Blocks start on 2-byte boundaries; two that start
    /// 2 bytes apart share a set, which is what its second way is for.
    #[inline(always)]
    fn set(off: usize) -> usize {
        ((off >> 2) & (SETS - 1)) * 2
    }

    #[inline(always)]
    pub fn get(&self, off: usize) -> Option<&[Op]> {
        let i = Self::set(off);
        let key = off + 1;
        let s = if self.slots[i].start == key {
            self.slots[i]
        } else if self.slots[i + 1].start == key {
            self.slots[i + 1]
        } else {
            return None;
        };
        self.arena.get(s.at as usize..(s.at + s.len) as usize)
    }

    pub fn insert(&mut self, start: usize, ops: &[Op]) {
        if self.arena.len() + ops.len() > ARENA_MAX {
            self.flush();
        }
        let i = Self::set(start);
        // The newest block takes the first way; the one it displaces keeps the second.
        self.slots[i + 1] = self.slots[i];
        self.slots[i] = Slot {
            start: start + 1,
            at: self.arena.len() as u32,
            len: ops.len() as u32,
        };
        self.arena.extend_from_slice(ops);
    }

    /// Drops every block starting in page `page` (by RAM offset / 4096).
    pub fn invalidate_page(&mut self, page: usize) {
        let first = page << 12;
        for off in (first..first + 4096).step_by(4) {
            let i = Self::set(off);
            for s in &mut self.slots[i..i + 2] {
                if s.start != 0 && (s.start - 1) >> 12 == page {
                    *s = Slot::default();
                }
            }
        }
    }

    pub fn flush(&mut self) {
        self.slots.fill(Slot::default());
        self.arena.clear();
    }
}

impl Hart {
    /// Decodes the block starting at RAM offset `off` into `cache`.
    pub(crate) fn decode_block(cache: &mut BlockCache, ram: &mut Ram, off: usize) {
        let table = crate::compressed::table();
        let mut ops: Vec<Op> = Vec::with_capacity(16);
        // Where each op lies in the page: a branch back to one of them loops inside the block.
        let mut offsets: Vec<usize> = Vec::with_capacity(16);
        let mut at = off;
        let page_start = off & !0xfff;
        let page_end = page_start + 0x1000;
        while ops.len() < MAX_OPS && at + 2 <= page_end {
            let lo = ram.load_at(at, 2) as u32;
            let mut op = if lo & 3 == 3 {
                if at + 4 > page_end {
                    break; // crosses the page: executed by the general path
                }
                let insn = ram.load_at(at, 4) as u32;
                decode(insn, insn, 4)
            } else {
                decode(table[lo as usize], lo, 2)
            };
            if is_branch(op.kind) {
                let target = (at as i64).wrapping_add(op.imm) as usize;
                if let Some(j) = offsets.iter().position(|&o| o == target) {
                    op.back = j as u8 + 1;
                }
            }
            let end = op.ends_block();
            // A direct jump or call within the page: the block goes on at its target (ops read
            // the live pc, so they are right there too). Anything else that ends a block does.
            let next = if matches!(op.kind, Kind::J | Kind::Jal) {
                Some((at as i64).wrapping_add(op.imm) as usize)
                    .filter(|&t| t >= page_start && t < page_end)
            } else if end {
                None
            } else {
                Some(at + op.len as usize)
            };
            ops.push(op);
            offsets.push(at);
            match next {
                Some(t) => at = t,
                None => break,
            }
        }
        ram.mark_code(off >> 12);
        cache.insert(off, &ops);
    }

    /// Executes one op at `pc`, the block's instruction number `icount`; returns the next pc.
    ///
    /// `self.s.pc` and `self.s.icount` are stale inside a block (the block loop keeps them in
    /// registers): the paths that can observe them (a trap, a device access reading the timer,
    /// the general executor) bring them up to date first.
    #[inline(always)]
    pub(crate) fn exec_op<B: Bus>(
        &mut self,
        op: &Op,
        pc: u64,
        icount: u64,
        ram: &mut Ram,
        bus: &mut B,
    ) -> Result<u64, Trap> {
        use Kind::*;
        let next = pc.wrapping_add(op.len as u64);
        // Masking proves the index in range, so the register reads carry no bounds check.
        let a = self.s.x[(op.rs1 & 31) as usize];
        let b = self.s.x[(op.rs2 & 31) as usize];
        let imm = op.imm as u64;
        let v = match op.kind {
            Nop => return Ok(next),
            J => return Ok(pc.wrapping_add(imm)),
            Jr => return Ok(a.wrapping_add(imm) & !1),
            Lui => imm,
            Auipc => pc.wrapping_add(imm),
            Jal => {
                self.set_reg(op.rd, next);
                return Ok(pc.wrapping_add(imm));
            }
            Jalr => {
                let target = a.wrapping_add(imm) & !1;
                self.set_reg(op.rd, next);
                return Ok(target);
            }
            Beq => {
                return Ok(if a == b {
                    pc.wrapping_add(imm) | LEAVE
                } else {
                    next
                });
            }
            Bne => {
                return Ok(if a != b {
                    pc.wrapping_add(imm) | LEAVE
                } else {
                    next
                });
            }
            Blt => {
                return Ok(if (a as i64) < (b as i64) {
                    pc.wrapping_add(imm) | LEAVE
                } else {
                    next
                });
            }
            Bge => {
                return Ok(if (a as i64) >= (b as i64) {
                    pc.wrapping_add(imm) | LEAVE
                } else {
                    next
                });
            }
            Bltu => {
                return Ok(if a < b {
                    pc.wrapping_add(imm) | LEAVE
                } else {
                    next
                });
            }
            Bgeu => {
                return Ok(if a >= b {
                    pc.wrapping_add(imm) | LEAVE
                } else {
                    next
                });
            }
            Lb => {
                return self.load_op(op, ram, bus, a.wrapping_add(imm), 1, icount, next, |v| {
                    v as i8 as i64 as u64
                });
            }
            Lh => {
                return self.load_op(op, ram, bus, a.wrapping_add(imm), 2, icount, next, |v| {
                    v as i16 as i64 as u64
                });
            }
            Lw => {
                return self.load_op(op, ram, bus, a.wrapping_add(imm), 4, icount, next, |v| {
                    v as i32 as i64 as u64
                });
            }
            Ld => return self.load_op(op, ram, bus, a.wrapping_add(imm), 8, icount, next, |v| v),
            Lbu => return self.load_op(op, ram, bus, a.wrapping_add(imm), 1, icount, next, |v| v),
            Lhu => return self.load_op(op, ram, bus, a.wrapping_add(imm), 2, icount, next, |v| v),
            Lwu => return self.load_op(op, ram, bus, a.wrapping_add(imm), 4, icount, next, |v| v),
            Sb => return self.store_in_block(ram, bus, a.wrapping_add(imm), 1, b, icount, next),
            Sh => return self.store_in_block(ram, bus, a.wrapping_add(imm), 2, b, icount, next),
            Sw => return self.store_in_block(ram, bus, a.wrapping_add(imm), 4, b, icount, next),
            Sd => return self.store_in_block(ram, bus, a.wrapping_add(imm), 8, b, icount, next),
            Addi => a.wrapping_add(imm),
            Slti => ((a as i64) < (imm as i64)) as u64,
            Sltiu => (a < imm) as u64,
            Xori => a ^ imm,
            Ori => a | imm,
            Andi => a & imm,
            Slli => a << (imm & 63),
            Srli => a >> (imm & 63),
            Srai => ((a as i64) >> (imm & 63)) as u64,
            Addiw => (a.wrapping_add(imm) as i32) as i64 as u64,
            Slliw => ((a as u32) << (imm & 31)) as i32 as i64 as u64,
            Srliw => ((a as u32) >> (imm & 31)) as i32 as i64 as u64,
            Sraiw => ((a as i32) >> (imm & 31)) as i64 as u64,
            Add => a.wrapping_add(b),
            Sub => a.wrapping_sub(b),
            Sll => a << (b & 63),
            Slt => ((a as i64) < (b as i64)) as u64,
            Sltu => (a < b) as u64,
            Xor => a ^ b,
            Srl => a >> (b & 63),
            Sra => ((a as i64) >> (b & 63)) as u64,
            Or => a | b,
            And => a & b,
            Mul => a.wrapping_mul(b),
            Mulh => ((a as i64 as i128 * b as i64 as i128) >> 64) as u64,
            Mulhsu => ((a as i64 as i128 * b as i128) >> 64) as u64,
            Mulhu => ((a as u128 * b as u128) >> 64) as u64,
            Div => {
                if b == 0 {
                    u64::MAX
                } else {
                    (a as i64).wrapping_div(b as i64) as u64
                }
            }
            Divu => a.checked_div(b).unwrap_or(u64::MAX),
            Rem => {
                if b == 0 {
                    a
                } else {
                    (a as i64).wrapping_rem(b as i64) as u64
                }
            }
            Remu => {
                if b == 0 {
                    a
                } else {
                    a % b
                }
            }
            Mulw => (a as i32).wrapping_mul(b as i32) as i64 as u64,
            Addw => (a as i32).wrapping_add(b as i32) as i64 as u64,
            Subw => (a as i32).wrapping_sub(b as i32) as i64 as u64,
            Sllw => ((a as u32) << (b & 31)) as i32 as i64 as u64,
            Srlw => ((a as u32) >> (b & 31)) as i32 as i64 as u64,
            Sraw => ((a as i32) >> (b & 31)) as i64 as u64,
            Other => {
                let next = self.exec_other(op, pc, icount, ram, bus)?;
                return Ok(next | (self.event != 0) as u64);
            }
        };
        self.set_reg(op.rd, v);
        Ok(next)
    }

    /// The general executor for an op the block path does not specialise.
    #[inline(never)]
    fn exec_other<B: Bus>(
        &mut self,
        op: &Op,
        pc: u64,
        icount: u64,
        ram: &mut Ram,
        bus: &mut B,
    ) -> Result<u64, Trap> {
        if op.insn == 0 {
            return Err(Trap::illegal(op.raw));
        }
        self.s.pc = pc;
        self.s.icount = icount;
        self.execute(op.insn, op.len as u64, ram, bus).map_err(|t| {
            if t.cause == crate::hart::cause::ILLEGAL && op.len == 2 {
                Trap::illegal(op.raw)
            } else {
                t
            }
        })
    }

    /// A load inside a block into `op.rd`, extended by `ext`: a TLB hit reads RAM directly;
    /// anything else (a miss, a device, a fault) first makes the instruction count exact, since
    /// a device read samples the timer, and leaves the block if the access raised an event.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn load_op<B: Bus>(
        &mut self,
        op: &Op,
        ram: &mut Ram,
        bus: &mut B,
        vaddr: u64,
        size: u8,
        icount: u64,
        next: u64,
        ext: impl Fn(u64) -> u64,
    ) -> Result<u64, Trap> {
        if let Some(off) = self.tlb_hit(crate::mmu::Access::Load, vaddr, size) {
            self.set_reg(op.rd, ext(ram.load_at(off, size)));
            return Ok(next);
        }
        self.s.icount = icount;
        let v = self.load(ram, bus, vaddr, size)?;
        self.set_reg(op.rd, ext(v));
        Ok(next | (self.event != 0) as u64)
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn store_in_block<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        vaddr: u64,
        size: u8,
        value: u64,
        icount: u64,
        next: u64,
    ) -> Result<u64, Trap> {
        if let Some(off) = self.tlb_hit(crate::mmu::Access::Store, vaddr, size) {
            if ram.store_at(off, size, value) {
                self.event |= crate::hart::event::CODE;
                return Ok(next | LEAVE);
            }
            return Ok(next);
        }
        self.s.icount = icount;
        self.store(ram, bus, vaddr, size, value)?;
        Ok(next | (self.event != 0) as u64)
    }

    /// Writes a register. Block ops never have rd = 0 (decode turns those into `Nop`, `J`,
    /// `Jr` or `Other`), so no test is needed.
    #[inline(always)]
    fn set_reg(&mut self, rd: u8, v: u64) {
        debug_assert!(rd != 0);
        self.s.x[(rd & 31) as usize] = v;
    }
}
