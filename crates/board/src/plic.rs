//! SiFive PLIC as on QEMU's virt board: level-triggered sources, per-context enables,
//! thresholds and claim/complete.

use serde::{Deserialize, Serialize};

const PENDING: u64 = 0x1000;
const ENABLE: u64 = 0x2000;
const ENABLE_STRIDE: u64 = 0x80;
const CONTEXT: u64 = 0x20_0000;
const CONTEXT_STRIDE: u64 = 0x1000;
/// Priorities are 3 bits wide, as on QEMU's virt.
const PRIORITY_MASK: u32 = 7;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plic {
    sources: u32,
    priority: Vec<u32>,
    level: Vec<bool>,
    pending: Vec<bool>,
    /// Claimed and not yet completed: the gateway holds further requests.
    in_service: Vec<bool>,
    /// Per context, one bit per source.
    enable: Vec<Vec<u32>>,
    threshold: Vec<u32>,
}

impl Plic {
    /// A PLIC with source ids 1..sources (id 0 does not exist) and `contexts` contexts.
    pub fn new(sources: u32, contexts: u32) -> Plic {
        let n = sources as usize;
        let words = n.div_ceil(32);
        Plic {
            sources,
            priority: vec![0; n],
            level: vec![false; n],
            pending: vec![false; n],
            in_service: vec![false; n],
            enable: vec![vec![0; words]; contexts as usize],
            threshold: vec![0; contexts as usize],
        }
    }

    /// Drives a level-triggered source.
    pub fn set_level(&mut self, source: u32, high: bool) {
        let s = source as usize;
        if s == 0 || s >= self.level.len() {
            return;
        }
        self.level[s] = high;
        if high && !self.in_service[s] {
            self.pending[s] = true;
        }
    }

    /// The source a claim on `ctx` would return (0: none).
    fn best(&self, ctx: usize) -> usize {
        // Only the enabled sources, by their bits: this runs after every MMIO access, and a
        // scan of all sources cost a polling guest half its time.
        let mut best = 0;
        let mut best_prio = self.threshold[ctx];
        for (w, &word) in self.enable[ctx].iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let s = w * 32 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if s == 0 || s >= self.sources as usize {
                    continue;
                }
                if self.pending[s] && self.priority[s] > best_prio {
                    best = s;
                    best_prio = self.priority[s];
                }
            }
        }
        best
    }

    /// Whether context `ctx` has an interrupt to claim.
    pub fn irq(&self, ctx: usize) -> bool {
        ctx < self.threshold.len() && self.best(ctx) != 0
    }

    fn context_of(&self, offset: u64, base: u64, stride: u64) -> Option<(usize, u64)> {
        let rel = offset - base;
        let ctx = (rel / stride) as usize;
        (ctx < self.threshold.len()).then_some((ctx, rel % stride))
    }

    pub fn read(&mut self, offset: u64, size: u8) -> Option<u64> {
        if size != 4 || !offset.is_multiple_of(4) {
            return None;
        }
        let words = self.enable.first().map_or(0, Vec::len) as u64;
        let v = match offset {
            o if o < PENDING => *self.priority.get((o / 4) as usize)?,
            o if o < PENDING + 4 * words => {
                let w = ((o - PENDING) / 4) as usize;
                (0..32)
                    .filter(|b| self.pending.get(w * 32 + b).copied().unwrap_or(false))
                    .fold(0, |acc, b| acc | 1 << b)
            }
            o if (ENABLE..CONTEXT).contains(&o) => {
                let (ctx, rel) = self.context_of(o, ENABLE, ENABLE_STRIDE)?;
                *self.enable[ctx].get((rel / 4) as usize)?
            }
            o if o >= CONTEXT => {
                let (ctx, rel) = self.context_of(o, CONTEXT, CONTEXT_STRIDE)?;
                match rel {
                    0 => self.threshold[ctx],
                    4 => {
                        let s = self.best(ctx);
                        if s != 0 {
                            self.pending[s] = false;
                            self.in_service[s] = true;
                        }
                        s as u32
                    }
                    _ => 0,
                }
            }
            _ => 0,
        };
        Some(v as u64)
    }

    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Option<()> {
        if size != 4 || !offset.is_multiple_of(4) {
            return None;
        }
        let v = value as u32;
        match offset {
            o if o < PENDING => {
                if let Some(p) = self.priority.get_mut((o / 4) as usize)
                    && o != 0
                {
                    *p = v & PRIORITY_MASK;
                }
            }
            o if (ENABLE..CONTEXT).contains(&o) => {
                let (ctx, rel) = self.context_of(o, ENABLE, ENABLE_STRIDE)?;
                let w = (rel / 4) as usize;
                if let Some(e) = self.enable[ctx].get_mut(w) {
                    // Source 0 does not exist.
                    *e = if w == 0 { v & !1 } else { v };
                }
            }
            o if o >= CONTEXT => {
                let (ctx, rel) = self.context_of(o, CONTEXT, CONTEXT_STRIDE)?;
                match rel {
                    0 => self.threshold[ctx] = v & PRIORITY_MASK,
                    4 => {
                        let s = v as usize;
                        if s != 0 && s < self.in_service.len() && self.in_service[s] {
                            self.in_service[s] = false;
                            if self.level[s] {
                                self.pending[s] = true;
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_complete_threshold_priority() {
        let mut p = Plic::new(96, 2);
        p.write(4 * 10, 4, 1).unwrap();
        p.write(4 * 3, 4, 5).unwrap();
        p.write(ENABLE + ENABLE_STRIDE, 4, (1 << 10) | (1 << 3))
            .unwrap();
        p.set_level(10, true);
        p.set_level(3, true);
        assert!(!p.irq(0) && p.irq(1));
        assert_eq!(
            p.read(CONTEXT + CONTEXT_STRIDE + 4, 4),
            Some(3),
            "highest priority first"
        );
        assert_eq!(p.read(CONTEXT + CONTEXT_STRIDE + 4, 4), Some(10));
        assert_eq!(p.read(CONTEXT + CONTEXT_STRIDE + 4, 4), Some(0));
        // Level still high: pending again after complete.
        p.write(CONTEXT + CONTEXT_STRIDE + 4, 4, 10).unwrap();
        assert!(p.irq(1));
        p.write(CONTEXT + CONTEXT_STRIDE, 4, 1).unwrap();
        assert!(!p.irq(1), "priority 1 does not exceed threshold 1");
        assert_eq!(p.read(0x1000, 4), Some(1 << 10));
        assert_eq!(p.read(0x3, 4), None);
        assert_eq!(p.read(CONTEXT + 5 * CONTEXT_STRIDE, 4), None);
    }
}
