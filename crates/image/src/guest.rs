//! The default guest in the cache: verify it, or fetch the packages and build it.
//!
//! Layout under the cache dir: `apt-riscv64/` (private apt root; its `archives/` keeps the
//! .debs), `guest/<kernel-version>/{Image,fw_dynamic.bin,initrd.cpio.gz,manifest.json}`,
//! `guest/current` (the version in use), `lock`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::apt::{self, AptRoot};
use crate::manifest::{
    FIRMWARE, INITRD, KERNEL, LAYOUT, Manifest, deb_checksums, sha256_hex, write_atomic,
};
use crate::progress::Progress;
use crate::{FetchOptions, GuestFiles, ImageError, build_initramfs, host_mirror};

const PACKAGES: [&str; 2] = ["busybox-static", "opensbi"];

enum Cached {
    Good(GuestFiles),
    Absent,
    /// What is wrong, and the manifest if it could be read (its .debs may still be good).
    Damaged(String, Option<Manifest>),
}

fn current(guest_root: &Path) -> Cached {
    let Ok(version) = std::fs::read_to_string(guest_root.join("current")) else {
        return Cached::Absent;
    };
    let dir = guest_root.join(version.trim());
    match Manifest::read(&dir) {
        Err(why) => Cached::Damaged(why, None),
        Ok(m) if m.layout != LAYOUT => Cached::Damaged(
            format!(
                "built by another ftvm version (layout {}, this one builds {LAYOUT})",
                m.layout
            ),
            Some(m),
        ),
        Ok(m) => match m.verify(&dir) {
            Ok(files) => Cached::Good(files),
            Err(why) => Cached::Damaged(why, Some(m)),
        },
    }
}

/// Fetches what is missing, verifies what is cached, and returns the default guest.
pub fn ensure_default_guest(opts: &FetchOptions) -> Result<GuestFiles, ImageError> {
    let guest_root = opts.cache_dir.join("guest");
    std::fs::create_dir_all(&guest_root).map_err(|e| ImageError::io(&guest_root, e))?;
    // One builder per cache at a time, across processes; readers wait rather than see a
    // guest half replaced.
    let lock_path = opts.cache_dir.join("lock");
    let lock_file = std::fs::File::create(&lock_path).map_err(|e| ImageError::io(&lock_path, e))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| ImageError::io(&lock_path, e.into()))?;

    let mut p = Progress::new(opts.progress);
    let mut reusable = None;
    if opts.force {
        p.note("ftvm: fetching and rebuilding the default guest (--force)");
    } else {
        match current(&guest_root) {
            Cached::Good(files) => return Ok(files),
            Cached::Absent => p.note(
                "ftvm: preparing the default guest (first run: Debian's riscv64 kernel, busybox and OpenSBI)",
            ),
            Cached::Damaged(why, manifest) => {
                p.note(&format!(
                    "ftvm: the cached guest is damaged ({why}); rebuilding it"
                ));
                reusable = manifest;
            }
        }
    }

    let apt = AptRoot::new(&opts.cache_dir.join("apt-riscv64"))?;
    let (version, suite, debs) = match reusable
        .as_ref()
        .and_then(|m| Some((m, m.verified_debs(apt.archives())?)))
    {
        Some((m, debs)) => {
            p.note("  the cached packages are intact: rebuilding without the network");
            (m.kernel_version.clone(), m.suite.clone(), debs)
        }
        None => fetch(&apt, &mut p)?,
    };

    let dir = guest_root.join(&version);
    let work = opts.cache_dir.join("unpack");
    let built = build(&debs, &version, &work, &dir, &mut p);
    // The unpacked trees are large (the kernel's modules): never keep them.
    let _ = std::fs::remove_dir_all(&work);
    let files = built?;

    let manifest = Manifest {
        layout: LAYOUT,
        kernel_version: version.clone(),
        suite,
        files,
        debs: deb_checksums(&debs)?,
    };
    manifest.write(&dir)?;
    write_atomic(&guest_root.join("current"), version.as_bytes())?;
    let guest = manifest
        .verify(&dir)
        .map_err(|why| ImageError::Build(format!("the guest just built does not verify: {why}")))?;
    p.note(&format!("ftvm: guest ready in {}", dir.display()));
    Ok(guest)
}

/// Updates the index and downloads the packages: (kernel version, suite, .deb paths).
fn fetch(apt: &AptRoot, p: &mut Progress) -> Result<(String, String, Vec<PathBuf>), ImageError> {
    let mirror = host_mirror()?;
    let suite = p.step(&format!("apt update ({mirror}, riscv64)"), || {
        apt.update(&mirror)
    })?;
    let kernel_pkg = apt.kernel_package()?;
    let version = kernel_pkg
        .strip_prefix("linux-image-")
        .unwrap_or(&kernel_pkg)
        .to_string();
    let mut packages = vec![kernel_pkg.as_str()];
    packages.extend(PACKAGES);
    let debs = p.step(&format!("download {}", packages.join(", ")), || {
        apt.download(&packages)
    })?;
    Ok((version, suite, debs))
}

/// Unpacks the .debs into `work` and writes the three guest files into `dir`; returns their
/// checksums.
fn build(
    debs: &[PathBuf],
    version: &str,
    work: &Path,
    dir: &Path,
    p: &mut Progress,
) -> Result<BTreeMap<String, String>, ImageError> {
    let _ = std::fs::remove_dir_all(work);
    p.step("extract the packages", || {
        debs.iter().try_for_each(|d| apt::extract(d, work))
    })?;
    let find = |what: &str, candidates: &[String]| -> Result<PathBuf, ImageError> {
        candidates
            .iter()
            .map(|c| work.join(c))
            .find(|p| p.exists())
            .ok_or_else(|| {
                ImageError::Build(format!(
                    "the packages hold no {what} (looked for {})",
                    candidates.join(", ")
                ))
            })
    };
    // Debian's riscv64 `vmlinux-<ver>` is really a flat `Image` with the RISC-V boot header.
    let kernel = find(
        "kernel",
        &[
            format!("boot/vmlinux-{version}"),
            format!("boot/vmlinuz-{version}"),
        ],
    )?;
    let firmware = find(
        "OpenSBI fw_dynamic.bin",
        &[
            "usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin".into(),
            "usr/share/opensbi/lp64/generic/firmware/fw_dynamic.bin".into(),
        ],
    )?;
    let busybox = find("busybox", &["bin/busybox".into(), "usr/bin/busybox".into()])?;
    let modules = find(
        "kernel modules directory",
        &[
            format!("usr/lib/modules/{version}/kernel"),
            format!("lib/modules/{version}/kernel"),
        ],
    )?;
    let kernel_bytes = std::fs::read(&kernel).map_err(|e| ImageError::io(&kernel, e))?;
    if kernel_bytes.get(48..53) != Some(b"RISCV".as_slice()) {
        return Err(ImageError::Build(format!(
            "{} has no RISC-V Image header (magic \"RISCV\" at offset 48)",
            kernel.display()
        )));
    }
    let initrd = p.step("build the initramfs", || {
        let bb = std::fs::read(&busybox).map_err(|e| ImageError::io(&busybox, e))?;
        build_initramfs(&bb, &modules)
    })?;

    std::fs::create_dir_all(dir).map_err(|e| ImageError::io(dir, e))?;
    let mut sums = BTreeMap::new();
    for (name, bytes) in [
        (KERNEL, kernel_bytes),
        (
            FIRMWARE,
            std::fs::read(&firmware).map_err(|e| ImageError::io(&firmware, e))?,
        ),
        (INITRD, initrd),
    ] {
        write_atomic(&dir.join(name), &bytes)?;
        sums.insert(name.to_string(), sha256_hex(&bytes));
    }
    Ok(sums)
}
