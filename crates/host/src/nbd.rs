//! A shared disk over the network: a small synchronous NBD client (`--disk nbd://HOST:PORT/NAME`).
//!
//! Why our own: the client side of NBD is a few hundred lines, the crates that exist are early
//! or server-only, and this one must treat every byte of the server as untrusted (bounded
//! replies, chunks inside the request, handles matched) and keep a VM's disk through a dropped
//! connection.
//!
//! Protocol (NetworkBlockDevice's proto.md): fixed newstyle handshake, `NBD_OPT_STRUCTURED_REPLY`
//! (read errors arrive cleanly, holes as holes), `NBD_OPT_GO` with the export and block-size
//! info; then one request at a time: READ, WRITE (FUA on request), FLUSH, TRIM.
//!
//! Invariants: a request is answered with its own handle or the connection is dropped; a read
//! is complete (every byte covered once by the server's chunks) or it fails; a connection
//! lost mid-request is reopened and the request issued again (each is idempotent, and only one
//! is ever in flight) until the patience runs out, then the guest sees an I/O error, never a
//! write reported as done that was not.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::io::BlockBackend;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
const FLAG_NO_ZEROES: u16 = 1 << 1;

const OPT_GO: u32 = 7;
const OPT_STRUCTURED_REPLY: u32 = 8;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_ERROR_BIT: u32 = 1 << 31;
const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;

const TFLAG_READ_ONLY: u16 = 1 << 1;
const TFLAG_SEND_FLUSH: u16 = 1 << 2;
const TFLAG_SEND_FUA: u16 = 1 << 3;
const TFLAG_SEND_TRIM: u16 = 1 << 5;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const CMD_TRIM: u16 = 4;
const CMD_FLAG_FUA: u16 = 1 << 0;

const REPLY_FLAG_DONE: u16 = 1 << 0;
const CHUNK_NONE: u16 = 0;
const CHUNK_OFFSET_DATA: u16 = 1;
const CHUNK_OFFSET_HOLE: u16 = 2;
const CHUNK_ERROR_BIT: u16 = 1 << 15;

/// The most the server may send in one option reply (its strings are at most 4 KiB).
const MAX_OPTION_REPLY: u32 = 64 << 10;
/// The largest request this client makes; larger reads and writes go in pieces.
const MAX_REQUEST: usize = 4 << 20;
/// A read answered in more pieces than this is refused (a server that fragments absurdly).
const MAX_CHUNKS: usize = 4096;
/// NBD's ESHUTDOWN: the server is going away; try another connection.
const ESHUTDOWN: u32 = 108;

#[derive(Debug, Error)]
pub enum NbdError {
    #[error("{0}: not an NBD address (nbd://HOST[:PORT]/EXPORT)")]
    Url(String),
    #[error("cannot reach the NBD server at {0}: {1}")]
    Connect(String, io::Error),
    #[error("NBD server at {addr}: {why}")]
    Protocol { addr: String, why: String },
    #[error("NBD server at {addr} refused export {export:?}: {why}")]
    Refused {
        addr: String,
        export: String,
        why: String,
    },
}

/// Where a disk is: `nbd://HOST[:PORT]/EXPORT` (port 10809 if none is given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdTarget {
    pub addr: String,
    pub export: String,
}

impl NbdTarget {
    pub fn parse(url: &str) -> Result<NbdTarget, NbdError> {
        let bad = || NbdError::Url(url.to_string());
        let rest = url.strip_prefix("nbd://").ok_or_else(bad)?;
        let (host, export) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() || export.contains('\0') || export.len() > 4096 {
            return Err(bad());
        }
        let has_port = match host.rsplit_once(':') {
            Some((h, p)) => !h.ends_with(':') && p.parse::<u16>().is_ok(),
            None => false,
        };
        let addr = if has_port {
            host.to_string()
        } else {
            format!("{host}:10809")
        };
        Ok(NbdTarget {
            addr,
            export: export.to_string(),
        })
    }

    /// A short name for the export (lock records, messages).
    pub fn name(&self) -> &str {
        if self.export.is_empty() {
            "nbd"
        } else {
            self.export.rsplit('/').next().unwrap_or("nbd")
        }
    }
}

/// What a request came to.
enum Failure {
    /// The connection or the server's bytes failed: open another, issue it again.
    Link(String),
    /// The server answered with an error: the guest's request failed.
    Server(u32, String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Link(e.to_string())
    }
}

/// One connection in the transmission phase.
struct Session {
    stream: TcpStream,
    size: u64,
    flags: u16,
    structured: bool,
    handle: u64,
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    io::copy(&mut r.take(n), &mut io::sink()).and_then(|got| {
        if got == n {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    })
}

/// A string the server sent (an error message), shown safely.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(256)
        .collect()
}

impl Session {
    fn open(target: &NbdTarget, patience: Duration) -> Result<Session, NbdError> {
        let addr = target.addr.clone();
        let connect_err = |e| NbdError::Connect(addr.clone(), e);
        let sock = target
            .addr
            .to_socket_addrs()
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| connect_err(io::ErrorKind::NotFound.into()))?;
        let stream =
            TcpStream::connect_timeout(&sock, Duration::from_secs(5)).map_err(connect_err)?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(patience))
            .and_then(|_| stream.set_write_timeout(Some(patience)))
            .map_err(connect_err)?;
        let proto = |why: String| NbdError::Protocol {
            addr: addr.clone(),
            why,
        };
        let io_err = |e: io::Error| proto(format!("during the handshake: {e}"));
        let mut s = stream;
        if read_u64(&mut s).map_err(io_err)? != NBDMAGIC {
            return Err(proto("not an NBD server (no NBDMAGIC)".into()));
        }
        if read_u64(&mut s).map_err(io_err)? != IHAVEOPT {
            return Err(proto(
                "an old-style server: fixed newstyle is needed".into(),
            ));
        }
        let hflags = read_u16(&mut s).map_err(io_err)?;
        if hflags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(proto("the server does not offer fixed newstyle".into()));
        }
        let cflags = u32::from(FLAG_FIXED_NEWSTYLE | (hflags & FLAG_NO_ZEROES));
        s.write_all(&cflags.to_be_bytes()).map_err(io_err)?;

        send_option(&mut s, OPT_STRUCTURED_REPLY, &[]).map_err(io_err)?;
        let mut structured = false;
        loop {
            let (kind, data) = read_option_reply(&mut s, OPT_STRUCTURED_REPLY).map_err(proto)?;
            match kind {
                REP_ACK => {
                    structured = true;
                    break;
                }
                k if k & REP_ERROR_BIT != 0 => break,
                _ => drop(data),
            }
        }

        let name = target.export.as_bytes();
        let mut go = Vec::with_capacity(8 + name.len());
        go.extend_from_slice(&(name.len() as u32).to_be_bytes());
        go.extend_from_slice(name);
        go.extend_from_slice(&1u16.to_be_bytes());
        go.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        send_option(&mut s, OPT_GO, &go).map_err(io_err)?;
        let mut export: Option<(u64, u16)> = None;
        loop {
            let (kind, data) = read_option_reply(&mut s, OPT_GO).map_err(proto)?;
            match kind {
                REP_ACK => break,
                REP_INFO
                    if data.len() >= 2 && u16::from_be_bytes([data[0], data[1]]) == INFO_EXPORT =>
                {
                    if data.len() != 12 {
                        return Err(proto("a malformed export info".into()));
                    }
                    let size = u64::from_be_bytes(data[2..10].try_into().expect("8 bytes"));
                    let flags = u16::from_be_bytes([data[10], data[11]]);
                    export = Some((size, flags));
                }
                k if k & REP_ERROR_BIT != 0 => {
                    return Err(NbdError::Refused {
                        addr: addr.clone(),
                        export: target.export.clone(),
                        why: format!("{} (error {:#x})", shown(&data), k),
                    });
                }
                _ => {}
            }
        }
        let (size, flags) = export.ok_or_else(|| proto("no export size was sent".into()))?;
        if size == 0 || !size.is_multiple_of(512) {
            return Err(proto(format!(
                "the export is {size} bytes, not a whole number of 512-byte sectors"
            )));
        }
        if flags & TFLAG_READ_ONLY != 0 {
            return Err(NbdError::Refused {
                addr,
                export: target.export.clone(),
                why: "it is read-only; a VM's disk must be writable".into(),
            });
        }
        Ok(Session {
            stream: s,
            size,
            flags,
            structured,
            handle: 0,
        })
    }

    fn send(
        &mut self,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u32,
        data: &[u8],
    ) -> io::Result<u64> {
        self.handle = self.handle.wrapping_add(1);
        let mut head = Vec::with_capacity(28 + data.len());
        head.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        head.extend_from_slice(&flags.to_be_bytes());
        head.extend_from_slice(&cmd.to_be_bytes());
        head.extend_from_slice(&self.handle.to_be_bytes());
        head.extend_from_slice(&offset.to_be_bytes());
        head.extend_from_slice(&len.to_be_bytes());
        head.extend_from_slice(data);
        self.stream.write_all(&head)?;
        Ok(self.handle)
    }

    /// One request and its whole answer; `read` receives a READ's data.
    fn request(
        &mut self,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: usize,
        data: &[u8],
        mut read: Option<&mut [u8]>,
    ) -> Result<(), Failure> {
        let handle = self.send(cmd, flags, offset, len as u32, data)?;
        let mut covered: Vec<(u64, u64)> = Vec::new();
        let mut error: Option<(u32, String)> = None;
        loop {
            let magic = read_u32(&mut self.stream)?;
            match magic {
                SIMPLE_REPLY_MAGIC => {
                    let errno = read_u32(&mut self.stream)?;
                    if read_u64(&mut self.stream)? != handle {
                        return Err(Failure::Link("a reply to another request".into()));
                    }
                    if errno != 0 {
                        return Err(Failure::Server(errno, String::new()));
                    }
                    if let Some(buf) = read.as_deref_mut() {
                        self.stream.read_exact(buf)?;
                    }
                    return Ok(());
                }
                STRUCTURED_REPLY_MAGIC if self.structured => {
                    let chunk_flags = read_u16(&mut self.stream)?;
                    let kind = read_u16(&mut self.stream)?;
                    if read_u64(&mut self.stream)? != handle {
                        return Err(Failure::Link("a reply to another request".into()));
                    }
                    let length = read_u32(&mut self.stream)? as u64;
                    self.chunk(
                        kind,
                        length,
                        offset,
                        len,
                        &mut read,
                        &mut covered,
                        &mut error,
                    )?;
                    if chunk_flags & REPLY_FLAG_DONE != 0 {
                        break;
                    }
                }
                m => return Err(Failure::Link(format!("a reply with magic {m:#x}"))),
            }
        }
        if let Some((errno, why)) = error {
            return Err(Failure::Server(errno, why));
        }
        if read.is_some() {
            covered.sort_unstable();
            let mut at = offset;
            for (start, n) in covered {
                if start != at {
                    return Err(Failure::Link(
                        "a read answered with gaps or overlaps".into(),
                    ));
                }
                at += n;
            }
            if at != offset + len as u64 {
                return Err(Failure::Link("a read answered short".into()));
            }
        }
        Ok(())
    }

    /// One chunk of a structured reply to the request at `offset`, `len` bytes.
    #[allow(clippy::too_many_arguments)]
    fn chunk(
        &mut self,
        kind: u16,
        length: u64,
        offset: u64,
        len: usize,
        read: &mut Option<&mut [u8]>,
        covered: &mut Vec<(u64, u64)>,
        error: &mut Option<(u32, String)>,
    ) -> Result<(), Failure> {
        let bad = |why: &str| Err(Failure::Link(why.to_string()));
        let end = offset + len as u64;
        // Where `n` bytes from `at` go in the caller's buffer, if they lie inside the request.
        let place = |at: u64, n: u64| -> Option<std::ops::Range<usize>> {
            let from = at.checked_sub(offset)?;
            (n > 0 && at.checked_add(n)? <= end).then(|| from as usize..(from + n) as usize)
        };
        match kind {
            CHUNK_NONE if length == 0 => Ok(()),
            CHUNK_OFFSET_DATA if read.is_some() && length >= 9 => {
                let at = read_u64(&mut self.stream)?;
                let Some(range) = place(at, length - 8) else {
                    return bad("data outside the request");
                };
                if covered.len() >= MAX_CHUNKS {
                    return bad("a read in too many pieces");
                }
                let buf = read.as_deref_mut().expect("a read");
                self.stream.read_exact(&mut buf[range])?;
                covered.push((at, length - 8));
                Ok(())
            }
            CHUNK_OFFSET_HOLE if read.is_some() && length == 12 => {
                let at = read_u64(&mut self.stream)?;
                let n = read_u32(&mut self.stream)? as u64;
                let Some(range) = place(at, n) else {
                    return bad("a hole outside the request");
                };
                if covered.len() >= MAX_CHUNKS {
                    return bad("a read in too many pieces");
                }
                read.as_deref_mut().expect("a read")[range].fill(0);
                covered.push((at, n));
                Ok(())
            }
            k if k & CHUNK_ERROR_BIT != 0 && (6..=6 + 4096 + 8).contains(&length) => {
                let errno = read_u32(&mut self.stream)?;
                let n = read_u16(&mut self.stream)? as u64;
                if n > length - 6 {
                    return bad("an error message longer than its chunk");
                }
                let mut msg = vec![0u8; n as usize];
                self.stream.read_exact(&mut msg)?;
                skip(&mut self.stream, length - 6 - n)?;
                error.get_or_insert((errno.max(1), shown(&msg)));
                Ok(())
            }
            _ => bad(&format!(
                "an unexpected reply chunk (type {kind}, {length} bytes)"
            )),
        }
    }
}

fn send_option(s: &mut TcpStream, option: u32, data: &[u8]) -> io::Result<()> {
    let mut m = Vec::with_capacity(16 + data.len());
    m.extend_from_slice(&IHAVEOPT.to_be_bytes());
    m.extend_from_slice(&option.to_be_bytes());
    m.extend_from_slice(&(data.len() as u32).to_be_bytes());
    m.extend_from_slice(data);
    s.write_all(&m)
}

/// An option reply: its type and data (bounded).
fn read_option_reply(s: &mut TcpStream, option: u32) -> Result<(u32, Vec<u8>), String> {
    let e = |e: io::Error| format!("during the handshake: {e}");
    if read_u64(s).map_err(e)? != OPTION_REPLY_MAGIC {
        return Err("a malformed option reply".into());
    }
    if read_u32(s).map_err(e)? != option {
        return Err("a reply to another option".into());
    }
    let kind = read_u32(s).map_err(e)?;
    let len = read_u32(s).map_err(e)?;
    if len > MAX_OPTION_REPLY {
        return Err(format!("an option reply of {len} bytes"));
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data).map_err(e)?;
    Ok((kind, data))
}

/// Counts of what the client had to do, for the operator.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NbdStats {
    pub requests: u64,
    /// Connections opened again after one failed.
    pub reconnects: u64,
    /// Requests issued again on a new connection.
    pub reissued: u64,
}

/// A VM disk served by an NBD server.
pub struct NbdDisk {
    target: NbdTarget,
    session: Option<Session>,
    size: u64,
    /// How long a request may keep failing on lost connections before the guest sees EIO.
    patience: Duration,
    /// Writes with FUA (each durable before it is answered) instead of relying on FLUSH.
    pub fua: bool,
    pub stats: NbdStats,
}

impl NbdDisk {
    /// Connects to `url` (`nbd://HOST[:PORT]/EXPORT`); the disk and its size in bytes.
    pub fn open(url: &str) -> Result<(NbdDisk, u64), NbdError> {
        Self::open_with(NbdTarget::parse(url)?, Duration::from_secs(30))
    }

    pub fn open_with(target: NbdTarget, patience: Duration) -> Result<(NbdDisk, u64), NbdError> {
        let session = Session::open(&target, patience)?;
        let size = session.size;
        Ok((
            NbdDisk {
                target,
                session: Some(session),
                size,
                patience,
                fua: false,
                stats: NbdStats::default(),
            },
            size,
        ))
    }

    pub fn target(&self) -> &NbdTarget {
        &self.target
    }

    /// Tells the server the bytes are no longer needed (if it takes TRIM; else nothing).
    pub fn trim(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(MAX_REQUEST as u64);
            self.run(|s| {
                if s.flags & TFLAG_SEND_TRIM == 0 {
                    return Ok(());
                }
                s.request(CMD_TRIM, 0, at, n as usize, &[], None)
            })?;
            at += n;
        }
        Ok(())
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{len} bytes at {offset} lie beyond the export's {} bytes",
                    self.size
                ),
            )),
        }
    }

    /// Runs `op` on a live session, opening one again and reissuing `op` when the connection
    /// fails, until the patience runs out.
    fn run(&mut self, mut op: impl FnMut(&mut Session) -> Result<(), Failure>) -> io::Result<()> {
        let deadline = Instant::now() + self.patience;
        let mut last = String::new();
        let mut tries = 0u32;
        loop {
            if self.session.is_none() {
                if tries > 0 && Instant::now() >= deadline {
                    return Err(io::Error::other(format!(
                        "the NBD server at {} is lost: {last}",
                        self.target.addr
                    )));
                }
                match Session::open(&self.target, self.patience) {
                    Ok(s) if s.size == self.size => {
                        self.stats.reconnects += 1;
                        self.session = Some(s);
                    }
                    Ok(s) => {
                        return Err(io::Error::other(format!(
                            "the export {:?} changed size from {} to {} bytes",
                            self.target.export, self.size, s.size
                        )));
                    }
                    Err(e) => {
                        last = e.to_string();
                        tries += 1;
                        let left = deadline.saturating_duration_since(Instant::now());
                        let backoff = Duration::from_millis((50 << tries.min(5)).min(1000));
                        std::thread::sleep(backoff.min(left));
                        continue;
                    }
                }
            }
            let session = self.session.as_mut().expect("a session");
            self.stats.requests += 1;
            if tries > 0 {
                self.stats.reissued += 1;
            }
            match op(session) {
                Ok(()) => return Ok(()),
                Err(Failure::Server(ESHUTDOWN, why)) | Err(Failure::Link(why)) => {
                    last = why;
                    self.session = None;
                    tries += 1;
                }
                Err(Failure::Server(errno, why)) => {
                    let e = io::Error::from_raw_os_error(errno as i32);
                    return Err(if why.is_empty() {
                        e
                    } else {
                        io::Error::new(e.kind(), format!("{e}: {why}"))
                    });
                }
            }
        }
    }
}

impl BlockBackend for NbdDisk {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        for (i, piece) in buf.chunks_mut(MAX_REQUEST).enumerate() {
            let at = offset + (i * MAX_REQUEST) as u64;
            self.run(|s| s.request(CMD_READ, 0, at, piece.len(), &[], Some(piece)))?;
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(offset, data.len() as u64)?;
        let fua = self.fua;
        for (i, piece) in data.chunks(MAX_REQUEST).enumerate() {
            let at = offset + (i * MAX_REQUEST) as u64;
            self.run(|s| {
                let flags = if fua && s.flags & TFLAG_SEND_FUA != 0 {
                    CMD_FLAG_FUA
                } else {
                    0
                };
                s.request(CMD_WRITE, flags, at, piece.len(), piece, None)
            })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.run(|s| {
            if s.flags & TFLAG_SEND_FLUSH == 0 {
                // The server says it has no cache to flush.
                return Ok(());
            }
            s.request(CMD_FLUSH, 0, 0, 0, &[], None)
        })
    }
}

impl Drop for NbdDisk {
    fn drop(&mut self) {
        if let Some(s) = &mut self.session {
            let _ = s.send(CMD_DISC, 0, 0, 0, &[]);
        }
    }
}

/// Any byte string as what an NBD server sends: with a first byte even, as its handshake;
/// odd, as its replies to a read after a valid handshake. Errors, never a panic, a hang or a
/// buffer beyond the request.
pub fn fuzz_nbd(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") else {
        return;
    };
    let Ok(at) = l.local_addr() else { return };
    let mut script = Vec::new();
    if mode % 2 == 1 {
        script.extend_from_slice(&NBDMAGIC.to_be_bytes());
        script.extend_from_slice(&IHAVEOPT.to_be_bytes());
        script.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        let reply = |s: &mut Vec<u8>, opt: u32, kind: u32, d: &[u8]| {
            s.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
            s.extend_from_slice(&opt.to_be_bytes());
            s.extend_from_slice(&kind.to_be_bytes());
            s.extend_from_slice(&(d.len() as u32).to_be_bytes());
            s.extend_from_slice(d);
        };
        reply(&mut script, OPT_STRUCTURED_REPLY, REP_ACK, &[]);
        let mut info = INFO_EXPORT.to_be_bytes().to_vec();
        info.extend_from_slice(&(1u64 << 20).to_be_bytes());
        info.extend_from_slice(&(TFLAG_SEND_FLUSH | 1).to_be_bytes());
        reply(&mut script, OPT_GO, REP_INFO, &info);
        reply(&mut script, OPT_GO, REP_ACK, &[]);
    }
    script.extend_from_slice(data);
    let server = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            // One connection: a reconnect finds nobody.
            drop(l);
            let _ = s.write_all(&script);
            let _ = s.shutdown(std::net::Shutdown::Write);
            // Drain what the client sends until it goes.
            let _ = io::copy(&mut s, &mut io::sink());
        }
    });
    let target = NbdTarget {
        addr: at.to_string(),
        export: "fuzz".into(),
    };
    // Reconnects find nobody: the patience is short and the listener gone.
    if let Ok((mut d, size)) = NbdDisk::open_with(target, Duration::from_millis(20)) {
        assert_eq!(size, 1 << 20, "a size nobody sent");
        let mut buf = vec![0u8; 4096];
        let _ = d.read_at(0, &mut buf);
    }
    let _ = server.join();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn garbage_from_a_server_is_an_error_not_a_panic() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for round in 0..200u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 120) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            bytes.insert(0, round as u8);
            // Some replies start right: a structured reply for the read's handle.
            if round % 4 == 1 {
                let mut head = STRUCTURED_REPLY_MAGIC.to_be_bytes().to_vec();
                head.extend_from_slice(&(x as u16).to_be_bytes());
                head.extend_from_slice(&((x >> 16) as u16 % 3).to_be_bytes());
                head.extend_from_slice(&1u64.to_be_bytes());
                head.extend_from_slice(&((x >> 32) as u32 % 5000).to_be_bytes());
                bytes.splice(1..1, head);
            }
            fuzz_nbd(&bytes);
        }
    }
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    // A scripted server: a valid handshake, then `answer` writes what it likes per request.

    fn server_handshake(s: &mut TcpStream, size: u64, structured: bool) {
        s.write_all(&NBDMAGIC.to_be_bytes()).unwrap();
        s.write_all(&IHAVEOPT.to_be_bytes()).unwrap();
        s.write_all(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes())
            .unwrap();
        let _cflags = read_u32(s).unwrap();
        loop {
            assert_eq!(read_u64(s).unwrap(), IHAVEOPT);
            let opt = read_u32(s).unwrap();
            let len = read_u32(s).unwrap();
            skip(s, len as u64).unwrap();
            let reply = |s: &mut TcpStream, kind: u32, data: &[u8]| {
                s.write_all(&OPTION_REPLY_MAGIC.to_be_bytes()).unwrap();
                s.write_all(&opt.to_be_bytes()).unwrap();
                s.write_all(&kind.to_be_bytes()).unwrap();
                s.write_all(&(data.len() as u32).to_be_bytes()).unwrap();
                s.write_all(data).unwrap();
            };
            if opt == OPT_STRUCTURED_REPLY {
                reply(
                    s,
                    if structured {
                        REP_ACK
                    } else {
                        REP_ERROR_BIT | 1
                    },
                    &[],
                );
                continue;
            }
            let mut info = INFO_EXPORT.to_be_bytes().to_vec();
            info.extend_from_slice(&size.to_be_bytes());
            info.extend_from_slice(&(TFLAG_SEND_FLUSH | 1).to_be_bytes());
            reply(s, REP_INFO, &info);
            reply(s, REP_ACK, &[]);
            return;
        }
    }

    struct Request {
        cmd: u16,
        handle: u64,
        offset: u64,
        len: u32,
    }

    fn next_request(s: &mut TcpStream) -> Option<Request> {
        let magic = read_u32(s).ok()?;
        assert_eq!(magic, REQUEST_MAGIC);
        let _flags = read_u16(s).ok()?;
        let cmd = read_u16(s).ok()?;
        let handle = read_u64(s).ok()?;
        let offset = read_u64(s).ok()?;
        let len = read_u32(s).ok()?;
        if cmd == CMD_WRITE {
            skip(s, len as u64).ok()?;
        }
        Some(Request {
            cmd,
            handle,
            offset,
            len,
        })
    }

    fn chunk(s: &mut TcpStream, flags: u16, kind: u16, handle: u64, payload: &[u8]) {
        s.write_all(&STRUCTURED_REPLY_MAGIC.to_be_bytes()).unwrap();
        s.write_all(&flags.to_be_bytes()).unwrap();
        s.write_all(&kind.to_be_bytes()).unwrap();
        s.write_all(&handle.to_be_bytes()).unwrap();
        s.write_all(&(payload.len() as u32).to_be_bytes()).unwrap();
        s.write_all(payload).unwrap();
    }

    /// Serves connections one after another; `answer(connection, stream, request)` answers.
    fn fake_server(
        size: u64,
        answer: impl Fn(usize, &mut TcpStream, Request) -> bool + Send + 'static,
    ) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for (n, s) in l.incoming().enumerate() {
                let Ok(mut s) = s else { return };
                server_handshake(&mut s, size, true);
                while let Some(r) = next_request(&mut s) {
                    if r.cmd == CMD_DISC || !answer(n, &mut s, r) {
                        break;
                    }
                }
            }
        });
        format!("nbd://{at}/disk")
    }

    #[test]
    fn urls_name_a_server_and_an_export() {
        let t = NbdTarget::parse("nbd://storage:10810/vm/root").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.export.as_str(), t.name()),
            ("storage:10810", "vm/root", "root")
        );
        let t = NbdTarget::parse("nbd://10.0.0.5").unwrap();
        assert_eq!((t.addr.as_str(), t.export.as_str()), ("10.0.0.5:10809", ""));
        assert!(NbdTarget::parse("/var/disk.img").is_err());
        assert!(NbdTarget::parse("nbd:///x").is_err());
    }

    /// Data in two chunks out of order, and a hole: the read is whole.
    #[test]
    fn a_read_in_chunks_and_holes_is_put_together() {
        let url = fake_server(1 << 20, |_, s, r| {
            let mid = r.offset + r.len as u64 / 2;
            let mut second = mid.to_be_bytes().to_vec();
            second.extend(std::iter::repeat_n(0xbb, (r.len / 4) as usize));
            chunk(s, 0, CHUNK_OFFSET_DATA, r.handle, &second);
            let mut first = r.offset.to_be_bytes().to_vec();
            first.extend(std::iter::repeat_n(0xaa, (r.len / 2) as usize));
            chunk(s, 0, CHUNK_OFFSET_DATA, r.handle, &first);
            let mut hole = (mid + r.len as u64 / 4).to_be_bytes().to_vec();
            hole.extend_from_slice(&(r.len / 4).to_be_bytes());
            chunk(s, REPLY_FLAG_DONE, CHUNK_OFFSET_HOLE, r.handle, &hole);
            true
        });
        let (mut d, size) = NbdDisk::open(&url).unwrap();
        assert_eq!(size, 1 << 20);
        let mut buf = vec![0x11u8; 4096];
        d.read_at(8192, &mut buf).unwrap();
        assert!(buf[..2048].iter().all(|&b| b == 0xaa));
        assert!(buf[2048..3072].iter().all(|&b| b == 0xbb));
        assert!(buf[3072..].iter().all(|&b| b == 0));
    }

    type Answer = dyn Fn(&mut TcpStream, &Request) + Send + Sync;

    /// What a hostile or broken server sends is refused, never a panic or a read past the
    /// request; an error chunk is the guest's I/O error at once.
    #[test]
    fn a_lying_server_gets_errors_not_trust() {
        let cases: Vec<(&str, Box<Answer>)> = vec![
            (
                "data outside the request",
                Box::new(|s, r| {
                    let mut p = (r.offset + (1 << 19)).to_be_bytes().to_vec();
                    p.extend_from_slice(&[1; 16]);
                    chunk(s, REPLY_FLAG_DONE, CHUNK_OFFSET_DATA, r.handle, &p);
                }),
            ),
            (
                "a reply to another request",
                Box::new(|s, r| {
                    chunk(s, REPLY_FLAG_DONE, CHUNK_NONE, r.handle + 7, &[]);
                }),
            ),
            (
                "a read answered short",
                Box::new(|s, r| {
                    let mut p = r.offset.to_be_bytes().to_vec();
                    p.extend_from_slice(&[1; 16]);
                    chunk(s, REPLY_FLAG_DONE, CHUNK_OFFSET_DATA, r.handle, &p);
                }),
            ),
            (
                "gaps or overlaps",
                Box::new(|s, r| {
                    for _ in 0..2 {
                        let mut p = r.offset.to_be_bytes().to_vec();
                        p.extend(std::iter::repeat_n(1, (r.len / 2) as usize));
                        chunk(s, 0, CHUNK_OFFSET_DATA, r.handle, &p);
                    }
                    chunk(s, REPLY_FLAG_DONE, CHUNK_NONE, r.handle, &[]);
                }),
            ),
            (
                "magic",
                Box::new(|s, _| {
                    s.write_all(&[0xde, 0xad, 0xbe, 0xef]).unwrap();
                }),
            ),
            (
                "unexpected reply chunk",
                Box::new(|s, r| {
                    // A chunk claiming 4 GiB of payload.
                    s.write_all(&STRUCTURED_REPLY_MAGIC.to_be_bytes()).unwrap();
                    s.write_all(&REPLY_FLAG_DONE.to_be_bytes()).unwrap();
                    s.write_all(&5u16.to_be_bytes()).unwrap();
                    s.write_all(&r.handle.to_be_bytes()).unwrap();
                    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
                }),
            ),
        ];
        for (why, answer) in cases {
            let url = fake_server(1 << 20, move |_, s, r| {
                answer(s, &r);
                true
            });
            let target = NbdTarget::parse(&url).unwrap();
            let (mut d, _) = NbdDisk::open_with(target, Duration::from_millis(300)).unwrap();
            let mut buf = vec![0u8; 4096];
            let e = d.read_at(0, &mut buf).unwrap_err();
            assert!(e.to_string().contains(why), "{why}: {e}");
            assert!(d.stats.reconnects >= 1, "{why}: the connection was kept");
        }
        let url = fake_server(1 << 20, |_, s, r| {
            let mut p = 5u32.to_be_bytes().to_vec();
            p.extend_from_slice(&(4u16).to_be_bytes());
            p.extend_from_slice(b"bad!");
            chunk(s, REPLY_FLAG_DONE, CHUNK_ERROR_BIT | 1, r.handle, &p);
            true
        });
        let (mut d, _) = NbdDisk::open(&url).unwrap();
        let e = d.read_at(0, &mut [0u8; 512]).unwrap_err();
        assert_eq!(e.raw_os_error(), None);
        assert!(e.to_string().contains("bad!"), "{e}");
        assert_eq!(d.stats.reconnects, 0, "a server's error is not a lost link");
        assert!(d.read_at(1 << 20, &mut [0u8; 512]).is_err(), "past the end");
    }

    /// The server drops the connection at a request: the client opens another and issues it
    /// again; the guest never sees the drop.
    #[test]
    fn a_dropped_connection_is_reopened_and_the_request_issued_again() {
        let url = fake_server(1 << 20, |conn, s, r| {
            if conn == 0 {
                return false;
            }
            let mut p = r.offset.to_be_bytes().to_vec();
            p.extend(std::iter::repeat_n(0x42, r.len as usize));
            chunk(s, REPLY_FLAG_DONE, CHUNK_OFFSET_DATA, r.handle, &p);
            true
        });
        let (mut d, _) = NbdDisk::open(&url).unwrap();
        let mut buf = vec![0u8; 1024];
        d.read_at(512, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0x42));
        assert_eq!((d.stats.reconnects, d.stats.reissued), (1, 1));
    }

    // Real servers, as a storage host would run them (scripts/test.sh installs both).

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    struct Server(Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn start(program: &str, args: &[String], port: u16) -> Server {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program} (scripts/test.sh installs it): {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{program} did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server(child)
    }

    fn qemu_nbd(image: &Path, port: u16) -> Server {
        // -e: primary and backup (and here a second probe) hold the export at once.
        let args = [
            "-f",
            "raw",
            "-x",
            "disk",
            "-b",
            "127.0.0.1",
            "-t",
            "-e",
            "8",
            "-p",
        ]
        .map(String::from)
        .into_iter()
        .chain([port.to_string(), image.display().to_string()])
        .collect::<Vec<_>>();
        start("qemu-nbd", &args, port)
    }

    #[test]
    fn qemu_nbd_serves_reads_writes_and_flushes_and_a_restart_is_ridden_out() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("shared.img");
        let mut content: Vec<u8> = (0..8u32 << 20).map(|i| (i * 13 / 7) as u8).collect();
        std::fs::write(&image, &content).unwrap();
        let port = free_port();
        let server = qemu_nbd(&image, port);
        let (mut d, size) = NbdDisk::open(&format!("nbd://127.0.0.1:{port}/disk")).unwrap();
        assert_eq!(size, 8 << 20);
        let mut buf = vec![0u8; 5 << 20];
        d.read_at(1 << 20, &mut buf).unwrap();
        assert!(
            buf == content[1 << 20..6 << 20],
            "read differs from the image"
        );
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        d.write_at(4096 * 3, &data).unwrap();
        d.flush().unwrap();
        content[4096 * 3..4096 * 3 + data.len()].copy_from_slice(&data);
        assert!(
            std::fs::read(&image).unwrap() == content,
            "the image lacks the write"
        );
        let e = NbdDisk::open(&format!("nbd://127.0.0.1:{port}/nosuch"))
            .err()
            .unwrap();
        assert!(matches!(e, NbdError::Refused { .. }), "{e}");
        // The storage host's server restarts between two requests.
        drop(server);
        let restarted = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            qemu_nbd(&image, port)
        });
        let mut again = vec![0u8; 4096];
        d.read_at(4096 * 3, &mut again).unwrap();
        assert_eq!(again[..], data[..4096]);
        assert!(d.stats.reconnects >= 1);
        drop(restarted.join().unwrap());
    }

    #[test]
    fn nbdkit_errors_reach_the_guest_and_a_slow_server_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let trigger = dir.path().join("fail-reads");
        let port = free_port();
        let args = [
            "-f",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--filter=error",
            "--filter=delay",
            "memory",
            "size=16M",
            "error-pread=EIO",
            "error-pread-rate=1",
            &format!("error-pread-file={}", trigger.display()),
            "wdelay=200ms",
        ]
        .map(String::from);
        let _server = start("nbdkit", &args, port);
        let (mut d, size) = NbdDisk::open(&format!("nbd://127.0.0.1:{port}/")).unwrap();
        assert_eq!(size, 16 << 20);
        let started = Instant::now();
        d.write_at(0, &[7u8; 8192]).unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "the delay filter is on"
        );
        let mut buf = [0u8; 8192];
        d.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, [7u8; 8192]);
        std::fs::write(&trigger, b"").unwrap();
        let e = d.read_at(0, &mut buf).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(5), "{e}");
        assert_eq!(d.stats.reconnects, 0);
        std::fs::remove_file(&trigger).unwrap();
        d.read_at(0, &mut buf).unwrap();
        d.trim(0, 4096).unwrap();
        d.flush().unwrap();
    }
}
