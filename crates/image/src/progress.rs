//! Progress on stderr: a spinner per step on a terminal, one line per step otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    enabled: bool,
    tty: bool,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub fn note(&mut self, msg: &str) {
        if self.enabled {
            eprintln!("{msg}");
        }
    }

    /// Runs one step, showing what it does and how long it took.
    pub fn step<T, E>(&mut self, what: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        if !self.enabled {
            return f();
        }
        let started = Instant::now();
        let bar = self.tty.then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("  {spinner} {msg} ({elapsed})")
                    .expect("valid template"),
            );
            b.set_message(what.to_string());
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        if bar.is_none() {
            eprintln!("  {what} ...");
        }
        let r = f();
        let status = if r.is_ok() { "done" } else { "FAILED" };
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        eprintln!(
            "  {what}: {status} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        r
    }
}
