//! Guest time as a pure function of the instruction count.
//!
//! `mtime = anchor_mtime + (icount - anchor_icount) * ticks_per_insn`, with the rate in 32.32 fixed
//! point. The host moves the anchor (and may change the rate) only through input events applied at
//! an exact instruction count, so replay reproduces every read of `time` without logging it.

use serde::{Deserialize, Serialize};

/// The timebase of QEMU's virt board, which Linux reads from the device tree.
pub const TIMEBASE_HZ: u64 = 10_000_000;

/// The nominal guest speed the clock assumes between anchors: 0.01 timer tick per instruction,
/// i.e. a billion instructions per guest second. It is deliberately above what the interpreter
/// achieves, so between anchors guest time runs slower than real time and the host's anchors
/// (which only move time forward) keep it on real time; a guest clock that ran ahead could not
/// be pulled back, and every guest sleep would wait for real time to catch up.
pub const DEFAULT_TICKS_PER_INSN_Q32: u64 = (1u64 << 32) / 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualClock {
    pub anchor_icount: u64,
    pub anchor_mtime: u64,
    /// Timer ticks per instruction, 32.32 fixed point. Never zero.
    pub ticks_per_insn_q32: u64,
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self {
            anchor_icount: 0,
            anchor_mtime: 0,
            ticks_per_insn_q32: DEFAULT_TICKS_PER_INSN_Q32,
        }
    }
}

impl VirtualClock {
    /// The timer value at instruction count `icount` (which must not be before the anchor).
    #[inline]
    pub fn mtime_at(&self, icount: u64) -> u64 {
        let delta = icount.saturating_sub(self.anchor_icount) as u128;
        self.anchor_mtime
            .wrapping_add(((delta * self.ticks_per_insn_q32 as u128) >> 32) as u64)
    }

    /// The first instruction count at which the timer reaches `mtime` (the current anchor count if
    /// it already has).
    pub fn icount_when(&self, mtime: u64) -> u64 {
        if mtime <= self.anchor_mtime {
            return self.anchor_icount;
        }
        let ticks = (mtime - self.anchor_mtime) as u128;
        let rate = self.ticks_per_insn_q32.max(1) as u128;
        let insns = (ticks << 32).div_ceil(rate);
        self.anchor_icount
            .saturating_add(insns.min(u64::MAX as u128) as u64)
    }

    /// Re-anchors the clock at `icount` so that it reads `mtime` there. Time never goes backwards:
    /// an anchor earlier than the current reading is raised to it.
    pub fn anchor(&mut self, icount: u64, mtime: u64) {
        let now = self.mtime_at(icount);
        self.anchor_icount = icount;
        self.anchor_mtime = mtime.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_and_reading_agree() {
        let c = VirtualClock {
            anchor_icount: 1000,
            anchor_mtime: 50,
            ..Default::default()
        };
        for target in [50u64, 51, 77, 1_000_000] {
            let at = c.icount_when(target);
            assert!(c.mtime_at(at) >= target);
            assert!(at == c.anchor_icount || c.mtime_at(at - 1) < target);
        }
    }

    #[test]
    fn anchor_never_goes_back() {
        let mut c = VirtualClock::default();
        let before = c.mtime_at(1_000_000);
        c.anchor(1_000_000, 3);
        assert_eq!(c.mtime_at(1_000_000), before);
    }
}
