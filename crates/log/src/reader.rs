//! Reading a log stream back, with errors that say exactly where it went wrong.

use std::io::{self, BufReader, Read};

use thiserror::Error;

use crate::format::{MAX_PAYLOAD, Record, decode_frame};
use crate::header::LogHeader;
use crate::{MAGIC, VERSION, varint};

/// The largest header accepted.
const MAX_HEADER: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum LogError {
    #[error("I/O error reading the log: {0}")]
    Io(#[from] io::Error),
    #[error("not an ftvm event log (bad magic)")]
    NotALog,
    #[error("log format version {0} is not supported (this ftvm reads version {VERSION})")]
    Version(u16),
    #[error("log header is damaged: {0}")]
    Header(String),
    #[error("log is truncated in record {record} (byte {offset})")]
    Truncated { record: u64, offset: u64 },
    #[error("log record {record} (byte {offset}) is corrupt: {what}")]
    Corrupt {
        record: u64,
        offset: u64,
        what: String,
    },
}

pub struct Reader<R: Read> {
    input: BufReader<R>,
    header: LogHeader,
    offset: u64,
    record: u64,
    icount: u64,
    done: bool,
}

/// Checks the fixed part of a log's start (magic, version) and returns the header's length.
pub(crate) fn header_len(fixed: &[u8; 14]) -> Result<usize, LogError> {
    if &fixed[..8] != MAGIC {
        return Err(LogError::NotALog);
    }
    let version = u16::from_le_bytes([fixed[8], fixed[9]]);
    if version != VERSION {
        return Err(LogError::Version(version));
    }
    let len = u32::from_le_bytes([fixed[10], fixed[11], fixed[12], fixed[13]]) as usize;
    if len > MAX_HEADER {
        return Err(LogError::Header(format!("header length {len}")));
    }
    Ok(len)
}

/// Decodes the header from the fixed part and the `len + 4` bytes after it (header, CRC).
pub(crate) fn decode_header(fixed: &[u8; 14], rest: &[u8]) -> Result<LogHeader, LogError> {
    let len = rest.len() - 4;
    let mut checked = fixed[10..14].to_vec();
    checked.extend_from_slice(&rest[..len]);
    let crc = u32::from_le_bytes(rest[len..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&checked) != crc {
        return Err(LogError::Header("checksum mismatch".into()));
    }
    postcard::from_bytes(&rest[..len]).map_err(|e| LogError::Header(e.to_string()))
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean end of stream before the first byte.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl<R: Read> Reader<R> {
    /// Opens a log: checks the magic, version and header.
    pub fn new(input: R) -> Result<Self, LogError> {
        let mut input = BufReader::new(input);
        let mut fixed = [0u8; 14];
        match read_full(&mut input, &mut fixed) {
            Ok(true) => {}
            Ok(false) => return Err(LogError::NotALog),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(LogError::NotALog),
            Err(e) => return Err(e.into()),
        }
        let len = header_len(&fixed)?;
        let mut rest = vec![0u8; len + 4];
        if !matches!(read_full(&mut input, &mut rest), Ok(true)) {
            return Err(LogError::Header("truncated".into()));
        }
        let header = decode_header(&fixed, &rest)?;
        Ok(Reader {
            input,
            header,
            offset: 18 + len as u64,
            record: 0,
            icount: 0,
            done: false,
        })
    }

    pub fn header(&self) -> &LogHeader {
        &self.header
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn next_record(&mut self) -> Result<Option<Record>, LogError> {
        let (record, offset) = (self.record, self.offset);
        let truncated = || LogError::Truncated { record, offset };
        let corrupt = |what: String| LogError::Corrupt {
            record,
            offset,
            what,
        };
        let io = |e: io::Error| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                truncated()
            } else {
                LogError::Io(e)
            }
        };

        let mut frame = Vec::with_capacity(32);
        let mut kind = [0u8];
        if !read_full(&mut self.input, &mut kind).map_err(io)? {
            return Ok(None);
        }
        frame.push(kind[0]);
        let mut varints = [0u64; 2];
        for v in &mut varints {
            let start = frame.len();
            loop {
                let mut b = [0u8];
                if !read_full(&mut self.input, &mut b).map_err(io)? {
                    return Err(truncated());
                }
                frame.push(b[0]);
                if b[0] & 0x80 == 0 {
                    break;
                }
                if frame.len() - start >= 10 {
                    return Err(corrupt("over-long integer".into()));
                }
            }
            *v = varint::get(&frame[start..])
                .ok_or_else(|| corrupt("bad integer".into()))?
                .0;
        }
        let len = varints[1];
        if len > MAX_PAYLOAD as u64 {
            return Err(corrupt(format!(
                "payload length {len} exceeds {MAX_PAYLOAD}"
            )));
        }
        let head = frame.len();
        frame.resize(head + len as usize + 4, 0);
        if !read_full(&mut self.input, &mut frame[head..]).map_err(io)? {
            return Err(truncated());
        }
        let (rec, used) = match decode_frame(&frame, self.icount) {
            Ok(Some(done)) => done,
            Ok(None) => return Err(truncated()),
            Err(what) => return Err(corrupt(what)),
        };
        debug_assert_eq!(used, frame.len());
        self.icount = rec.icount();
        self.offset += frame.len() as u64;
        self.record += 1;
        Ok(Some(rec))
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Record, LogError>;

    /// The next record; after an error the iterator ends.
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.next_record().transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}
