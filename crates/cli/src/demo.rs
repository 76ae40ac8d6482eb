//! `ftvm demo`: boots the default guest, types a few commands into its shell and powers it off.
//!
//! Until fault tolerance lands this is the README's main job: it shows the machine booting
//! Debian's own kernel and firmware and a live, interactive userland.

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
/// Longest the demo waits for the guest before giving up.
const TIMEOUT: Duration = Duration::from_secs(600);

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
        self.seen.extend_from_slice(bytes);
        if self.marker_at.is_none() && contains(&self.seen, BOOT_MARKER.as_bytes()) {
            self.marker_at = Some(self.started.elapsed());
            self.seen.clear();
        }
    }

    fn input(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, Stop> {
        if self.started.elapsed() > TIMEOUT {
            return Err(Stop);
        }
        let prompt = self.marker_at.is_some() && self.seen.ends_with(b"# ");
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

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub fn run() -> Result<()> {
    eprintln!("ftvm demo: booting Debian's riscv64 kernel on ftvm's deterministic RISC-V machine");
    let cfg = guest::config(
        &GuestArgs {
            kernel: None,
            initrd: None,
            append: guest::DEFAULT_APPEND.into(),
            firmware: "opensbi".into(),
            memory: 256 << 20,
        },
        "",
    )?;
    let mut runner = Runner::new(Machine::new(&cfg)?, ClockMode::Realtime);
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
        other => bail!("the demo guest did not finish as expected: {other:?}"),
    }
}
