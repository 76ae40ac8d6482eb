//! Finding the host's Debian mirror in its apt sources, so that no host name is ever written
//! into ftvm: whatever mirror the host already trusts serves the riscv64 packages too.

use std::path::{Path, PathBuf};

use crate::ImageError;

/// The first Debian archive URI in the host's apt sources: `/etc/apt/sources.list.d/*.sources`
/// (deb822, in name order), then `*.list` there, then `/etc/apt/sources.list`.
pub fn host_mirror() -> Result<String, ImageError> {
    host_mirror_in(Path::new("/etc/apt"))
}

fn host_mirror_in(etc_apt: &Path) -> Result<String, ImageError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(etc_apt.join("sources.list.d"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let with_ext = |ext: &str| {
        files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == ext))
            .cloned()
            .collect::<Vec<_>>()
    };
    let mut candidates: Vec<(bool, PathBuf)> = vec![];
    candidates.extend(with_ext("sources").into_iter().map(|f| (true, f)));
    candidates.extend(with_ext("list").into_iter().map(|f| (false, f)));
    candidates.push((false, etc_apt.join("sources.list")));
    let mut looked = vec![];
    for (deb822, path) in candidates {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        looked.push(path.display().to_string());
        let found = if deb822 {
            mirror_from_deb822(&text)
        } else {
            mirror_from_list(&text)
        };
        if let Some(uri) = found {
            return Ok(uri);
        }
    }
    Err(ImageError::Mirror(format!(
        "no Debian archive URI (a `deb` entry for the Debian archive, not the security one) in {}",
        if looked.is_empty() {
            format!("{} (no readable sources files)", etc_apt.display())
        } else {
            looked.join(", ")
        }
    )))
}

/// A Debian archive, as opposed to its security archive or a third-party repository: signed
/// with Debian's archive keyring, or served from a path ending in `/debian`.
fn is_debian_archive(uri: &str, signed_by: Option<&str>) -> bool {
    let uri = uri.trim_end_matches('/');
    let scheme_ok = ["http://", "https://", "file:"]
        .iter()
        .any(|s| uri.starts_with(s));
    let debian =
        signed_by.is_some_and(|k| k.contains("debian-archive")) || uri.ends_with("/debian");
    scheme_ok && debian && !uri.contains("security")
}

/// First Debian archive URI in a deb822 `.sources` file (stanzas separated by blank lines).
pub fn mirror_from_deb822(text: &str) -> Option<String> {
    let mut stanzas: Vec<Vec<(String, String)>> = vec![vec![]];
    for line in text.lines() {
        if line.trim().is_empty() {
            stanzas.push(vec![]);
        } else if line.starts_with('#') {
            continue;
        } else if line.starts_with([' ', '\t']) {
            // A continuation line (multi-line field, e.g. an inline key): belongs to the last
            // field, whose value we never need beyond its first line.
            continue;
        } else if let Some((k, v)) = line.split_once(':') {
            let fields = stanzas.last_mut().expect("never empty");
            fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    stanzas.iter().find_map(|fields| {
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        let binary = get("types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let enabled = get("enabled").is_none_or(|e| !e.eq_ignore_ascii_case("no"));
        if !binary || !enabled {
            return None;
        }
        get("uris")?
            .split_whitespace()
            .find(|u| is_debian_archive(u, get("signed-by")))
            .map(|u| u.trim_end_matches('/').to_string())
    })
}

/// First Debian archive URI in a one-line-style `sources.list`:
/// `deb [opt=value ...] URI suite component...`.
pub fn mirror_from_list(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("").trim();
        let rest = line.strip_prefix("deb")?;
        if !rest.starts_with([' ', '\t']) {
            return None; // `deb-src`
        }
        let rest = rest.trim_start();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(r) => r.split_once(']')?,
            None => ("", rest),
        };
        let signed_by = options
            .split_whitespace()
            .find_map(|o| o.strip_prefix("signed-by="));
        let uri = rest.split_whitespace().next()?;
        is_debian_archive(uri, signed_by).then(|| uri.trim_end_matches('/').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_takes_the_first_enabled_debian_stanza() {
        let t = "\
# Types: deb
# URIs: http://commented.invalid/debian
Types: deb-src
URIs: http://source-only.invalid/debian

Types: deb
URIs: https://thirdparty.invalid/node_20.x
Signed-By: /usr/share/keyrings/nodesource.gpg

Types: deb
URIs: http://disabled.invalid/debian
Enabled: no

Types: deb
URIs: http://mirror.invalid/debian-security
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://mirror.invalid/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";
        assert_eq!(
            mirror_from_deb822(t).as_deref(),
            Some("http://mirror.invalid/debian")
        );
    }

    #[test]
    fn deb822_security_only_gives_nothing() {
        let t = "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: x-security\n";
        assert_eq!(mirror_from_deb822(t), None);
    }

    #[test]
    fn deb822_keyring_marks_a_mirror_with_another_path() {
        let t = "Types: deb\nURIs: http://mirror.invalid/pub/linux/deb/\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
        assert_eq!(
            mirror_from_deb822(t).as_deref(),
            Some("http://mirror.invalid/pub/linux/deb")
        );
    }

    #[test]
    fn one_line_sources() {
        let t = "\
# deb http://commented.invalid/debian bookworm main
deb-src http://source.invalid/debian bookworm main
deb https://thirdparty.invalid/apt cloud-sdk main
deb http://security.invalid/debian-security bookworm-security main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.invalid/debian/ bookworm main # trailing
";
        assert_eq!(
            mirror_from_list(t).as_deref(),
            Some("http://mirror.invalid/debian")
        );
        assert_eq!(
            mirror_from_list("deb http://security.invalid/debian-security x main\n"),
            None
        );
    }

    #[test]
    fn host_files_in_order_and_disabled_files_skipped() {
        let etc = tempfile::tempdir().unwrap();
        let d = etc.path().join("sources.list.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("a.list.disabled"),
            "deb http://disabled.invalid/debian x main\n",
        )
        .unwrap();
        std::fs::write(
            d.join("b.list"),
            "deb http://from-list.invalid/debian x main\n",
        )
        .unwrap();
        std::fs::write(
            d.join("c.sources"),
            "Types: deb\nURIs: http://from-sources.invalid/debian\n",
        )
        .unwrap();
        assert_eq!(
            host_mirror_in(etc.path()).unwrap(),
            "http://from-sources.invalid/debian"
        );
        std::fs::remove_file(d.join("c.sources")).unwrap();
        assert_eq!(
            host_mirror_in(etc.path()).unwrap(),
            "http://from-list.invalid/debian"
        );
        std::fs::remove_file(d.join("b.list")).unwrap();
        let err = host_mirror_in(etc.path()).unwrap_err().to_string();
        assert!(err.contains("no Debian archive URI"), "{err}");
    }
}
