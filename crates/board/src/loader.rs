//! Parsers for what gets loaded into RAM: the Linux RISC-V `Image` header, bare-metal ELF
//! programs, and OpenSBI's fw_dynamic info block. All input is untrusted: every size and offset
//! is checked against the file.

use object::{Object, ObjectSegment};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LoadError {
    #[error("not a RISC-V Linux Image: {0}")]
    NotImage(String),
    #[error("not a usable RISC-V ELF program: {0}")]
    NotElf(String),
}

/// The fields of the 64-byte RISC-V Linux `Image` header that matter for loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinuxImage {
    /// Where the kernel wants to sit, as an offset from the start of RAM.
    pub text_offset: u64,
    /// Memory the kernel needs from its load address (0: unknown, use the file size).
    pub image_size: u64,
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub fn parse_linux_image(bytes: &[u8]) -> Result<LinuxImage, LoadError> {
    if bytes.len() < 64 {
        return Err(LoadError::NotImage(format!(
            "{} bytes is too short for the header",
            bytes.len()
        )));
    }
    if &bytes[48..56] != b"RISCV\0\0\0" || &bytes[56..60] != b"RSC\x05" {
        return Err(LoadError::NotImage(
            "no RISC-V magic at offsets 48/56".into(),
        ));
    }
    let text_offset = le64(bytes, 8);
    let image_size = le64(bytes, 16);
    if !text_offset.is_multiple_of(4096) || text_offset > 1 << 30 {
        return Err(LoadError::NotImage(format!(
            "text_offset {text_offset:#x} is not a sane page-aligned offset"
        )));
    }
    if image_size != 0 && (image_size < bytes.len() as u64 || image_size > 1 << 32) {
        return Err(LoadError::NotImage(format!(
            "image_size {image_size:#x} does not fit the file"
        )));
    }
    Ok(LinuxImage {
        text_offset,
        image_size,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub paddr: u64,
    pub data: Vec<u8>,
    /// Bytes in memory (>= data.len(): the rest is zero).
    pub memsz: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfImage {
    pub entry: u64,
    pub segments: Vec<Segment>,
}

pub fn parse_elf(bytes: &[u8]) -> Result<ElfImage, LoadError> {
    let file = object::read::elf::ElfFile64::<object::Endianness>::parse(bytes)
        .map_err(|e| LoadError::NotElf(e.to_string()))?;
    if file.architecture() != object::Architecture::Riscv64 || !file.is_little_endian() {
        return Err(LoadError::NotElf("not little-endian RISC-V 64".into()));
    }
    let mut segments = vec![];
    for seg in file.segments() {
        let data = seg.data().map_err(|e| LoadError::NotElf(e.to_string()))?;
        let memsz = seg.size();
        if (data.len() as u64) > memsz {
            return Err(LoadError::NotElf(
                "segment file size exceeds its memory size".into(),
            ));
        }
        if memsz == 0 {
            continue;
        }
        segments.push(Segment {
            paddr: seg.address(),
            data: data.to_vec(),
            memsz,
        });
    }
    if segments.is_empty() {
        return Err(LoadError::NotElf("no loadable segments".into()));
    }
    Ok(ElfImage {
        entry: file.entry(),
        segments,
    })
}

/// OpenSBI's `struct fw_dynamic_info` (version 2): where to go after the firmware.
pub fn fw_dynamic_info(next_addr: u64, next_mode: u64, boot_hart: u64) -> [u8; 48] {
    let fields = [0x4942_534f, 2, next_addr, next_mode, 0, boot_hart];
    let mut out = [0u8; 48];
    for (i, f) in fields.iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&f.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_header(text_offset: u64, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&size.to_le_bytes());
        h[48..56].copy_from_slice(b"RISCV\0\0\0");
        h[56..60].copy_from_slice(b"RSC\x05");
        h
    }

    #[test]
    fn image_header_checks() {
        let good = image_header(0x20_0000, 0x10000);
        assert_eq!(
            parse_linux_image(&good),
            Ok(LinuxImage {
                text_offset: 0x20_0000,
                image_size: 0x10000
            })
        );
        assert!(parse_linux_image(&good[..40]).is_err());
        assert!(
            parse_linux_image(b"not a kernel at all, not even close to being one...............")
                .is_err()
        );
        assert!(parse_linux_image(&image_header(0x123, 0)).is_err());
        assert!(parse_linux_image(&image_header(0x20_0000, u64::MAX)).is_err());
    }

    #[test]
    fn elf_rejects_garbage() {
        assert!(parse_elf(b"\x7fELF garbage").is_err());
        assert!(parse_elf(&[]).is_err());
    }

    #[test]
    fn fw_dynamic_layout() {
        let info = fw_dynamic_info(0x8020_0000, 1, 0);
        assert_eq!(&info[0..8], &0x4942_534fu64.to_le_bytes());
        assert_eq!(&info[16..24], &0x8020_0000u64.to_le_bytes());
    }
}
