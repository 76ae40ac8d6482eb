//! Guest images: fetched from Debian's riscv64 archive, built and cached.
//!
//! Job: produce the default guest (Debian's kernel `Image`, Debian's OpenSBI `fw_dynamic.bin`,
//! and an initramfs built here) in the user's cache directory, through the host's own Debian
//! mirror and a private apt root.
//!
//! Invariants: no host name is written anywhere (the mirror is read from the host's apt
//! sources); cached files are checked against the sha256 in the manifest on every use; nothing
//! is published to the cache until complete (temp file, then rename); concurrent ftvm processes
//! serialise on a lock file; the .debs are kept (with their sha256) so a damaged guest is
//! rebuilt without the network, the unpacked package trees never are; the initramfs build is
//! deterministic (same packages, same bytes).

mod apt;
mod cpio;
mod guest;
mod initramfs;
mod manifest;
mod progress;
mod redis;
mod sources;

use std::ffi::OsString;
use std::path::PathBuf;

use thiserror::Error;

pub use cpio::CpioWriter;
pub use guest::ensure_default_guest;
pub use initramfs::{MODULES, build_initramfs};
pub use redis::{
    REDIS_APPEND, REDIS_GUEST_IP, REDIS_MARKER, REDIS_PORT, RedisGuest, copy_root_disk,
    copy_sparse, ensure_redis_guest,
};
pub use sources::{host_mirror, mirror_from_deb822, mirror_from_list};

/// What /init prints once the guest's userland is up: tests and benchmarks wait for it.
pub const BOOT_MARKER: &str = "FTVM-GUEST-READY";

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot find the Debian mirror: {0}")]
    Mirror(String),
    #[error("apt: {0}")]
    Apt(String),
    #[error("{0} failed: {1}")]
    Tool(String, String),
    #[error("building the guest: {0}")]
    Build(String),
}

impl ImageError {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ImageError {
        ImageError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The default guest's files, all in the cache.
#[derive(Debug, Clone)]
pub struct GuestFiles {
    /// Linux `Image` (uncompressed, with the RISC-V header).
    pub kernel: PathBuf,
    /// gzip cpio initramfs with busybox, modules and /init.
    pub initrd: PathBuf,
    /// OpenSBI `fw_dynamic.bin`.
    pub firmware: PathBuf,
    /// e.g. "6.12.107+deb13-riscv64".
    pub kernel_version: String,
}

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub cache_dir: PathBuf,
    /// Show progress on stderr.
    pub progress: bool,
    /// Fetch and rebuild even if the cache is complete.
    pub force: bool,
}

/// `$FTVM_CACHE_DIR`, else `$XDG_CACHE_HOME/ftvm`, else `~/.cache/ftvm`.
pub fn cache_dir() -> PathBuf {
    cache_dir_from(|k| std::env::var_os(k))
}

fn cache_dir_from(env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    // Empty values count as unset, as the XDG spec says.
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var("FTVM_CACHE_DIR") {
        return d;
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return d.join("ftvm");
    }
    var("HOME")
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join(".cache/ftvm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_precedence() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let all = &[
            ("FTVM_CACHE_DIR", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(cache_dir_from(env(all)), PathBuf::from("/c"));
        let xdg = &[
            ("FTVM_CACHE_DIR", ""),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(cache_dir_from(env(xdg)), PathBuf::from("/x/ftvm"));
        let home = &[("XDG_CACHE_HOME", ""), ("HOME", "/h")];
        assert_eq!(cache_dir_from(env(home)), PathBuf::from("/h/.cache/ftvm"));
    }
}
