//! `ftvm ctl status --watch`: the status page's figures redrawn in the terminal each second,
//! read from the sides' control sockets (no `--metrics` needed): role, generation, MIPS,
//! execution lag, log bandwidth and the Output Rule delay, with the last minute's lag and
//! bandwidth as sparklines.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use ftvm_ft::{CloneStatus, Status};
use ftvm_metrics::history::Sample;

/// Samples a sparkline shows: a minute at one a second.
const SPARK: usize = 60;

/// One side as the view follows it.
struct Watched {
    socket: PathBuf,
    last: Option<Sample>,
    lag: VecDeque<f64>,
    bandwidth: VecDeque<f64>,
}

/// Redraws every `every` until interrupted, or `refreshes` times if given.
pub fn watch(sockets: &[PathBuf], every: Duration, refreshes: Option<u64>) -> Result<i32> {
    let mut sides: Vec<Watched> = sockets
        .iter()
        .map(|s| Watched {
            socket: s.clone(),
            last: None,
            lag: VecDeque::new(),
            bandwidth: VecDeque::new(),
        })
        .collect();
    let mut drawn = 0u64;
    loop {
        let mut screen = String::from("\x1b[H\x1b[2J");
        screen += &format!(
            "ftvm ctl status --watch  (every {:.1} s; Ctrl-C stops)\n\n",
            every.as_secs_f64()
        );
        screen += &format!(
            "{:<32} {:>4} {:>8} {:>9} {:>10} {:>5} {:>17}  lag, last minute / log bandwidth\n",
            "role", "gen", "MIPS", "lag ms", "log Mbit/s", "held", "delay p50/p99 ms"
        );
        for side in &mut sides {
            screen += &side.line();
        }
        print!("{screen}");
        std::io::stdout().flush()?;
        drawn += 1;
        if refreshes.is_some_and(|n| drawn >= n) {
            return Ok(0);
        }
        std::thread::sleep(every);
    }
}

impl Watched {
    fn line(&mut self) -> String {
        let status = ftvm_ft::control::request(&self.socket, "status")
            .ok()
            .and_then(|reply| serde_json::from_str::<Status>(&reply).ok());
        let Some(s) = status else {
            return format!(
                "{:<32} (no answer from {})\n",
                "unreachable",
                self.socket.display()
            );
        };
        let sample = Sample::of(&s, ftvm_metrics::unix_ms(), self.last.as_ref());
        self.last = Some(sample);
        push(&mut self.lag, s.lag_ms);
        push(&mut self.bandwidth, sample.log_mbit_s);
        let mut line = format!(
            "{:<32} {:>4} {:>8.1} {:>9.1} {:>10.3} {:>5} {:>8.2}/{:<8.2}  {} / {}\n",
            s.role.to_string(),
            s.generation,
            sample.mips,
            s.lag_ms,
            sample.log_mbit_s,
            s.held_outputs,
            s.output_delay_ms[0],
            s.output_delay_ms[1],
            sparkline(&self.lag),
            sparkline(&self.bandwidth)
        );
        if s.clone != CloneStatus::None {
            line += &format!("{:<32} clone {}\n", "", s.clone);
        }
        line
    }
}

fn push(ring: &mut VecDeque<f64>, v: f64) {
    if ring.len() == SPARK {
        ring.pop_front();
    }
    ring.push_back(v);
}

/// `values` as block characters scaled to their maximum.
fn sparkline(values: &VecDeque<f64>) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().fold(0.0, f64::max);
    values
        .iter()
        .map(|&v| {
            let i = if max > 0.0 {
                (v / max * 7.0).round() as usize
            } else {
                0
            };
            BARS[i.min(7)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_scales_to_its_maximum() {
        let v: VecDeque<f64> = [0.0, 1.0, 2.0, 4.0].into_iter().collect();
        assert_eq!(sparkline(&v), "▁▃▅█");
        assert_eq!(sparkline(&[0.0, 0.0].into_iter().collect()), "▁▁");
    }
}
