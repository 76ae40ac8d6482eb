//! Debian's riscv64 packages through a private apt root: the host's own mirror, none of the
//! host's apt state touched, and no root needed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::ImageError;

/// Suites tried in order: `stable` moves at point releases but is what worked; the others are
/// fallbacks for a mirror whose `stable` index is broken.
const SUITES: &[&str] = &["stable", "trixie", "sid"];
const RETRIES: u32 = 3;

/// The first Debian archive URI in the host's apt sources (deb822 `.sources` files or the
/// one-line `sources.list`), skipping security archives.
pub fn host_mirror() -> Result<String, ImageError> {
    let mut texts = vec![];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            if let Ok(t) = std::fs::read_to_string(&f) {
                texts.push((f.extension().is_some_and(|e| e == "sources"), t));
            }
        }
    }
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push((false, t));
    }
    texts
        .iter()
        .find_map(|(deb822, t)| if *deb822 { mirror_from_deb822(t) } else { mirror_from_list(t) })
        .ok_or_else(|| ImageError::Mirror("no Debian archive URI found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list".into()))
}

fn usable(uri: &str) -> bool {
    (uri.starts_with("http://") || uri.starts_with("https://") || uri.starts_with("file:"))
        && !uri.contains("security")
}

pub fn mirror_from_deb822(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("URIs:"))
        .flat_map(str::split_whitespace)
        .find(|u| usable(u))
        .map(|u| u.trim_end_matches('/').to_string())
}

pub fn mirror_from_list(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("deb "))
        .find_map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter(|w| !w.starts_with('['))
                .find(|w| usable(w))
                .map(|u| u.trim_end_matches('/').to_string())
        })
}

/// A private apt configuration rooted in the cache.
pub struct AptRoot {
    root: PathBuf,
    pub archives: PathBuf,
}

impl AptRoot {
    pub fn new(root: &Path) -> Result<AptRoot, ImageError> {
        for d in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "var/lib/apt/lists/partial",
            "var/lib/dpkg",
            "archives/partial",
        ] {
            std::fs::create_dir_all(root.join(d)).map_err(|e| ImageError::io(root.join(d), e))?;
        }
        let status = root.join("var/lib/dpkg/status");
        if !status.exists() {
            std::fs::write(&status, "").map_err(|e| ImageError::io(&status, e))?;
        }
        let r = root.display();
        let conf = format!(
            "Dir \"{r}/\"; Dir::State::status \"{r}/var/lib/dpkg/status\"; \
             Dir::Etc::Parts \"{r}/etc/apt/apt.conf.d\"; Dir::Cache::Archives \"{r}/archives\";\n\
             APT::Architecture \"riscv64\"; APT::Architectures {{ \"riscv64\"; }}; \
             Acquire::Languages \"none\"; APT::Sandbox::User \"root\";\n"
        );
        std::fs::write(root.join("apt.conf"), conf)
            .map_err(|e| ImageError::io(root.join("apt.conf"), e))?;
        Ok(AptRoot {
            root: root.to_path_buf(),
            archives: root.join("archives"),
        })
    }

    fn apt(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", self.root.join("apt.conf"));
        c
    }

    /// Points the root at `suite` on `mirror` and updates the index; tries the suites in turn.
    pub fn update(&self, mirror: &str) -> Result<String, ImageError> {
        let mut failures = vec![];
        for suite in SUITES {
            let opts = if *suite == "sid" {
                " check-valid-until=no"
            } else {
                ""
            };
            let line = format!(
                "deb [arch=riscv64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg{opts}] {mirror} {suite} main\n"
            );
            let list = self.root.join("etc/apt/sources.list");
            std::fs::write(&list, line).map_err(|e| ImageError::io(&list, e))?;
            for attempt in 0..RETRIES {
                let out = self
                    .apt("apt-get")
                    .args(["-q", "update"])
                    .output()
                    .map_err(|e| ImageError::Tool("apt-get".into(), e.to_string()))?;
                let text = String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr);
                let _ = std::fs::write(self.root.join("update.log"), &text);
                let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
                if out.status.success() && errors.is_empty() {
                    return Ok(suite.to_string());
                }
                failures.push(format!(
                    "{suite} (attempt {}): {}",
                    attempt + 1,
                    errors.join(" | ")
                ));
                std::thread::sleep(Duration::from_millis(500 << attempt));
            }
        }
        Err(ImageError::Apt(format!(
            "apt-get update failed for mirror {mirror}: {}",
            failures.join("; ")
        )))
    }

    /// The versioned kernel package `linux-image-riscv64` points at.
    pub fn kernel_package(&self) -> Result<String, ImageError> {
        let out = self
            .apt("apt-cache")
            .args(["depends", "linux-image-riscv64"])
            .output()
            .map_err(|e| ImageError::Tool("apt-cache".into(), e.to_string()))?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-") && !p.contains('<'))
            .map(str::to_string)
            .ok_or_else(|| {
                ImageError::Apt(format!(
                    "cannot resolve linux-image-riscv64: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            })
    }

    /// Downloads packages into the private archives directory; returns their .deb paths.
    pub fn download(&self, packages: &[&str]) -> Result<Vec<PathBuf>, ImageError> {
        let mut last = String::new();
        for attempt in 0..RETRIES {
            let out = self
                .apt("apt-get")
                .args(["-q", "download"])
                .args(packages)
                .current_dir(&self.archives)
                .output()
                .map_err(|e| ImageError::Tool("apt-get".into(), e.to_string()))?;
            if out.status.success() {
                return packages.iter().map(|p| self.deb_path(p)).collect();
            }
            last = String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| l.starts_with("E:"))
                .collect::<Vec<_>>()
                .join(" | ");
            std::thread::sleep(Duration::from_millis(500 << attempt));
        }
        Err(ImageError::Apt(format!(
            "apt-get download {} failed: {last}",
            packages.join(" ")
        )))
    }

    fn deb_path(&self, package: &str) -> Result<PathBuf, ImageError> {
        let prefix = format!("{package}_");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.archives)
            .map_err(|e| ImageError::io(&self.archives, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .collect();
        found.sort();
        found
            .pop()
            .ok_or_else(|| ImageError::Apt(format!("package {package} was not downloaded")))
    }
}

/// Unpacks a .deb into `dir` with dpkg-deb.
pub fn extract(deb: &Path, dir: &Path) -> Result<(), ImageError> {
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(dir)
        .output()
        .map_err(|e| ImageError::Tool("dpkg-deb".into(), e.to_string()))?;
    if !out.status.success() {
        return Err(ImageError::Tool(
            "dpkg-deb".into(),
            format!(
                "{}: {}",
                deb.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_sources() {
        let t = "# comment\nTypes: deb\n# URIs: http://ignored.example/\nURIs: http://mirror.invalid/debian\nSuites: bookworm\n\n\
                 Types: deb\nURIs: http://mirror.invalid/debian-security\n";
        assert_eq!(
            mirror_from_deb822(t).as_deref(),
            Some("http://mirror.invalid/debian")
        );
        assert_eq!(
            mirror_from_deb822("URIs: http://mirror.invalid/debian-security\n"),
            None
        );
    }

    #[test]
    fn one_line_sources() {
        let t = "# deb http://old.invalid/ x main\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.invalid/debian/ bookworm main\n";
        assert_eq!(
            mirror_from_list(t).as_deref(),
            Some("http://mirror.invalid/debian")
        );
        assert_eq!(
            mirror_from_list("deb http://security.invalid/debian-security x main\n"),
            None
        );
    }
}
