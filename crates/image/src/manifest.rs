//! The cache's record of a built guest: which files, which packages they came from, and the
//! sha256 of each, so that a truncated, edited or missing file is noticed on every use.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{GuestFiles, ImageError};

pub const MANIFEST: &str = "manifest.json";
pub const KERNEL: &str = "Image";
pub const INITRD: &str = "initrd.cpio.gz";
pub const FIRMWARE: &str = "fw_dynamic.bin";
/// The build recipe's version: bumped whenever the initramfs (its /init) or the file set changes,
/// so that a cache built by an older ftvm is rebuilt (from its cached .debs) rather than used.
pub const LAYOUT: u32 = 2;
/// The guest files every use checks.
pub const FILES: [&str; 3] = [KERNEL, INITRD, FIRMWARE];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// How the guest files were built ([`LAYOUT`]); a guest of another layout is rebuilt.
    #[serde(default)]
    pub layout: u32,
    pub kernel_version: String,
    /// The suite the packages came from (`stable` unless it fell back).
    pub suite: String,
    /// Guest file name -> sha256 (hex).
    pub files: BTreeMap<String, String>,
    /// .deb file name (in the private archives dir) -> sha256 (hex).
    #[serde(default)]
    pub debs: BTreeMap<String, String>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, String> {
        let path = dir.join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn write(&self, dir: &Path) -> Result<(), ImageError> {
        let json = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        write_atomic(&dir.join(MANIFEST), &json)
    }

    /// The guest in `dir` if every file is present and matches its recorded checksum; else
    /// what is wrong, naming the file.
    pub fn verify(&self, dir: &Path) -> Result<GuestFiles, String> {
        for name in FILES {
            let path = dir.join(name);
            let want = self
                .files
                .get(name)
                .ok_or_else(|| format!("the manifest has no checksum for {name}"))?;
            let got = sha256_file(&path).map_err(|e| e.to_string())?;
            if &got != want {
                return Err(format!(
                    "{} does not match its checksum (sha256 {got}, manifest {want})",
                    path.display()
                ));
            }
        }
        Ok(GuestFiles {
            kernel: dir.join(KERNEL),
            initrd: dir.join(INITRD),
            firmware: dir.join(FIRMWARE),
            kernel_version: self.kernel_version.clone(),
        })
    }

    /// The recorded .debs, if all are still in `archives` with their recorded checksums.
    pub fn verified_debs(&self, archives: &Path) -> Option<Vec<PathBuf>> {
        if self.debs.is_empty() {
            return None;
        }
        self.debs
            .iter()
            .map(|(name, want)| {
                let path = archives.join(name);
                sha256_file(&path)
                    .ok()
                    .filter(|got| got == want)
                    .map(|_| path)
            })
            .collect()
    }
}

/// .deb file name -> sha256, for a manifest's record of what a build came from.
pub fn deb_checksums(debs: &[PathBuf]) -> Result<BTreeMap<String, String>, ImageError> {
    debs.iter()
        .map(|deb| {
            let name = deb.file_name().expect("a .deb path").to_string_lossy();
            Ok((name.into_owned(), sha256_file(deb)?))
        })
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut f = std::fs::File::open(path).map_err(|e| ImageError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| ImageError::io(path, e))?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `path` so that it is either absent, its old content, or complete: a crash mid-write
/// leaves only a `.partial` file, which nothing reads.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| ImageError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ImageError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_in(dir: &Path) -> Manifest {
        let mut files = BTreeMap::new();
        for name in FILES {
            write_atomic(&dir.join(name), name.as_bytes()).unwrap();
            files.insert(name.to_string(), sha256_hex(name.as_bytes()));
        }
        let m = Manifest {
            layout: LAYOUT,
            kernel_version: "6.0-test".into(),
            suite: "stable".into(),
            files,
            debs: BTreeMap::new(),
        };
        m.write(dir).unwrap();
        m
    }

    #[test]
    fn an_intact_guest_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let m = guest_in(dir.path());
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);
        let g = m.verify(dir.path()).unwrap();
        assert_eq!(g.kernel, dir.path().join(KERNEL));
        assert_eq!(g.kernel_version, "6.0-test");
        assert!(!dir.path().join("Image.partial").exists());
    }

    #[test]
    fn a_corrupted_file_is_detected_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let m = guest_in(dir.path());
        // Same length, one byte changed: only a checksum notices.
        std::fs::write(dir.path().join(INITRD), b"initrd.cpio.gZ").unwrap();
        let err = m.verify(dir.path()).unwrap_err();
        assert!(err.contains(INITRD) && err.contains("checksum"), "{err}");
    }

    #[test]
    fn a_missing_file_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let m = guest_in(dir.path());
        std::fs::remove_file(dir.path().join(FIRMWARE)).unwrap();
        assert!(m.verify(dir.path()).unwrap_err().contains(FIRMWARE));
    }

    #[test]
    fn debs_are_reused_only_when_they_match() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = guest_in(dir.path());
        assert_eq!(m.verified_debs(dir.path()), None);
        std::fs::write(dir.path().join("a.deb"), b"deb").unwrap();
        m.debs.insert("a.deb".into(), sha256_hex(b"deb"));
        assert_eq!(
            m.verified_debs(dir.path()),
            Some(vec![dir.path().join("a.deb")])
        );
        std::fs::write(dir.path().join("a.deb"), b"bad").unwrap();
        assert_eq!(m.verified_debs(dir.path()), None);
    }

    #[test]
    fn sha256_of_a_known_string() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
