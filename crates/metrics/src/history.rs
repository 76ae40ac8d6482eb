//! The last minutes of a side's figures, one sample a second, for the page's plots and the
//! terminal view: rates (MIPS, log bandwidth) come from the difference of two samples, so
//! they show what happens now rather than the mean since the start.

use std::collections::VecDeque;
use std::sync::Mutex;

use ftvm_ft::Status;
use serde::Serialize;

/// Samples kept: ten minutes at one a second.
pub const KEEP: usize = 600;

/// One moment of a side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Unix ms.
    pub t_ms: u64,
    pub icount: u64,
    /// Guest instructions per µs since the previous sample.
    pub mips: f64,
    pub lag_ms: f64,
    /// Log bandwidth since the previous sample.
    pub log_mbit_s: f64,
    /// The Output Rule's added latency (p50, p99) as the side last published it.
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    pub held: usize,
    pub throttle_pct: f64,
    log_bytes: u64,
}

impl Sample {
    /// The sample of `s` at `t_ms`, its rates against `before`.
    pub fn of(s: &Status, t_ms: u64, before: Option<&Sample>) -> Sample {
        let mut sample = Sample {
            t_ms,
            icount: s.icount,
            lag_ms: s.lag_ms,
            delay_p50_ms: s.output_delay_ms[0],
            delay_p99_ms: s.output_delay_ms[1],
            held: s.held_outputs,
            throttle_pct: s.throttle_pct,
            log_bytes: s.log_bytes,
            ..Sample::default()
        };
        // A side that had not run yet (a backup before its first replayed instruction, a
        // spare) jumps to where its machine starts: that is no rate either.
        if let Some(b) = before.filter(|b| t_ms > b.t_ms && b.icount > 0) {
            let us = (t_ms - b.t_ms) as f64 * 1e3;
            // A side that starts again (a new run after a move) counts from zero: no rate.
            sample.mips = s.icount.saturating_sub(b.icount) as f64 / us;
            sample.log_mbit_s = s.log_bytes.saturating_sub(b.log_bytes) as f64 * 8.0 / us;
        }
        sample
    }
}

/// A bounded ring of samples.
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Adds the figures of `s` at `t_ms`; returns the sample.
    pub fn add(&self, s: &Status, t_ms: u64) -> Sample {
        let mut ring = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let sample = Sample::of(s, t_ms, ring.back());
        if ring.len() == KEEP {
            ring.pop_front();
        }
        ring.push_back(sample);
        sample
    }

    pub fn samples(&self) -> Vec<Sample> {
        let ring = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().copied().collect()
    }

    pub fn latest(&self) -> Option<Sample> {
        let ring = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        ring.back().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_two_samples_and_the_ring_keeps_ten_minutes() {
        let h = History::new();
        let mut s = Status::default();
        for i in 0..(KEEP as u64 + 5) {
            s.icount = i * 50_000_000;
            s.log_bytes = i * 125_000;
            h.add(&s, i * 1000);
        }
        let all = h.samples();
        assert_eq!(all.len(), KEEP);
        let last = h.latest().unwrap();
        assert!((last.mips - 50.0).abs() < 1e-9, "{last:?}");
        assert!((last.log_mbit_s - 1.0).abs() < 1e-9, "{last:?}");
        // The first sample has nothing to compare with.
        let first = History::new().add(&s, 0);
        assert_eq!(first.mips, 0.0);
    }
}
