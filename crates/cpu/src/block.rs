//! Pre-decoded basic blocks: the interpreter's fast path.
//!
//! A block is the straight-line run of instructions from one physical address up to and
//! including the first control transfer or system instruction (at most one page, at most
//! `MAX_OPS`). Instructions are decoded once into [`Op`]s with their fields extracted; common
//! integer, load and store instructions execute from the op directly, everything else goes
//! through the general executor with the raw bits. Blocks are cached by physical address and
//! hold no virtual addresses (pc-relative instructions read the live pc), so one block serves
//! every mapping of its page. A store to a page holding decoded code drops that page's blocks
//! (the RAM reports it), which keeps self-modifying code and module loading correct.

use std::rc::Rc;

use crate::hart::{Hart, Trap};
use crate::{Bus, Ram};

pub(crate) const MAX_OPS: usize = 64;
const CACHE_BITS: u32 = 14;
const CACHE_SIZE: usize = 1 << CACHE_BITS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
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
    pub imm: i64,
    /// The expanded 32-bit instruction (for `Other` and traps).
    pub insn: u32,
    /// The original bits (16-bit for compressed) for illegal-instruction reports.
    pub raw: u32,
}

impl Op {
    /// Whether the block must end after this op.
    fn ends_block(&self) -> bool {
        match self.kind {
            Kind::Jal
            | Kind::Jalr
            | Kind::Beq
            | Kind::Bne
            | Kind::Blt
            | Kind::Bge
            | Kind::Bltu
            | Kind::Bgeu => true,
            // SYSTEM (traps, xRET, CSRs, WFI, SFENCE), FENCE.I, and anything illegal.
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
    Op {
        kind,
        rd: ((insn >> 7) & 31) as u8,
        rs1: ((insn >> 15) & 31) as u8,
        rs2: ((insn >> 20) & 31) as u8,
        len,
        imm,
        insn,
        raw,
    }
}

pub(crate) struct Block {
    /// RAM offset of the first instruction.
    pub start: usize,
    pub ops: Vec<Op>,
}

/// Decoded blocks by RAM offset, direct-mapped.
pub(crate) struct BlockCache {
    slots: Vec<Option<Rc<Block>>>,
}

impl BlockCache {
    pub fn new() -> Self {
        BlockCache {
            slots: vec![None; CACHE_SIZE],
        }
    }

    #[inline(always)]
    fn slot(off: usize) -> usize {
        (off >> 1) & (CACHE_SIZE - 1)
    }

    #[inline(always)]
    pub fn get(&self, off: usize) -> Option<&Rc<Block>> {
        match &self.slots[Self::slot(off)] {
            Some(b) if b.start == off => Some(b),
            _ => None,
        }
    }

    pub fn insert(&mut self, block: Block) -> Rc<Block> {
        let rc = Rc::new(block);
        self.slots[Self::slot(rc.start)] = Some(rc.clone());
        rc
    }

    /// Drops every block starting in page `page` (by RAM offset / 4096).
    pub fn invalidate_page(&mut self, page: usize) {
        let first = page << 12;
        for off in (first..first + 4096).step_by(2) {
            let s = Self::slot(off);
            if self.slots[s]
                .as_ref()
                .is_some_and(|b| b.start >> 12 == page)
            {
                self.slots[s] = None;
            }
        }
    }

    pub fn flush(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }
}

impl Hart {
    /// Decodes the block starting at RAM offset `off` (the instruction at the current pc).
    pub(crate) fn decode_block(&mut self, ram: &mut Ram, off: usize) -> Rc<Block> {
        let table = crate::compressed::table();
        let mut ops = Vec::new();
        let mut at = off;
        let page_end = (off | 0xfff) + 1;
        while ops.len() < MAX_OPS && at + 2 <= page_end {
            let lo = ram.load_at(at, 2) as u32;
            let op = if lo & 3 == 3 {
                if at + 4 > page_end {
                    break; // crosses the page: executed by the general path
                }
                let insn = ram.load_at(at, 4) as u32;
                decode(insn, insn, 4)
            } else {
                decode(table[lo as usize], lo, 2)
            };
            at += op.len as usize;
            let end = op.ends_block();
            ops.push(op);
            if end {
                break;
            }
        }
        ram.mark_code(off >> 12);
        self.blocks.insert(Block { start: off, ops })
    }

    /// Executes one op at `pc`; returns the next pc.
    #[inline(always)]
    pub(crate) fn exec_op<B: Bus>(
        &mut self,
        op: &Op,
        pc: u64,
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
            Beq | Bne | Blt | Bge | Bltu | Bgeu => {
                let taken = match op.kind {
                    Beq => a == b,
                    Bne => a != b,
                    Blt => (a as i64) < (b as i64),
                    Bge => (a as i64) >= (b as i64),
                    Bltu => a < b,
                    _ => a >= b,
                };
                return Ok(if taken { pc.wrapping_add(imm) } else { next });
            }
            Lb => self.load(ram, bus, a.wrapping_add(imm), 1)? as i8 as i64 as u64,
            Lh => self.load(ram, bus, a.wrapping_add(imm), 2)? as i16 as i64 as u64,
            Lw => self.load(ram, bus, a.wrapping_add(imm), 4)? as i32 as i64 as u64,
            Ld => self.load(ram, bus, a.wrapping_add(imm), 8)?,
            Lbu => self.load(ram, bus, a.wrapping_add(imm), 1)?,
            Lhu => self.load(ram, bus, a.wrapping_add(imm), 2)?,
            Lwu => self.load(ram, bus, a.wrapping_add(imm), 4)?,
            Sb | Sh | Sw | Sd => {
                let size = match op.kind {
                    Sb => 1,
                    Sh => 2,
                    Sw => 4,
                    _ => 8,
                };
                self.store(ram, bus, a.wrapping_add(imm), size, b)?;
                return Ok(next);
            }
            Addi => a.wrapping_add(imm),
            Slti => ((a as i64) < (imm as i64)) as u64,
            Sltiu => (a < imm) as u64,
            Xori => a ^ imm,
            Ori => a | imm,
            Andi => a & imm,
            Slli => a << imm,
            Srli => a >> imm,
            Srai => ((a as i64) >> imm) as u64,
            Addiw => (a.wrapping_add(imm) as i32) as i64 as u64,
            Slliw => ((a as u32) << imm) as i32 as i64 as u64,
            Srliw => ((a as u32) >> imm) as i32 as i64 as u64,
            Sraiw => ((a as i32) >> imm) as i64 as u64,
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
                if op.insn == 0 {
                    return Err(Trap::illegal(op.raw));
                }
                return self.execute(op.insn, op.len as u64, ram, bus).map_err(|t| {
                    if t.cause == crate::hart::cause::ILLEGAL && op.len == 2 {
                        Trap::illegal(op.raw)
                    } else {
                        t
                    }
                });
            }
        };
        self.set_reg(op.rd, v);
        Ok(next)
    }

    #[inline(always)]
    fn set_reg(&mut self, rd: u8, v: u64) {
        if rd != 0 {
            self.s.x[(rd & 31) as usize] = v;
        }
    }
}
