//! A writer for the cpio "newc" format, the one the Linux kernel unpacks as an initramfs.

/// File types for the mode field.
pub const DIR: u32 = 0o040000;
pub const FILE: u32 = 0o100000;
pub const SYMLINK: u32 = 0o120000;
pub const CHAR_DEV: u32 = 0o020000;

/// Builds a newc archive in memory, entry by entry.
pub struct CpioWriter {
    out: Vec<u8>,
    ino: u32,
}

impl Default for CpioWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl CpioWriter {
    pub fn new() -> Self {
        CpioWriter {
            out: Vec::new(),
            ino: 1,
        }
    }

    fn header(&mut self, name: &str, mode: u32, size: usize) {
        self.header_dev(name, mode, size, (0, 0));
    }

    /// `rdev`: the device number a character/block special file stands for.
    fn header_dev(&mut self, name: &str, mode: u32, size: usize, rdev: (u32, u32)) {
        let nlink = if mode & 0o170000 == DIR { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            u32::try_from(size).expect("newc entries are under 4 GiB"),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.ino += 1;
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.header(name, DIR | 0o755, 0);
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.header(name, FILE | perm, data.len());
        self.out.extend_from_slice(data);
        self.pad();
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.header(name, SYMLINK | 0o777, target.len());
        self.out.extend_from_slice(target.as_bytes());
        self.pad();
    }

    /// A character device node: the kernel opens `/dev/console` for init before any devtmpfs
    /// is mounted, so the archive must carry it (writing it needs no privileges).
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.header_dev(name, CHAR_DEV | perm, 0, (major, minor));
    }

    /// Ends the archive with the trailer entry.
    pub fn finish(mut self) -> Vec<u8> {
        self.header("TRAILER!!!", 0, 0);
        self.out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) type Entry = (String, u32, Vec<u8>, (u32, u32));

    /// Parses what the writer wrote: (name, mode, data, rdev) per entry.
    pub(crate) fn parse(mut b: &[u8]) -> Vec<Entry> {
        let mut out = vec![];
        let start = b.as_ptr() as usize;
        loop {
            assert_eq!(&b[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let rdev = (field(9), field(10));
            let name = String::from_utf8(b[110..110 + namesize - 1].to_vec()).unwrap();
            let mut off = 110 + namesize;
            off += (4 - (b.as_ptr() as usize + off - start) % 4) % 4;
            let data = b[off..off + size].to_vec();
            off += size;
            off += (4 - (b.as_ptr() as usize + off - start) % 4) % 4;
            b = &b[off..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty());
                return out;
            }
            out.push((name, mode, data, rdev));
        }
    }

    #[test]
    fn round_trip() {
        let mut w = CpioWriter::new();
        w.dir("bin");
        w.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n");
        w.symlink("bin/sh", "busybox");
        w.file("empty", 0o644, b"");
        w.char_dev("console", 0o600, 5, 1);
        let entries = parse(&w.finish());
        assert_eq!(entries.len(), 5);
        assert_eq!(
            entries[1],
            (
                "bin/hello".into(),
                FILE | 0o755,
                b"#!/bin/sh\necho hi\n".to_vec(),
                (0, 0)
            )
        );
        assert_eq!(
            entries[2],
            (
                "bin/sh".into(),
                SYMLINK | 0o777,
                b"busybox".to_vec(),
                (0, 0)
            )
        );
        assert_eq!(entries[0].1, DIR | 0o755);
        assert_eq!(entries[3].2, b"");
        assert_eq!(
            entries[4],
            ("console".into(), CHAR_DEV | 0o600, vec![], (5, 1))
        );
    }

    #[test]
    fn the_system_cpio_reads_it() {
        let mut w = CpioWriter::new();
        w.dir("d");
        w.file("d/f", 0o644, b"abc");
        w.symlink("d/l", "f");
        w.char_dev("d/console", 0o600, 5, 1);
        let bytes = w.finish();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cpio");
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-t", "-v"])
            .stdin(std::fs::File::open(&path).unwrap())
            .output()
            .expect("cpio(1) runs (scripts/test.sh installs it)");
        let listing = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 4, "{listing}");
        assert!(lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" d"));
        assert!(lines[1].starts_with("-rw-r--r--") && lines[1].contains(" 3 "));
        assert!(lines[2].starts_with("lrwxrwxrwx") && lines[2].ends_with("d/l -> f"));
        assert!(lines[3].starts_with("crw-------") && lines[3].contains("5,"));
    }
}
