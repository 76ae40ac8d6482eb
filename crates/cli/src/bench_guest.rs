//! What the guest benchmarks share: a booted guest driven through its console, and timing of
//! guest commands by the guest's own clock.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A booted guest: the process, its console input, and everything it printed.
pub(crate) struct Guest {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Guest {
    pub(crate) fn start(mut cmd: Command) -> Result<Guest> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            // Chunks, not lines: a shell prompt has no newline after it.
            let mut r = stdout;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = r.read(&mut buf) {
                sink.lock()
                    .expect("console buffer")
                    .extend_from_slice(&buf[..n]);
            }
        });
        Ok(Guest { child, stdin, out })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("console buffer")).into_owned()
    }

    /// Waits until `needle` appears after byte `from` of the console; its end offset.
    pub(crate) fn wait_for(&self, from: usize, needle: &str, limit: Duration) -> Result<usize> {
        let start = Instant::now();
        loop {
            let t = self.text();
            if let Some(i) = t.get(from..).and_then(|s| s.find(needle)) {
                return Ok(from + i + needle.len());
            }
            if start.elapsed() > limit {
                bail!(
                    "no `{needle}` on the console within {} s; last output:\n{}",
                    limit.as_secs(),
                    &t[t.len().saturating_sub(1500)..]
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a shell command on the console; returns what it printed.
    pub(crate) fn command(&mut self, cmd: &str, limit: Duration) -> Result<String> {
        let from = self.out.lock().expect("console buffer").len();
        writeln!(self.stdin, "{cmd}; echo BENCH-''STEP-DONE")?;
        let end = self.wait_for(from, "BENCH-STEP-DONE", limit)?;
        Ok(self.text()[from..end].to_string())
    }

    pub(crate) fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Types `cmd` (`poweroff`, or `poweroff -f` where init ignores the signal) and waits for
    /// the guest to end, killing it after 30 s.
    pub(crate) fn poweroff(mut self, cmd: &str) {
        let _ = writeln!(self.stdin, "{cmd}");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Wraps a guest command so that it prints how long it took, by the guest's own clock (Debian's
/// busybox dd prints no rate).
pub(crate) fn timed(cmd: &str) -> String {
    // /proc/uptime in centiseconds: busybox's date has no %N.
    let now = "$(cut -d' ' -f1 /proc/uptime | tr -d .)";
    format!("s={now}; {cmd}; e={now}; echo DD-CS $((e - s))")
}

/// Seconds from the `DD-CS n` line [`timed`] prints; a run shorter than the clock's 10 ms
/// resolution counts as 10 ms.
pub(crate) fn timed_seconds(text: &str) -> Option<f64> {
    let cs: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("DD-CS "))?
        .trim()
        .parse()
        .ok()?;
    Some(cs.max(1.0) / 100.0)
}
