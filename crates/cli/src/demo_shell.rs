//! `ftvm demo --shell`: boots the default guest, types a few commands into its shell and powers
//! it off: the machine alone booting Debian's own kernel and firmware to a live userland.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ftvm_image::BOOT_MARKER;
use ftvm_machine::Machine;

use crate::guest::{self, GuestArgs};
use ftvm_host::{ClockMode, Host, RunEnd, Runner, Stop};

const COMMANDS: &[&str] = &[
    "uname -a",
    "cat /proc/cpuinfo",
    "free -m",
    "echo $((6 * 7)) > /tmp/answer && cat /tmp/answer",
    "poweroff -f",
];
/// Longest the demo waits for the guest before giving up (`FTVM_DEMO_TIMEOUT` seconds overrides).
fn demo_timeout() -> Duration {
    let secs = std::env::var("FTVM_DEMO_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(secs)
}

/// Types commands one by one, each when the shell shows its prompt.
struct Script {
    started: Instant,
    marker_at: Option<Duration>,
    seen: Vec<u8>,
    next: usize,
}

impl Host for Script {
    fn output(&mut self, bytes: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
        // Only the new bytes (and a marker's length before them) can complete the marker.
        let from = self.seen.len().saturating_sub(BOOT_MARKER.len());
        self.seen.extend_from_slice(bytes);
        if self.marker_at.is_none() {
            if let Some(at) = find(&self.seen[from..], BOOT_MARKER.as_bytes()) {
                self.marker_at = Some(self.started.elapsed());
                // Keep what followed the marker: the prompt may have come in the same chunk.
                self.seen.drain(..from + at + BOOT_MARKER.len());
            } else if self.seen.len() > 4096 {
                self.seen.drain(..self.seen.len() - BOOT_MARKER.len());
            }
        }
    }

    fn input(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, Stop> {
        if self.started.elapsed() > demo_timeout() {
            return Err(Stop);
        }
        // busybox's shell may follow its prompt with a cursor-position query (ESC [ 6 n).
        let prompt = self.marker_at.is_some()
            && (self.seen.ends_with(b"# ") || self.seen.ends_with(b"# \x1b[6n"));
        if prompt && self.next < COMMANDS.len() {
            self.seen.clear();
            let cmd = COMMANDS[self.next];
            self.next += 1;
            return Ok(Some(format!("{cmd}\n").into_bytes()));
        }
        std::thread::sleep(timeout.min(Duration::from_millis(50)));
        Ok(None)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn run() -> Result<()> {
    eprintln!("ftvm demo: booting Debian's riscv64 kernel on ftvm's deterministic RISC-V machine");
    let (cfg, _, io) = guest::resolve(
        &GuestArgs::default_guest(guest::DEFAULT_APPEND.into(), "opensbi"),
        "",
    )?;
    let mut runner = Runner::new(Machine::new(&cfg)?, ClockMode::Realtime);
    runner.io = io;
    let mut script = Script {
        started: Instant::now(),
        marker_at: None,
        seen: Vec::new(),
        next: 0,
    };
    let end = runner.run(&mut script);
    let total = script.started.elapsed();
    let icount = runner.machine.icount();
    eprintln!();
    eprintln!("ftvm demo: summary");
    if let Some(t) = script.marker_at {
        eprintln!("  boot to userland     {:.2} s", t.as_secs_f64());
    }
    eprintln!("  whole run            {:.2} s", total.as_secs_f64());
    eprintln!("  guest instructions   {icount}");
    eprintln!(
        "  speed                {:.0} million instructions per second",
        icount as f64 / total.as_secs_f64() / 1e6
    );
    eprintln!("  state hash           {}", runner.machine.state_hash());
    match end {
        RunEnd::PowerOff(0) if script.next == COMMANDS.len() => {
            eprintln!("  result               guest powered off cleanly");
            Ok(())
        }
        other => bail!(
            "the demo guest did not finish as expected: {other:?}\n{}\n{}",
            runner.machine.describe_registers(),
            runner.machine.describe_devices()
        ),
    }
}
