//! Split-brain protection: an atomic test-and-set on storage both sides share.
//!
//! When a side loses its peer it cannot tell a dead peer from a cut channel, so before going
//! live (the backup) or continuing alone (the primary) it must win a test-and-set for the
//! pair's FT generation. Exactly one side wins; the loser halts itself. Storage that cannot be
//! reached is neither a win nor a loss: the side waits and tries again, since the VM cannot
//! run without its shared disk anyway.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The result of a test-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Won,
    /// Somebody else holds this generation; `winner` is what it wrote.
    Lost {
        winner: String,
    },
}

/// An atomic test-and-set, once per FT generation. An etcd backend can implement the same
/// trait for clusters beyond one shared directory.
pub trait TieBreaker: Send + Sync {
    /// Claims `generation` for `who`. `Err` means the storage could not be reached: try again.
    fn test_and_set(&self, generation: u64, who: &str) -> io::Result<Outcome>;
    /// Where the records live (for messages).
    fn describe(&self) -> String;
    /// The first generation with no record: where a new pair starts, so that records left by
    /// earlier pairs of the same VM never decide for this one.
    fn next_generation(&self) -> io::Result<u64>;
}

/// The default backend: a lock record in the directory of the shared disk image, one per
/// generation, created atomically with its contents (`link(2)`, which fails if the name
/// exists, like `O_CREAT|O_EXCL`) and made durable (file and directory fsync) before the winner
/// acts on it.
pub struct LockFile {
    dir: PathBuf,
    name: String,
}

impl LockFile {
    /// Records named `<name>.ft-lock.<generation>` in `dir`.
    pub fn new(dir: &Path, name: &str) -> LockFile {
        LockFile {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    fn path(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("{}.ft-lock.{generation}", self.name))
    }

    fn next_free(&self) -> io::Result<u64> {
        let prefix = format!("{}.ft-lock.", self.name);
        let mut next = 1;
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(g) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|g| g.parse::<u64>().ok())
            {
                next = next.max(g.saturating_add(1));
            }
        }
        Ok(next)
    }
}

impl TieBreaker for LockFile {
    fn test_and_set(&self, generation: u64, who: &str) -> io::Result<Outcome> {
        let path = self.path(generation);
        // The record appears whole or not at all: written to a private file first, then
        // linked to its name, which fails if the name exists (the atomic test-and-set). A
        // loser reading it never sees it half written.
        static CLAIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let claim = CLAIMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join(format!(
            ".{}.ft-claim.{generation}.{}.{claim}",
            self.name,
            std::process::id()
        ));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(who.as_bytes())?;
        f.sync_all()?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                File::open(&self.dir)?.sync_all()?;
                Ok(Outcome::Won)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let mut winner = String::new();
                File::open(&path)?.take(4096).read_to_string(&mut winner)?;
                // Our own record (written before a crash or a retry) is still a win.
                if winner == who {
                    Ok(Outcome::Won)
                } else {
                    Ok(Outcome::Lost { winner })
                }
            }
            Err(e) => Err(e),
        }
    }

    fn next_generation(&self) -> io::Result<u64> {
        self.next_free()
    }

    fn describe(&self) -> String {
        format!(
            "lock records {}/{}.ft-lock.*",
            self.dir.display(),
            self.name
        )
    }
}

/// Test-and-set, retrying while the storage is unreachable; `waiting` hears each failure.
pub fn decide(
    tb: &dyn TieBreaker,
    generation: u64,
    who: &str,
    mut waiting: impl FnMut(&io::Error),
) -> Outcome {
    loop {
        match tb.test_and_set(generation, who) {
            Ok(o) => return o,
            Err(e) => {
                waiting(&e);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_side_wins_a_generation() {
        let dir = tempfile::tempdir().unwrap();
        let tb = LockFile::new(dir.path(), "vm.img");
        assert_eq!(tb.next_generation().unwrap(), 1);
        let sides: Vec<_> = (0..8)
            .map(|i| {
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    LockFile::new(&dir, "vm.img")
                        .test_and_set(1, &format!("side {i}"))
                        .unwrap()
                })
            })
            .collect();
        let outcomes: Vec<Outcome> = sides.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Won).count(), 1);
        // The losers learn who won; the winner asking again still wins.
        let Some(Outcome::Lost { winner }) = outcomes.iter().find(|o| **o != Outcome::Won) else {
            panic!("no loser")
        };
        assert!(winner.starts_with("side "));
        assert_eq!(tb.test_and_set(1, winner).unwrap(), Outcome::Won);
        // A new pair starts past every recorded generation.
        assert_eq!(tb.next_generation().unwrap(), 2);
        assert_eq!(tb.test_and_set(2, "new pair").unwrap(), Outcome::Won);
    }

    #[test]
    fn unreachable_storage_waits_until_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("not-yet");
        let tb = LockFile::new(&gone, "vm.img");
        assert!(tb.test_and_set(1, "me").is_err());
        let mut waits = 0;
        let out = decide(&tb, 1, "me", |_| {
            waits += 1;
            if waits == 3 {
                std::fs::create_dir(&gone).unwrap();
            }
        });
        assert_eq!(out, Outcome::Won);
        assert_eq!(waits, 3);
    }
}
