//! The interactive console: the terminal in raw mode, keystrokes to the guest, Ctrl-A x to quit.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use nix::sys::termios::{self, SetArg, Termios};

use ftvm_host::{Host, Stop};

/// Ctrl-A, the escape key (as in QEMU): Ctrl-A x quits, Ctrl-A Ctrl-A sends one Ctrl-A.
const ESCAPE: u8 = 0x01;

/// Puts the terminal in raw mode while alive; restores it on drop (also on panic unwinding).
pub struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(orig) = &saved {
            let mut raw = orig.clone();
            termios::cfmakeraw(&mut raw);
            // Keep output post-processing so the guest's "\n" still returns the carriage.
            raw.output_flags = orig.output_flags;
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, orig);
        }
    }
}

enum Key {
    Bytes(Vec<u8>),
    Quit,
}

/// Console on the process's stdin/stdout.
pub struct Terminal {
    keys: Receiver<Key>,
    stdin_open: bool,
}

impl Terminal {
    pub fn new() -> Terminal {
        let (tx, keys) = channel();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 256];
            let mut escaped = false;
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut out = Vec::with_capacity(n);
                for &b in &buf[..n] {
                    if escaped {
                        escaped = false;
                        match b {
                            b'x' | b'X' => {
                                let _ = tx.send(Key::Bytes(out));
                                let _ = tx.send(Key::Quit);
                                return;
                            }
                            ESCAPE => out.push(ESCAPE),
                            _ => {}
                        }
                    } else if b == ESCAPE {
                        escaped = true;
                    } else {
                        out.push(b);
                    }
                }
                if !out.is_empty() && tx.send(Key::Bytes(out)).is_err() {
                    return;
                }
            }
        });
        Terminal {
            keys,
            stdin_open: true,
        }
    }
}

impl Host for Terminal {
    fn output(&mut self, bytes: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }

    fn input(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, Stop> {
        if !self.stdin_open {
            std::thread::sleep(timeout);
            return Ok(None);
        }
        match self.keys.recv_timeout(timeout) {
            Ok(Key::Bytes(b)) => Ok(Some(b)),
            Ok(Key::Quit) => Err(Stop),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            // stdin closed (e.g. `</dev/null`): the guest keeps running without input.
            Err(RecvTimeoutError::Disconnected) => {
                self.stdin_open = false;
                Ok(None)
            }
        }
    }
}

/// A host that ends the run once the console has shown a given text (`--until-console`).
pub struct UntilConsole<H: Host> {
    inner: H,
    text: Option<Vec<u8>>,
    tail: Vec<u8>,
    seen: bool,
}

impl<H: Host> UntilConsole<H> {
    pub fn new(inner: H, text: Option<String>) -> Self {
        UntilConsole {
            inner,
            text: text.map(String::into_bytes),
            tail: Vec::new(),
            seen: false,
        }
    }

    /// Whether the text was seen (and so ended the run).
    pub fn seen(&self) -> bool {
        self.seen
    }
}

impl<H: Host> Host for UntilConsole<H> {
    fn output(&mut self, bytes: &[u8]) {
        self.inner.output(bytes);
        if let Some(t) = &self.text
            && !self.seen
        {
            self.tail.extend_from_slice(bytes);
            self.seen = self.tail.windows(t.len()).any(|w| w == t.as_slice());
            // Only the last len-1 bytes can still begin a match.
            let keep = t.len().saturating_sub(1);
            if self.tail.len() > keep {
                self.tail.drain(..self.tail.len() - keep);
            }
        }
    }

    fn input(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, Stop> {
        if self.seen {
            return Err(Stop);
        }
        self.inner.input(timeout)
    }
}
