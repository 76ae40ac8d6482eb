//! A 16550A UART, enough for Linux's 8250 driver and OpenSBI's uart8250. Transmission is
//! instantaneous: THR is always empty again by the next access.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Console bytes held for the guest beyond the 16-byte FIFO a real chip has: input arrives in
/// bursts (a pasted line) and must not be lost while the driver catches up.
pub const RX_CAPACITY: usize = 4096;

const IER_RDI: u8 = 1;
const IER_THRI: u8 = 2;
const LCR_DLAB: u8 = 0x80;
const MCR_LOOP: u8 = 0x10;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Uart16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifo_enabled: bool,
    /// A THR-empty interrupt is owed (cleared by reading IIR when it is reported, or by a write).
    thr_ipending: bool,
    rx: VecDeque<u8>,
}

impl Uart16550 {
    /// Room left for console input.
    pub fn input_space(&self) -> usize {
        RX_CAPACITY - self.rx.len()
    }

    /// Queues console input; returns how many bytes fit.
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.input_space());
        self.rx.extend(&bytes[..n]);
        n
    }

    pub fn irq(&self) -> bool {
        (self.ier & IER_RDI != 0 && !self.rx.is_empty())
            || (self.ier & IER_THRI != 0 && self.thr_ipending)
    }

    fn iir(&mut self) -> u8 {
        let fifo = if self.fifo_enabled { 0xc0 } else { 0 };
        let id = if self.ier & IER_RDI != 0 && !self.rx.is_empty() {
            0x04
        } else if self.ier & IER_THRI != 0 && self.thr_ipending {
            self.thr_ipending = false;
            0x02
        } else {
            0x01
        };
        fifo | id
    }

    fn msr(&self) -> u8 {
        if self.mcr & MCR_LOOP != 0 {
            let m = self.mcr;
            ((m & 2) << 3) | ((m & 1) << 5) | ((m & 4) << 4) | ((m & 8) << 4)
        } else {
            0xb0 // DCD, DSR, CTS: a terminal is always there
        }
    }

    pub fn read(&mut self, offset: u64, _size: u8) -> Option<u64> {
        let dlab = self.lcr & LCR_DLAB != 0;
        let v = match offset {
            0 if dlab => self.dll,
            0 => self.rx.pop_front().unwrap_or(0),
            1 if dlab => self.dlm,
            1 => self.ier,
            2 => self.iir(),
            3 => self.lcr,
            4 => self.mcr,
            5 => 0x60 | !self.rx.is_empty() as u8, // THRE and TEMT always; DR if data
            6 => self.msr(),
            7 => self.scr,
            _ => return None,
        };
        Some(v as u64)
    }

    pub fn write(&mut self, offset: u64, _size: u8, value: u64, out: &mut Vec<u8>) -> Option<()> {
        let v = value as u8;
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.dll = v,
            0 => {
                if self.mcr & MCR_LOOP != 0 {
                    if self.rx.len() < RX_CAPACITY {
                        self.rx.push_back(v);
                    }
                } else {
                    out.push(v);
                }
                self.thr_ipending = true;
            }
            1 if dlab => self.dlm = v,
            1 => {
                let newly = v & IER_THRI != 0 && self.ier & IER_THRI == 0;
                self.ier = v & 0x0f;
                if newly {
                    self.thr_ipending = true;
                }
            }
            2 => {
                self.fifo_enabled = v & 1 != 0;
                if v & 2 != 0 {
                    self.rx.clear();
                }
            }
            3 => self.lcr = v,
            4 => self.mcr = v & 0x1f,
            5 | 6 => {}
            7 => self.scr = v,
            _ => return None,
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_and_thre_interrupt() {
        let mut u = Uart16550::default();
        let mut out = vec![];
        u.write(0, 1, b'h' as u64, &mut out).unwrap();
        assert_eq!(out, b"h");
        assert!(!u.irq(), "no interrupt while THRI is off");
        u.write(1, 1, IER_THRI as u64, &mut out).unwrap();
        assert!(u.irq());
        assert_eq!(u.read(2, 1), Some(0x02));
        assert!(!u.irq(), "reading IIR acknowledged THRE");
        assert_eq!(u.read(2, 1), Some(0x01));
        assert_eq!(u.read(5, 1), Some(0x60));
    }

    #[test]
    fn receive_interrupt_and_bounded_queue() {
        let mut u = Uart16550::default();
        u.write(1, 1, IER_RDI as u64, &mut vec![]).unwrap();
        assert_eq!(u.push_input(b"ab"), 2);
        assert!(u.irq());
        assert_eq!(u.read(2, 1), Some(0x04));
        assert_eq!(u.read(5, 1), Some(0x61));
        assert_eq!(u.read(0, 1), Some(b'a' as u64));
        assert_eq!(u.read(0, 1), Some(b'b' as u64));
        assert!(!u.irq());
        assert_eq!(u.push_input(&vec![0; RX_CAPACITY + 10]), RX_CAPACITY);
    }

    #[test]
    fn divisor_latch_scratch_and_loopback() {
        let mut u = Uart16550::default();
        let mut out = vec![];
        u.write(3, 1, 0x83, &mut out).unwrap();
        u.write(0, 1, 0x0c, &mut out).unwrap();
        assert_eq!(u.read(0, 1), Some(0x0c));
        u.write(3, 1, 0x03, &mut out).unwrap();
        u.write(7, 1, 0x5a, &mut out).unwrap();
        assert_eq!(u.read(7, 1), Some(0x5a));
        u.write(4, 1, 0x1a, &mut out).unwrap();
        assert_eq!(u.read(6, 1).map(|v| v & 0xf0), Some(0x90));
        u.write(0, 1, b'x' as u64, &mut out).unwrap();
        assert!(out.is_empty(), "loopback does not transmit");
        assert_eq!(u.read(0, 1), Some(b'x' as u64));
        assert_eq!(u.read(9, 1), None);
    }
}
