//! Guest images: fetched from Debian's riscv64 archive, built and cached.
//!
//! Job: produce the default guest (Debian's kernel `Image`, Debian's OpenSBI `fw_dynamic.bin`,
//! and an initramfs built here) in the user's cache directory, through the host's own Debian
//! mirror and a private apt root.
//!
//! Invariants: no host name is written anywhere (the mirror is read from the host's apt
//! sources); cached files are checked against the sha256 in the manifest on every use; nothing
//! is published to the cache until complete (temp file, then rename); concurrent ftvm processes
//! serialise on a lock file.

mod apt;
mod cpio;
mod initramfs;
mod progress;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use apt::{host_mirror, mirror_from_deb822, mirror_from_list};
pub use cpio::CpioWriter;
pub use initramfs::{MODULES, build_initramfs};

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
    if let Some(d) = std::env::var_os("FTVM_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("ftvm");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/ftvm")
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Manifest {
    kernel_version: String,
    suite: String,
    /// File name -> sha256 (hex).
    files: BTreeMap<String, String>,
}

const FILES: [&str; 3] = ["Image", "initrd.cpio.gz", "fw_dynamic.bin"];

fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let bytes = std::fs::read(path).map_err(|e| ImageError::io(path, e))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| ImageError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ImageError::io(path, e))
}

/// The cached guest if it is complete and every file matches the manifest.
fn cached(guest_root: &Path) -> Result<Option<GuestFiles>, String> {
    let current = guest_root.join("current");
    let Ok(version) = std::fs::read_to_string(&current) else {
        return Ok(None);
    };
    let dir = guest_root.join(version.trim());
    let manifest: Manifest = match std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(m) => m,
        None => return Err(format!("{} has no readable manifest", dir.display())),
    };
    for name in FILES {
        let path = dir.join(name);
        match (sha256_file(&path), manifest.files.get(name)) {
            (Ok(sum), Some(want)) if &sum == want => {}
            _ => {
                return Err(format!(
                    "{} is missing or does not match its checksum",
                    path.display()
                ));
            }
        }
    }
    Ok(Some(GuestFiles {
        kernel: dir.join("Image"),
        initrd: dir.join("initrd.cpio.gz"),
        firmware: dir.join("fw_dynamic.bin"),
        kernel_version: manifest.kernel_version,
    }))
}

/// Fetches what is missing, verifies what is cached, and returns the default guest.
pub fn ensure_default_guest(opts: &FetchOptions) -> Result<GuestFiles, ImageError> {
    let guest_root = opts.cache_dir.join("guest");
    std::fs::create_dir_all(&guest_root).map_err(|e| ImageError::io(&guest_root, e))?;
    // One fetch at a time per cache, across processes.
    let lock_path = opts.cache_dir.join("lock");
    let lock_file = std::fs::File::create(&lock_path).map_err(|e| ImageError::io(&lock_path, e))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| ImageError::io(&lock_path, e.into()))?;

    let mut p = progress::Progress::new(opts.progress);
    if !opts.force {
        match cached(&guest_root) {
            Ok(Some(files)) => return Ok(files),
            Ok(None) => p.note("ftvm: preparing the default guest (first run: Debian riscv64 kernel, busybox, OpenSBI)"),
            Err(why) => p.note(&format!("ftvm: the cached guest is damaged ({why}); fetching it again")),
        }
    }

    let mirror = host_mirror()?;
    let apt = apt::AptRoot::new(&opts.cache_dir.join("apt-riscv64"))?;
    let suite = p.step("updating the riscv64 package index", || apt.update(&mirror))?;
    let kernel_pkg = apt.kernel_package()?;
    let version = kernel_pkg.trim_start_matches("linux-image-").to_string();
    let debs = p.step(
        &format!("downloading {kernel_pkg}, busybox-static, opensbi"),
        || apt.download(&[&kernel_pkg, "busybox-static", "opensbi"]),
    )?;

    let work = opts.cache_dir.join("unpack");
    let _ = std::fs::remove_dir_all(&work);
    p.step("unpacking", || {
        debs.iter().try_for_each(|d| apt::extract(d, &work))
    })?;

    let dir = guest_root.join(&version);
    std::fs::create_dir_all(&dir).map_err(|e| ImageError::io(&dir, e))?;
    let find = |candidates: &[&str]| -> Result<PathBuf, ImageError> {
        candidates
            .iter()
            .map(|c| work.join(c))
            .find(|p| p.exists())
            .ok_or_else(|| {
                ImageError::Build(format!("none of {candidates:?} in the unpacked packages"))
            })
    };
    let kernel = find(&[
        &format!("boot/vmlinux-{version}"),
        &format!("boot/vmlinuz-{version}"),
    ])?;
    let firmware = find(&[
        "usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin",
        "usr/share/opensbi/lp64/generic/firmware/fw_dynamic.bin",
    ])?;
    let busybox = find(&["usr/bin/busybox", "bin/busybox"])?;
    let modules = find(&[
        &format!("usr/lib/modules/{version}/kernel"),
        &format!("lib/modules/{version}/kernel"),
    ])?;

    let initrd = p.step("building the initramfs", || {
        let bb = std::fs::read(&busybox).map_err(|e| ImageError::io(&busybox, e))?;
        build_initramfs(&bb, &modules)
    })?;
    let mut files = BTreeMap::new();
    for (name, bytes) in [
        (
            "Image",
            std::fs::read(&kernel).map_err(|e| ImageError::io(&kernel, e))?,
        ),
        (
            "fw_dynamic.bin",
            std::fs::read(&firmware).map_err(|e| ImageError::io(&firmware, e))?,
        ),
        ("initrd.cpio.gz", initrd),
    ] {
        write_atomic(&dir.join(name), &bytes)?;
        files.insert(
            name.to_string(),
            Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        );
    }
    let manifest = Manifest {
        kernel_version: version.clone(),
        suite,
        files,
    };
    write_atomic(
        &dir.join("manifest.json"),
        &serde_json::to_vec_pretty(&manifest).expect("serialisable"),
    )?;
    write_atomic(&guest_root.join("current"), version.as_bytes())?;
    let _ = std::fs::remove_dir_all(&work);
    p.note(&format!("ftvm: guest ready in {}", dir.display()));
    cached(&guest_root)
        .map_err(ImageError::Build)?
        .ok_or_else(|| ImageError::Build("the guest just built is not in the cache".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_cached_file_is_detected() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("v1");
        std::fs::create_dir_all(&dir).unwrap();
        let mut files = BTreeMap::new();
        for name in FILES {
            std::fs::write(dir.join(name), name).unwrap();
            files.insert(name.to_string(), sha256_file(&dir.join(name)).unwrap());
        }
        let m = Manifest {
            kernel_version: "v1".into(),
            suite: "stable".into(),
            files,
        };
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        std::fs::write(root.path().join("current"), "v1").unwrap();
        assert!(cached(root.path()).unwrap().is_some());
        std::fs::write(dir.join("Image"), "changed").unwrap();
        assert!(cached(root.path()).is_err());
    }
}
