//! Debian's riscv64 packages through a private apt root: the host's own mirror, none of the
//! host's apt state touched (its own lists, status and archives dir, so a host `apt-get clean`
//! cannot remove our .debs), and no root needed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::ImageError;
use crate::manifest::sha256_file;

/// Suites tried in order. `stable` is what worked; the codename failed with index size
/// mismatches on this project's mirror, and `sid`'s Release file is often expired.
const SUITES: &[&str] = &["stable", "trixie", "sid"];
/// Attempts per network step; the wait doubles from `BACKOFF` after each failure.
const ATTEMPTS: u32 = 3;
const BACKOFF: Duration = Duration::from_secs(1);

/// A private apt configuration rooted in the cache.
pub struct AptRoot {
    root: PathBuf,
    archives: PathBuf,
}

/// One package as `apt-get download --print-uris` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct DebInfo {
    pub file_name: String,
    /// Lowercase hex, from the signed index.
    pub sha256: String,
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
        // APT::Sandbox::User root: apt otherwise drops to `_apt`, which cannot write into a
        // cache under root's home.
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

    pub fn archives(&self) -> &Path {
        &self.archives
    }

    pub fn update_log(&self) -> PathBuf {
        self.root.join("update.log")
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, ImageError> {
        self.run_in(&self.archives, program, args)
    }

    fn run_in(&self, dir: &Path, program: &str, args: &[&str]) -> Result<Output, ImageError> {
        Command::new(program)
            .env("APT_CONFIG", self.root.join("apt.conf"))
            .env("LC_ALL", "C")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| ImageError::Tool(program.into(), e.to_string()))
    }

    /// Points the root at `mirror`, trying the suites in turn (each `ATTEMPTS` times), and
    /// returns the suite whose index updated cleanly.
    pub fn update(&self, mirror: &str) -> Result<String, ImageError> {
        let log_path = self.update_log();
        let mut log = std::fs::File::create(&log_path).map_err(|e| ImageError::io(&log_path, e))?;
        let mut failures = vec![];
        for suite in SUITES {
            let extra = if *suite == "sid" {
                " check-valid-until=no"
            } else {
                ""
            };
            let line = format!(
                "deb [arch=riscv64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg{extra}] {mirror} {suite} main\n"
            );
            let list = self.root.join("etc/apt/sources.list");
            std::fs::write(&list, &line).map_err(|e| ImageError::io(&list, e))?;
            for attempt in 1..=ATTEMPTS {
                let out = self.run("apt-get", &["-q", "update"])?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                let _ = writeln!(log, "### {}attempt {attempt}\n{text}", line.trim_end());
                // apt-get update exits 0 on some failed fetches (only a `W:` line), which
                // leaves a stale or missing index behind: treat those as failures too.
                let problems = problem_lines(&text);
                if out.status.success() && problems.is_empty() {
                    return Ok(suite.to_string());
                }
                failures.push(format!(
                    "suite {suite}, attempt {attempt}: {}",
                    if problems.is_empty() {
                        format!("exit status {}", out.status)
                    } else {
                        problems.join(" | ")
                    }
                ));
                if attempt < ATTEMPTS {
                    std::thread::sleep(BACKOFF * (1 << (attempt - 1)));
                }
            }
        }
        Err(ImageError::Apt(format!(
            "apt-get update failed for every suite with the mirror line `deb {mirror} <suite> main` \
             (full log: {}):\n  {}",
            log_path.display(),
            failures.join("\n  ")
        )))
    }

    /// The versioned kernel package `linux-image-riscv64` depends on in the current index.
    pub fn kernel_package(&self) -> Result<String, ImageError> {
        let out = self.run("apt-cache", &["depends", "linux-image-riscv64"])?;
        parse_kernel_depends(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
            ImageError::Apt(format!(
                "cannot resolve the kernel package through `apt-cache depends linux-image-riscv64`: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })
    }

    /// File name and checksum of each package, from the index (no network).
    pub fn describe(&self, packages: &[&str]) -> Result<Vec<DebInfo>, ImageError> {
        let mut args = vec!["-q", "download", "--print-uris"];
        args.extend_from_slice(packages);
        // Not from the archives dir: `apt-get download --print-uris` silently omits packages
        // whose .deb is already in the working directory (a `--force` refetch).
        let out = self.run_in(&self.root, "apt-get", &args)?;
        if !out.status.success() {
            return Err(ImageError::Apt(format!(
                "package(s) not found in the index: {}",
                problem_lines(&String::from_utf8_lossy(&out.stderr)).join(" | ")
            )));
        }
        let infos = parse_print_uris(&String::from_utf8_lossy(&out.stdout));
        if infos.len() != packages.len() {
            return Err(ImageError::Apt(format!(
                "apt describes {} of the packages {packages:?}",
                infos.len()
            )));
        }
        Ok(infos)
    }

    /// Downloads what is not already in the private archives dir with the right checksum;
    /// returns the .deb paths, all verified against the index's sha256.
    pub fn download(&self, packages: &[&str]) -> Result<Vec<PathBuf>, ImageError> {
        let infos = self.describe(packages)?;
        let good = |info: &DebInfo| {
            sha256_file(&self.archives.join(&info.file_name)).is_ok_and(|s| s == info.sha256)
        };
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let missing: Vec<&str> = packages
                .iter()
                .zip(&infos)
                .filter(|(_, info)| !good(info))
                .map(|(p, _)| *p)
                .collect();
            if missing.is_empty() {
                return Ok(infos
                    .iter()
                    .map(|i| self.archives.join(&i.file_name))
                    .collect());
            }
            let mut args = vec!["-q", "download"];
            args.extend_from_slice(&missing);
            let out = self.run("apt-get", &args)?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            last = format!(
                "apt-get download {} (attempt {attempt}): {}",
                missing.join(" "),
                problem_lines(&text).join(" | ")
            );
            if !out.status.success() && attempt < ATTEMPTS {
                std::thread::sleep(BACKOFF * (1 << (attempt - 1)));
            }
        }
        let bad: Vec<&str> = infos
            .iter()
            .filter(|i| !good(i))
            .map(|i| i.file_name.as_str())
            .collect();
        Err(ImageError::Apt(format!(
            "could not download {} with the checksum the index gives: {last}",
            bad.join(", ")
        )))
    }
}

fn problem_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect()
}

fn parse_kernel_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && !p.contains('<'))
        .map(str::to_string)
}

/// Lines like `'URI' file_name size SHA256:hex`.
fn parse_print_uris(text: &str) -> Vec<DebInfo> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().skip(1);
            let file_name = w.next()?.to_string();
            let sha256 = w.nth(1)?.strip_prefix("SHA256:")?.to_ascii_lowercase();
            Some(DebInfo { file_name, sha256 })
        })
        .collect()
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

impl AptRoot {
    /// `roots` and every package they depend on (Depends, Pre-Depends) that is a library, in
    /// name order. Non-library dependencies (adduser, debconf, init helpers) are not followed:
    /// the disk runs redis from its own init, not through maintainer scripts.
    pub fn library_closure(&self, roots: &[&str]) -> Result<Vec<String>, ImageError> {
        let mut args = vec![
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
        ];
        args.extend_from_slice(roots);
        let out = self.run("apt-cache", &args)?;
        if !out.status.success() {
            return Err(ImageError::Apt(format!(
                "apt-cache depends {}: {}",
                roots.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let graph = parse_depends(&String::from_utf8_lossy(&out.stdout));
        let wanted = |p: &str| p.starts_with("lib") || p == "zlib1g" || p.ends_with("-base");
        let mut seen: BTreeSet<String> = roots.iter().map(|r| r.to_string()).collect();
        let mut queue: VecDeque<String> = seen.iter().cloned().collect();
        while let Some(p) = queue.pop_front() {
            for d in graph.get(&p).into_iter().flatten() {
                if wanted(d) && seen.insert(d.clone()) {
                    queue.push_back(d.clone());
                }
            }
        }
        for r in roots {
            if !graph.contains_key(*r) {
                return Err(ImageError::Apt(format!("package {r} is not in the index")));
            }
        }
        Ok(seen.into_iter().collect())
    }
}

/// `apt-cache depends --recurse` output -> package -> its (first-choice, non-virtual)
/// dependencies.
fn parse_depends(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_alternative = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            let name = line.trim();
            current = (!name.starts_with('<') && !name.is_empty()).then(|| name.to_string());
            if let Some(c) = &current {
                graph.entry(c.clone()).or_default();
            }
            in_alternative = false;
            continue;
        }
        let t = line.trim_start();
        let (alt, rest) = match t.strip_prefix('|') {
            Some(r) => (true, r),
            None => (false, t),
        };
        let Some(dep) = rest
            .strip_prefix("Depends: ")
            .or_else(|| rest.strip_prefix("PreDepends: "))
        else {
            continue;
        };
        // Of `a | b`, only `a` is taken: the line after a `|` line is its alternative.
        let take = !in_alternative;
        in_alternative = alt;
        if !take || dep.starts_with('<') {
            continue;
        }
        if let Some(c) = &current {
            graph.get_mut(c).expect("added above").push(dep.to_string());
        }
    }
    graph
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_output_gives_first_choice_real_packages() {
        let text = "redis-tools\n  Depends: adduser\n  Depends: libc6\n |Depends: libssl3t64\n  Depends: libssl3\n  Depends: <debconf-2.0>\n    cdebconf\nlibc6\n  Depends: libgcc-s1\n<debconf-2.0>\n";
        let g = parse_depends(text);
        assert_eq!(g["redis-tools"], vec!["adduser", "libc6", "libssl3t64"]);
        assert_eq!(g["libc6"], vec!["libgcc-s1"]);
        assert!(!g.contains_key("<debconf-2.0>"));
    }

    #[test]
    fn kernel_package_from_apt_cache_depends() {
        let t = "linux-image-riscv64\n  Depends: <linux-image-virtual>\n  \
                 Depends: linux-image-6.12.107+deb13-riscv64\n  Recommends: irqbalance\n";
        assert_eq!(
            parse_kernel_depends(t).as_deref(),
            Some("linux-image-6.12.107+deb13-riscv64")
        );
        assert_eq!(parse_kernel_depends("N: Unable to locate package\n"), None);
    }

    #[test]
    fn print_uris_lines() {
        let t = "'http://mirror.invalid/debian/pool/main/o/opensbi/opensbi_1.6-1_all.deb' \
                 opensbi_1.6-1_all.deb 204072 SHA256:DC4A43bd\n";
        assert_eq!(
            parse_print_uris(t),
            vec![DebInfo {
                file_name: "opensbi_1.6-1_all.deb".into(),
                sha256: "dc4a43bd".into()
            }]
        );
    }

    #[test]
    fn warnings_count_as_update_problems() {
        let t = "Get:1 x stable InRelease\nW: Failed to fetch x  File has unexpected size\n\
                 E: Some index files failed to download.\nReading package lists...\n";
        assert_eq!(problem_lines(t).len(), 2);
    }
}
