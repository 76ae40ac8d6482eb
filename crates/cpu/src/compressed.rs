//! RV64C: each 16-bit instruction expands to the 32-bit instruction it stands for.
//!
//! The hart looks expansions up in a table of all 65536 halfwords built once, so a compressed
//! instruction costs one load more than a full one. Reserved and illegal encodings expand to 0,
//! which is not a valid 32-bit instruction either.

use std::sync::OnceLock;

fn r(op: u32, rd: u32, f3: u32, rs1: u32, rs2: u32, f7: u32) -> u32 {
    (f7 << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op
}

fn i(op: u32, rd: u32, f3: u32, rs1: u32, imm: i32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op
}

fn s(op: u32, f3: u32, rs1: u32, rs2: u32, imm: i32) -> u32 {
    let imm = imm as u32;
    (((imm >> 5) & 0x7f) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | ((imm & 0x1f) << 7) | op
}

fn b(f3: u32, rs1: u32, rs2: u32, imm: i32) -> u32 {
    let imm = imm as u32;
    (((imm >> 12) & 1) << 31)
        | (((imm >> 5) & 0x3f) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (f3 << 12)
        | (((imm >> 1) & 0xf) << 8)
        | (((imm >> 11) & 1) << 7)
        | 0x63
}

fn j(rd: u32, imm: i32) -> u32 {
    let imm = imm as u32;
    (((imm >> 20) & 1) << 31)
        | (((imm >> 1) & 0x3ff) << 21)
        | (((imm >> 11) & 1) << 20)
        | (((imm >> 12) & 0xff) << 12)
        | (rd << 7)
        | 0x6f
}

fn u(op: u32, rd: u32, imm: i32) -> u32 {
    (imm as u32 & 0xffff_f000) | (rd << 7) | op
}

fn bits(x: u32, hi: u32, lo: u32) -> u32 {
    (x >> lo) & ((1 << (hi - lo + 1)) - 1)
}

fn sext(x: u32, width: u32) -> i32 {
    ((x << (32 - width)) as i32) >> (32 - width)
}

/// Expands one 16-bit instruction; 0 if it is illegal or reserved.
pub fn expand(c: u32) -> u32 {
    let op = c & 3;
    let f3 = bits(c, 15, 13);
    let rd = bits(c, 11, 7);
    let rs2 = bits(c, 6, 2);
    let rdp = bits(c, 4, 2) + 8;
    let rs1p = bits(c, 9, 7) + 8;
    match (op, f3) {
        (0, 0) => {
            // C.ADDI4SPN
            let imm = (bits(c, 10, 7) << 6)
                | (bits(c, 12, 11) << 4)
                | (bits(c, 5, 5) << 3)
                | (bits(c, 6, 6) << 2);
            if imm == 0 {
                0
            } else {
                i(0x13, rdp, 0, 2, imm as i32)
            }
        }
        (0, 1) => i(
            0x07,
            rdp,
            3,
            rs1p,
            ((bits(c, 6, 5) << 6) | (bits(c, 12, 10) << 3)) as i32,
        ), // C.FLD
        (0, 2) => i(
            0x03,
            rdp,
            2,
            rs1p,
            ((bits(c, 5, 5) << 6) | (bits(c, 12, 10) << 3) | (bits(c, 6, 6) << 2)) as i32,
        ), // C.LW
        (0, 3) => i(
            0x03,
            rdp,
            3,
            rs1p,
            ((bits(c, 6, 5) << 6) | (bits(c, 12, 10) << 3)) as i32,
        ), // C.LD
        (0, 5) => s(
            0x27,
            3,
            rs1p,
            rdp,
            ((bits(c, 6, 5) << 6) | (bits(c, 12, 10) << 3)) as i32,
        ), // C.FSD
        (0, 6) => s(
            0x23,
            2,
            rs1p,
            rdp,
            ((bits(c, 5, 5) << 6) | (bits(c, 12, 10) << 3) | (bits(c, 6, 6) << 2)) as i32,
        ), // C.SW
        (0, 7) => s(
            0x23,
            3,
            rs1p,
            rdp,
            ((bits(c, 6, 5) << 6) | (bits(c, 12, 10) << 3)) as i32,
        ), // C.SD
        (1, 0) => i(
            0x13,
            rd,
            0,
            rd,
            sext((bits(c, 12, 12) << 5) | bits(c, 6, 2), 6),
        ), // C.ADDI / NOP
        (1, 1) => {
            // C.ADDIW
            if rd == 0 {
                0
            } else {
                i(
                    0x1b,
                    rd,
                    0,
                    rd,
                    sext((bits(c, 12, 12) << 5) | bits(c, 6, 2), 6),
                )
            }
        }
        (1, 2) => i(
            0x13,
            rd,
            0,
            0,
            sext((bits(c, 12, 12) << 5) | bits(c, 6, 2), 6),
        ), // C.LI
        (1, 3) => {
            if rd == 2 {
                // C.ADDI16SP
                let imm = (bits(c, 12, 12) << 9)
                    | (bits(c, 4, 3) << 7)
                    | (bits(c, 5, 5) << 6)
                    | (bits(c, 2, 2) << 5)
                    | (bits(c, 6, 6) << 4);
                if imm == 0 {
                    0
                } else {
                    i(0x13, 2, 0, 2, sext(imm, 10))
                }
            } else {
                // C.LUI
                let imm = sext((bits(c, 12, 12) << 17) | (bits(c, 6, 2) << 12), 18);
                if imm == 0 { 0 } else { u(0x37, rd, imm) }
            }
        }
        (1, 4) => {
            let shamt = (bits(c, 12, 12) << 5) | bits(c, 6, 2);
            match bits(c, 11, 10) {
                0 => i(0x13, rs1p, 5, rs1p, shamt as i32), // C.SRLI
                1 => i(0x13, rs1p, 5, rs1p, (shamt | 0x400) as i32), // C.SRAI
                2 => i(
                    0x13,
                    rs1p,
                    7,
                    rs1p,
                    sext((bits(c, 12, 12) << 5) | bits(c, 6, 2), 6),
                ), // C.ANDI
                _ => match (bits(c, 12, 12), bits(c, 6, 5)) {
                    (0, 0) => r(0x33, rs1p, 0, rs1p, rdp, 0x20), // C.SUB
                    (0, 1) => r(0x33, rs1p, 4, rs1p, rdp, 0),    // C.XOR
                    (0, 2) => r(0x33, rs1p, 6, rs1p, rdp, 0),    // C.OR
                    (0, 3) => r(0x33, rs1p, 7, rs1p, rdp, 0),    // C.AND
                    (1, 0) => r(0x3b, rs1p, 0, rs1p, rdp, 0x20), // C.SUBW
                    (1, 1) => r(0x3b, rs1p, 0, rs1p, rdp, 0),    // C.ADDW
                    _ => 0,
                },
            }
        }
        (1, 5) => {
            // C.J
            let imm = (bits(c, 12, 12) << 11)
                | (bits(c, 8, 8) << 10)
                | (bits(c, 10, 9) << 8)
                | (bits(c, 6, 6) << 7)
                | (bits(c, 7, 7) << 6)
                | (bits(c, 2, 2) << 5)
                | (bits(c, 11, 11) << 4)
                | (bits(c, 5, 3) << 1);
            j(0, sext(imm, 12))
        }
        (1, 6) | (1, 7) => {
            // C.BEQZ / C.BNEZ
            let imm = (bits(c, 12, 12) << 8)
                | (bits(c, 6, 5) << 6)
                | (bits(c, 2, 2) << 5)
                | (bits(c, 11, 10) << 3)
                | (bits(c, 4, 3) << 1);
            b(f3 - 6, rs1p, 0, sext(imm, 9))
        }
        (2, 0) => i(
            0x13,
            rd,
            1,
            rd,
            ((bits(c, 12, 12) << 5) | bits(c, 6, 2)) as i32,
        ), // C.SLLI
        (2, 1) => i(
            0x07,
            rd,
            3,
            2,
            ((bits(c, 4, 2) << 6) | (bits(c, 12, 12) << 5) | (bits(c, 6, 5) << 3)) as i32,
        ), // C.FLDSP
        (2, 2) => {
            if rd == 0 {
                0
            } else {
                i(
                    0x03,
                    rd,
                    2,
                    2,
                    ((bits(c, 3, 2) << 6) | (bits(c, 12, 12) << 5) | (bits(c, 6, 4) << 2)) as i32,
                )
            } // C.LWSP
        }
        (2, 3) => {
            if rd == 0 {
                0
            } else {
                i(
                    0x03,
                    rd,
                    3,
                    2,
                    ((bits(c, 4, 2) << 6) | (bits(c, 12, 12) << 5) | (bits(c, 6, 5) << 3)) as i32,
                )
            } // C.LDSP
        }
        (2, 4) => match (bits(c, 12, 12), rd, rs2) {
            (0, 0, 0) => 0,
            (0, rs1, 0) => i(0x67, 0, 0, rs1, 0),       // C.JR
            (0, rd, rs2) => r(0x33, rd, 0, 0, rs2, 0),  // C.MV
            (1, 0, 0) => 0x0010_0073,                   // C.EBREAK
            (1, rs1, 0) => i(0x67, 1, 0, rs1, 0),       // C.JALR
            (1, rd, rs2) => r(0x33, rd, 0, rd, rs2, 0), // C.ADD
            _ => 0,
        },
        (2, 5) => s(
            0x27,
            3,
            2,
            rs2,
            ((bits(c, 9, 7) << 6) | (bits(c, 12, 10) << 3)) as i32,
        ), // C.FSDSP
        (2, 6) => s(
            0x23,
            2,
            2,
            rs2,
            ((bits(c, 8, 7) << 6) | (bits(c, 12, 9) << 2)) as i32,
        ), // C.SWSP
        (2, 7) => s(
            0x23,
            3,
            2,
            rs2,
            ((bits(c, 9, 7) << 6) | (bits(c, 12, 10) << 3)) as i32,
        ), // C.SDSP
        _ => 0,
    }
}

/// The expansion of every halfword, computed once per process.
pub fn table() -> &'static [u32] {
    static TABLE: OnceLock<Vec<u32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=0xffffu32)
            .map(|c| if c & 3 == 3 { 0 } else { expand(c) })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn known_expansions() {
        assert_eq!(expand(0x0000), 0); // illegal
        assert_eq!(expand(0x0001), 0x0000_0013); // c.nop = addi x0,x0,0
        assert_eq!(expand(0x4501), 0x0000_0513); // c.li a0,0
        assert_eq!(expand(0x8082), 0x0000_8067); // c.jr ra = ret
        assert_eq!(expand(0x1141), 0xff01_0113); // c.addi sp,sp,-16
        assert_eq!(expand(0xe406), 0x0011_3423); // c.sdsp ra,8(sp)
        assert_eq!(expand(0x60a2), 0x0081_3083); // c.ldsp ra,8(sp)
        assert_eq!(expand(0x9002), 0x0010_0073); // c.ebreak
    }
}
