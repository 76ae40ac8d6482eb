//! Debugging aids: a look at the registers, and fault injection for testing divergence checks.

use std::fmt::Write;

use crate::machine::Machine;

const ABI: [&str; 32] = [
    "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3", "a4",
    "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4",
    "t5", "t6",
];

/// CSRs worth seeing when stopped somewhere.
const CSRS: [(&str, u16); 12] = [
    ("mstatus", 0x300),
    ("mepc", 0x341),
    ("mcause", 0x342),
    ("mtval", 0x343),
    ("mip", 0x344),
    ("mie", 0x304),
    ("sstatus", 0x100),
    ("sepc", 0x141),
    ("scause", 0x142),
    ("stval", 0x143),
    ("stvec", 0x105),
    ("satp", 0x180),
];

impl Machine {
    /// The hart's registers and main CSRs, one per line group, for a person to read.
    pub fn describe_registers(&self) -> String {
        let h = &self.hart;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "icount {}  pc {:#018x}  privilege {:?}  mtime {}",
            h.icount(),
            h.pc(),
            h.privilege(),
            h.mtime()
        );
        for (i, name) in ABI.iter().enumerate() {
            let _ = write!(
                s,
                "{name:>4} {:#018x}{}",
                h.x(i),
                if i % 4 == 3 { "\n" } else { "  " }
            );
        }
        for (i, (name, csr)) in CSRS.iter().enumerate() {
            let v = h.csr(*csr).unwrap_or(0);
            let _ = write!(
                s,
                "{name:>7} {v:#018x}{}",
                if i % 3 == 2 { "\n" } else { "  " }
            );
        }
        s
    }

    /// The UART's and PLIC's registers, for a person debugging interrupt trouble.
    pub fn describe_devices(&self) -> String {
        format!(
            "uart {:?}\nplic {:?}\nclint {:?}",
            self.dev.uart, self.dev.plic, self.dev.clint
        )
    }

    /// Flips one bit of guest RAM (a fault injected on purpose; ignored outside RAM).
    pub fn debug_flip_bit(&mut self, paddr: u64, bit: u8) {
        if let Some(byte) = self.ram.read(paddr, 1) {
            self.ram.write(paddr, 1, byte ^ (1 << (bit & 7)));
        }
    }
}
