//! Helpers shared by the end-to-end tests: the real binary, the cached guest, scratch paths.

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

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
