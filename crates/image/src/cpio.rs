//! A writer for the cpio "newc" format, the one the Linux kernel unpacks as an initramfs.

/// File types for the mode field.
pub const DIR: u32 = 0o040000;
pub const FILE: u32 = 0o100000;
pub const SYMLINK: u32 = 0o120000;

/// Builds a newc archive in memory, entry by entry.
#[derive(Default)]
pub struct CpioWriter {
    out: Vec<u8>,
    ino: u32,
}

impl CpioWriter {
    pub fn new() -> Self {
        CpioWriter {
            out: Vec::new(),
            ino: 1,
        }
    }

    fn header(&mut self, name: &str, mode: u32, size: usize) {
        let nlink = if mode & 0o170000 == DIR { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            size as u32,
            0,
            0,
            0,
            0,
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

    /// Ends the archive with the trailer entry.
    pub fn finish(mut self) -> Vec<u8> {
        self.header("TRAILER!!!", 0, 0);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses what the writer wrote: (name, mode, data) per entry.
    fn parse(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = vec![];
        let start = b.as_ptr() as usize;
        loop {
            assert_eq!(&b[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
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
            out.push((name, mode, data));
        }
    }

    #[test]
    fn round_trip() {
        let mut w = CpioWriter::new();
        w.dir("bin");
        w.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n");
        w.symlink("bin/sh", "busybox");
        w.file("empty", 0o644, b"");
        let entries = parse(&w.finish());
        assert_eq!(entries.len(), 4);
        assert_eq!(
            entries[1],
            (
                "bin/hello".into(),
                FILE | 0o755,
                b"#!/bin/sh\necho hi\n".to_vec()
            )
        );
        assert_eq!(
            entries[2],
            ("bin/sh".into(), SYMLINK | 0o777, b"busybox".to_vec())
        );
        assert_eq!(entries[0].1, DIR | 0o755);
    }

    #[test]
    fn the_system_cpio_reads_it() {
        let mut w = CpioWriter::new();
        w.dir("d");
        w.file("d/f", 0o644, b"abc");
        let bytes = w.finish();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cpio");
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new("cpio")
            .arg("-t")
            .stdin(std::fs::File::open(&path).unwrap())
            .output()
            .expect("cpio(1) runs (scripts/test.sh installs it)");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .collect::<Vec<_>>(),
            vec!["d", "d/f"]
        );
    }
}
