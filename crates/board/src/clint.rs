//! SiFive CLINT: machine software interrupt (msip) and timer compare (mtimecmp); mtime itself
//! is the machine's virtual clock, passed in.

use serde::{Deserialize, Serialize};

const MSIP: u64 = 0x0;
const MTIMECMP: u64 = 0x4000;
const MTIME: u64 = 0xbff8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clint {
    pub msip: bool,
    pub mtimecmp: u64,
}

impl Default for Clint {
    fn default() -> Self {
        Clint {
            msip: false,
            mtimecmp: u64::MAX,
        }
    }
}

/// A write that changes something outside the CLINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClintWrite {
    None,
    /// The guest set mtime: the machine re-anchors its clock.
    SetMtime(u64),
}

/// Reads `size` bytes at byte offset `off` within a 64-bit register.
fn part(reg: u64, off: u64, size: u8) -> Option<u64> {
    match (off, size) {
        (0, 8) => Some(reg),
        (0, 4) => Some(reg & 0xffff_ffff),
        (4, 4) => Some(reg >> 32),
        _ => None,
    }
}

fn merge(reg: u64, off: u64, size: u8, value: u64) -> Option<u64> {
    match (off, size) {
        (0, 8) => Some(value),
        (0, 4) => Some((reg & !0xffff_ffff) | (value & 0xffff_ffff)),
        (4, 4) => Some((reg & 0xffff_ffff) | (value << 32)),
        _ => None,
    }
}

impl Clint {
    pub fn read(&self, offset: u64, size: u8, mtime: u64) -> Option<u64> {
        match offset {
            MSIP if size == 4 => Some(self.msip as u64),
            MTIMECMP..=0x4007 => part(self.mtimecmp, offset - MTIMECMP, size),
            MTIME..=0xbfff => part(mtime, offset - MTIME, size),
            _ => None,
        }
    }

    pub fn write(&mut self, offset: u64, size: u8, value: u64, mtime: u64) -> Option<ClintWrite> {
        match offset {
            MSIP if size == 4 => self.msip = value & 1 != 0,
            MTIMECMP..=0x4007 => {
                self.mtimecmp = merge(self.mtimecmp, offset - MTIMECMP, size, value)?
            }
            MTIME..=0xbfff => {
                return merge(mtime, offset - MTIME, size, value).map(ClintWrite::SetMtime);
            }
            _ => return None,
        }
        Some(ClintWrite::None)
    }

    pub fn mtip(&self, mtime: u64) -> bool {
        mtime >= self.mtimecmp
    }

    pub fn msip(&self) -> bool {
        self.msip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_and_timer() {
        let mut c = Clint::default();
        assert!(!c.mtip(1000));
        c.write(0x4000, 4, 0x1234, 0).unwrap();
        c.write(0x4004, 4, 0, 0).unwrap();
        assert_eq!(c.read(0x4000, 8, 0), Some(0x1234));
        assert!(c.mtip(0x1234) && !c.mtip(0x1233));
        assert_eq!(c.read(0xbffc, 4, 0x5_0000_0007), Some(5));
        assert_eq!(c.write(0xbff8, 8, 99, 0), Some(ClintWrite::SetMtime(99)));
        assert_eq!(c.read(0x4002, 4, 0), None);
        c.write(0, 4, 1, 0).unwrap();
        assert!(c.msip());
    }
}
