//! A log decoded as its bytes arrive: the FT backup's view of the logging channel when it is
//! driven step by step (the simulator) rather than by a blocking reader thread.

use crate::format::{Record, decode_frame};
use crate::header::LogHeader;
use crate::reader::{LogError, decode_header, header_len};

/// Bytes held beyond the records taken: at most one frame's worth plus what arrived since, so
/// the buffer is bounded by what the peer sent, never by what it claims.
pub struct Stream {
    buf: Vec<u8>,
    /// Bytes of `buf` already decoded (dropped lazily, so a step costs no copy per record).
    used: usize,
    header: Option<LogHeader>,
    offset: u64,
    record: u64,
    icount: u64,
}

impl Default for Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Stream {
    pub fn new() -> Stream {
        Stream {
            buf: Vec::new(),
            used: 0,
            header: None,
            offset: 0,
            record: 0,
            icount: 0,
        }
    }

    /// More of the log.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.used > 0 && self.used * 2 >= self.buf.len() {
            self.buf.drain(..self.used);
            self.used = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The log's header, once it has arrived whole.
    pub fn header(&self) -> Option<&LogHeader> {
        self.header.as_ref()
    }

    /// Log bytes decoded so far (header and whole records).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes pushed and not yet decoded: part of a record still arriving.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.used
    }

    /// The next whole record, `Ok(None)` until more bytes arrive. After an error the stream is
    /// unusable (the peer sent a damaged log).
    pub fn next_record(&mut self) -> Result<Option<Record>, LogError> {
        if self.header.is_none() && !self.take_header()? {
            return Ok(None);
        }
        let (record, offset) = (self.record, self.offset);
        match decode_frame(&self.buf[self.used..], self.icount) {
            Ok(None) => Ok(None),
            Ok(Some((rec, n))) => {
                self.used += n;
                self.offset += n as u64;
                self.record += 1;
                self.icount = rec.icount();
                Ok(Some(rec))
            }
            Err(what) => Err(LogError::Corrupt {
                record,
                offset,
                what,
            }),
        }
    }

    fn take_header(&mut self) -> Result<bool, LogError> {
        let avail = &self.buf[self.used..];
        let Some(fixed) = avail.get(..14) else {
            return Ok(false);
        };
        let fixed: [u8; 14] = fixed.try_into().expect("14 bytes");
        let len = header_len(&fixed)?;
        let Some(rest) = avail.get(14..18 + len) else {
            return Ok(false);
        };
        self.header = Some(decode_header(&fixed, rest)?);
        self.used += 18 + len;
        self.offset = (18 + len) as u64;
        Ok(true)
    }
}
