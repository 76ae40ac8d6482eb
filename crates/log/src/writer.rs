//! Appending records to a log stream.

use std::io::{self, Write};

use crate::format::{MAX_PAYLOAD, Record};
use crate::header::LogHeader;
use crate::{MAGIC, VERSION, varint};

pub struct Writer<W: Write> {
    out: W,
    last_icount: u64,
    frame: Vec<u8>,
    bytes: u64,
    records: u64,
}

impl<W: Write> Writer<W> {
    /// Starts a log: writes the magic, version and header.
    pub fn new(mut out: W, header: &LogHeader) -> io::Result<Self> {
        let body = postcard::to_stdvec(header).map_err(io::Error::other)?;
        let mut head = Vec::with_capacity(body.len() + 18);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&(body.len() as u32).to_le_bytes());
        head.extend_from_slice(&body);
        head.extend_from_slice(&crc32c::crc32c(&head[10..]).to_le_bytes());
        out.write_all(&head)?;
        Ok(Writer {
            out,
            last_icount: 0,
            frame: Vec::new(),
            bytes: head.len() as u64,
            records: 0,
        })
    }

    /// Appends one record. Instruction counts must not decrease.
    pub fn append(&mut self, record: &Record) -> io::Result<()> {
        let icount = record.icount();
        if icount < self.last_icount {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "record at instruction {icount} after one at {}",
                    self.last_icount
                ),
            ));
        }
        let (kind, payload) = record.body();
        if payload.len() > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "record payload too large",
            ));
        }
        self.frame.clear();
        self.frame.push(kind);
        varint::put(&mut self.frame, icount - self.last_icount);
        varint::put(&mut self.frame, payload.len() as u64);
        self.frame.extend_from_slice(&payload);
        let crc = crc32c::crc32c(&self.frame);
        self.frame.extend_from_slice(&crc.to_le_bytes());
        self.out.write_all(&self.frame)?;
        self.last_icount = icount;
        self.bytes += self.frame.len() as u64;
        self.records += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Bytes written so far, header included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}
