//! Helpers shared by the end-to-end tests: the real binary, the cached guest, scratch paths.
// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub const MARKER: &str = "FTVM-GUEST-READY";

/// The `ftvm` binary under test, with no input unless a test gives it some.
pub fn ftvm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ftvm"));
    c.stdin(Stdio::null());
    c
}

/// Fetches the default guest once for the whole test binary.
pub fn guest_ready() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let out = ftvm()
            .args(["image", "fetch"])
            .output()
            .expect("run ftvm image fetch");
        assert!(
            out.status.success(),
            "ftvm image fetch failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

pub fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// A TCP port free on the host right now (for port forwards).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A guest on the console: the binary with stdin piped, stdout collected by a thread.
pub struct Session {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stdin: Option<std::process::ChildStdin>,
}

impl Session {
    pub fn start(args: &[&str]) -> Session {
        use std::io::Read;
        let mut child = Command::new(env!("CARGO_BIN_EXE_ftvm"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ftvm");
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().expect("piped");
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let stdin = child.stdin.take();
        Session { child, out, stdin }
    }

    pub fn output(&self) -> String {
        text(&self.out.lock().unwrap())
    }

    /// Waits until the console shows `needle` after byte `from`; panics with the console after
    /// `secs` seconds. Returns the offset just past it.
    pub fn wait_for_after(&self, from: usize, needle: &str, secs: u64) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let out = self.output();
            if let Some(i) = out.get(from..).and_then(|s| s.find(needle)) {
                return from + i + needle.len();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} on the console within {secs} s; console:\n{out}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Runs a shell command in the guest and returns what it printed up to `done`.
    pub fn command(&mut self, cmd: &str, done: &str, secs: u64) -> String {
        let from = self.output().len();
        self.send(&format!("{cmd}; echo {done}"));
        // The echo of the typed line contains `done` too: wait for it on a line of its own.
        let end = self.wait_for_after(from, &format!("\n{done}"), secs);
        self.output()[from..end].to_string()
    }

    /// Waits for the process to end; its exit status.
    pub fn wait(mut self, secs: u64) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "ftvm did not exit within {secs} s; console:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
