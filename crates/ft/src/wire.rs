//! The logging channel's messages, both ways.
//!
//! Every message is `kind: u8, length: u32 LE, payload`. The log stream itself travels opaque
//! inside `Log` messages (it is checked record by record by the backup's log reader); the
//! channel adds only what the protocol needs around it: the pair's generation, acks, heartbeats
//! and an operator's power-off. A peer is untrusted: lengths are bounded, unknown kinds and
//! short payloads are errors, never panics.

use std::io::{self, Read, Write};

use thiserror::Error;

/// The largest message accepted: bounds what a bad peer can make us allocate.
pub const MAX_MESSAGE: usize = 4 << 20;

const HELLO: u8 = 1;
const LOG: u8 = 2;
const HEARTBEAT: u8 = 3;
const ACK: u8 = 4;
const POWER_OFF: u8 = 5;
const PAGES: u8 = 6;
const STATE: u8 = 7;
const RETIRE: u8 = 8;
const CLONE_ACK: u8 = 9;
const CLONE_DONE: u8 = 10;
const MOVED_TO: u8 = 11;

/// The channel's protocol version, first in the hello: both ends must speak the same.
pub const PROTOCOL: u32 = 2;

/// The primary's first message: the pair's FT generation, the name of its lock record in the
/// shared storage (see `tiebreak`), and whether a live clone comes first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub generation: u64,
    /// RAM of the live clone that comes first (0: none, the log header names the start).
    pub clone_ram: u64,
    /// The clone becomes the primary (a migration of the primary).
    pub takeover: bool,
    /// With `takeover`: the moving primary's backup will reconnect to the new primary.
    pub backup_follows: bool,
    pub lock: String,
}

impl Hello {
    /// The hello of a pair whose backup starts from the same boot or snapshot (no clone, no
    /// move): its generation and lock record's name.
    pub fn paired(generation: u64, lock: &str) -> Hello {
        Hello {
            generation,
            clone_ram: 0,
            takeover: false,
            backup_follows: false,
            lock: lock.to_string(),
        }
    }
}

/// Primary to backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToBackup {
    /// First message (see [`Hello`]).
    Hello(Hello),
    /// A live clone's page records, zstd-compressed (see `ftvm_machine::transfer`).
    Pages(Vec<u8>),
    /// A live clone's last piece: CPU and device state. The log follows.
    State(Vec<u8>),
    /// The next bytes of the event log.
    Log(Vec<u8>),
    /// Nothing to send, still alive.
    Heartbeat,
    /// A new backup replaced this one: stop without going live (the primary took this
    /// generation's lock, so a test-and-set would lose anyway).
    Retire,
    /// The primary moves to the host whose channel is at this address: when the log ends,
    /// reconnect there and go on (an empty address cancels a move that failed).
    MovedTo(String),
}

/// Backup to primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToPrimary {
    /// The backup holds the first `received` bytes of the log, has replayed up to
    /// instruction `replayed`, and has heard the channel's first `heard` messages (log pieces
    /// and heartbeats: what tells the primary the ack is fresh). Sent as bytes arrive and as
    /// a heartbeat.
    Ack {
        received: u64,
        replayed: u64,
        heard: u64,
    },
    /// An operator asked the backup to power the pair off.
    PowerOff,
    /// A clone's receiver has this many page records (sent for every message, so it doubles
    /// as the heartbeat while the clone runs).
    CloneAck { pages: u64 },
    /// The clone's receiver rebuilt the machine and checked its state hash: acks of the log
    /// follow.
    CloneDone,
}

#[derive(Debug, Error)]
pub enum WireError {
    #[error("the logging channel failed: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the logging channel")]
    Closed,
    #[error("bad message from the peer: {0}")]
    Bad(String),
}

fn put(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    // One write for all but big messages: a heartbeat, an ack or the log for one held output
    // goes out as one segment, not two (two would wake the reader twice). A copy of a few KiB
    // costs less than a segment.
    if payload.len() <= 16 << 10 {
        let mut m = head.to_vec();
        m.extend_from_slice(payload);
        w.write_all(&m)
    } else {
        w.write_all(&head)?;
        w.write_all(payload)
    }
}

fn get(r: &mut impl Read) -> Result<(u8, Vec<u8>), WireError> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(head[1..].try_into().expect("4 bytes")) as usize;
    if len > MAX_MESSAGE {
        return Err(WireError::Bad(format!("a message of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => WireError::Closed,
        _ => e.into(),
    })?;
    Ok((head[0], payload))
}

fn u64_at(p: &[u8], i: usize) -> Result<u64, WireError> {
    p.get(i..i + 8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| WireError::Bad("short payload".into()))
}

impl ToBackup {
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            ToBackup::Hello(Hello {
                generation,
                clone_ram,
                takeover,
                backup_follows,
                lock,
            }) => {
                let mut p = PROTOCOL.to_le_bytes().to_vec();
                p.extend_from_slice(&generation.to_le_bytes());
                p.extend_from_slice(&clone_ram.to_le_bytes());
                p.push(*takeover as u8 | (*backup_follows as u8) << 1);
                p.extend_from_slice(lock.as_bytes());
                put(w, HELLO, &p)
            }
            ToBackup::Pages(bytes) => put(w, PAGES, bytes),
            ToBackup::State(bytes) => put(w, STATE, bytes),
            ToBackup::Log(bytes) => put(w, LOG, bytes),
            ToBackup::Heartbeat => put(w, HEARTBEAT, &[]),
            ToBackup::Retire => put(w, RETIRE, &[]),
            ToBackup::MovedTo(addr) => put(w, MOVED_TO, addr.as_bytes()),
        }
    }

    pub fn read(r: &mut impl Read) -> Result<ToBackup, WireError> {
        let (kind, p) = get(r)?;
        match kind {
            HELLO => {
                let version = p
                    .get(..4)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .ok_or_else(|| WireError::Bad("short hello".into()))?;
                if version != PROTOCOL {
                    return Err(WireError::Bad(format!(
                        "the peer speaks FT protocol {version}, this ftvm {PROTOCOL}"
                    )));
                }
                let generation = u64_at(&p, 4)?;
                let clone_ram = u64_at(&p, 12)?;
                let (takeover, backup_follows) = match p.get(20) {
                    Some(&f) if f < 4 => (f & 1 != 0, f & 2 != 0),
                    _ => return Err(WireError::Bad("bad hello flags".into())),
                };
                let lock = String::from_utf8(p[21..].to_vec())
                    .map_err(|_| WireError::Bad("lock name is not UTF-8".into()))?;
                if lock.is_empty() || lock.contains('/') || lock.starts_with('.') {
                    return Err(WireError::Bad(format!("lock name {lock:?}")));
                }
                Ok(ToBackup::Hello(Hello {
                    generation,
                    clone_ram,
                    takeover,
                    backup_follows,
                    lock,
                }))
            }
            PAGES => Ok(ToBackup::Pages(p)),
            STATE => Ok(ToBackup::State(p)),
            LOG => Ok(ToBackup::Log(p)),
            HEARTBEAT => Ok(ToBackup::Heartbeat),
            RETIRE => Ok(ToBackup::Retire),
            MOVED_TO => {
                let addr = String::from_utf8(p)
                    .map_err(|_| WireError::Bad("a move's address is not UTF-8".into()))?;
                if addr.len() > 256 {
                    return Err(WireError::Bad("a move's address is too long".into()));
                }
                Ok(ToBackup::MovedTo(addr))
            }
            k => Err(WireError::Bad(format!("message kind {k} from a primary"))),
        }
    }
}

impl ToPrimary {
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            ToPrimary::Ack {
                received,
                replayed,
                heard,
            } => {
                let mut p = received.to_le_bytes().to_vec();
                p.extend_from_slice(&replayed.to_le_bytes());
                p.extend_from_slice(&heard.to_le_bytes());
                put(w, ACK, &p)
            }
            ToPrimary::PowerOff => put(w, POWER_OFF, &[]),
            ToPrimary::CloneAck { pages } => put(w, CLONE_ACK, &pages.to_le_bytes()),
            ToPrimary::CloneDone => put(w, CLONE_DONE, &[]),
        }
    }

    /// The first whole message in `buf` and its length in bytes; `None` while it is not
    /// whole yet. For a reader that takes bytes as they come.
    pub fn split(buf: &[u8]) -> Result<Option<(ToPrimary, usize)>, WireError> {
        let Some(head) = buf.get(..5) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(head[1..].try_into().expect("4 bytes")) as usize;
        if len > MAX_MESSAGE {
            return Err(WireError::Bad(format!("a message of {len} bytes")));
        }
        match buf.get(..5 + len) {
            Some(whole) => Ok(Some((Self::read(&mut &whole[..])?, 5 + len))),
            None => Ok(None),
        }
    }

    pub fn read(r: &mut impl Read) -> Result<ToPrimary, WireError> {
        let (kind, p) = get(r)?;
        match kind {
            ACK => Ok(ToPrimary::Ack {
                received: u64_at(&p, 0)?,
                replayed: u64_at(&p, 8)?,
                heard: u64_at(&p, 16)?,
            }),
            POWER_OFF => Ok(ToPrimary::PowerOff),
            CLONE_ACK => Ok(ToPrimary::CloneAck {
                pages: u64_at(&p, 0)?,
            }),
            CLONE_DONE => Ok(ToPrimary::CloneDone),
            k => Err(WireError::Bad(format!("message kind {k} from a backup"))),
        }
    }
}

/// The fuzz target's body (`fuzz/fuzz_targets/ft_wire.rs`): any byte string read as a stream
/// of messages each way ends in messages or an error, never a panic or a huge allocation.
pub fn fuzz_wire(data: &[u8]) {
    let mut r = data;
    while ToBackup::read(&mut r).is_ok() {}
    let mut r = data;
    while ToPrimary::read(&mut r).is_ok() {}
    let mut at = 0;
    while let Ok(Some((_, n))) = ToPrimary::split(&data[at..]) {
        at += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let mut buf = Vec::new();
        let msgs = [
            ToBackup::Hello(Hello {
                generation: 7,
                clone_ram: 256 << 20,
                takeover: true,
                backup_follows: true,
                lock: "redis.img".into(),
            }),
            ToBackup::Pages(vec![3; 100]),
            ToBackup::State(vec![4; 10]),
            ToBackup::Log(vec![1; 1000]),
            ToBackup::Heartbeat,
            ToBackup::Retire,
            ToBackup::MovedTo("10.0.0.2:7000".into()),
        ];
        for m in &msgs {
            m.write(&mut buf).unwrap();
        }
        let mut r = &buf[..];
        for m in &msgs {
            assert_eq!(&ToBackup::read(&mut r).unwrap(), m);
        }
        assert!(matches!(ToBackup::read(&mut r), Err(WireError::Closed)));
        let mut buf = Vec::new();
        let ack = ToPrimary::Ack {
            received: 1 << 40,
            replayed: 12345,
            heard: 77,
        };
        ack.write(&mut buf).unwrap();
        ToPrimary::PowerOff.write(&mut buf).unwrap();
        ToPrimary::CloneAck { pages: 9 }.write(&mut buf).unwrap();
        ToPrimary::CloneDone.write(&mut buf).unwrap();
        let mut r = &buf[..];
        assert_eq!(ToPrimary::read(&mut r).unwrap(), ack);
        assert_eq!(ToPrimary::read(&mut r).unwrap(), ToPrimary::PowerOff);
        assert_eq!(
            ToPrimary::read(&mut r).unwrap(),
            ToPrimary::CloneAck { pages: 9 }
        );
        assert_eq!(ToPrimary::read(&mut r).unwrap(), ToPrimary::CloneDone);
    }

    #[test]
    fn acks_arriving_in_pieces_are_taken_whole() {
        let mut stream = Vec::new();
        let acks: Vec<ToPrimary> = (1..=3)
            .map(|i| ToPrimary::Ack {
                received: i * 100,
                replayed: i,
                heard: i,
            })
            .collect();
        for a in &acks {
            a.write(&mut stream).unwrap();
        }
        let size = stream.len() / acks.len();
        // Every cut of the stream: whole messages come out, a partial one waits.
        for cut in 0..=stream.len() {
            let mut got = Vec::new();
            let mut at = 0;
            while let Some((m, n)) = ToPrimary::split(&stream[at..cut]).unwrap() {
                got.push(m);
                at += n;
            }
            assert_eq!(got, acks[..cut / size], "cut at {cut}");
        }
        let huge = [ACK, 0xff, 0xff, 0xff, 0xff];
        assert!(ToPrimary::split(&huge).is_err());
    }

    #[test]
    fn garbage_from_a_peer_is_an_error_not_a_panic() {
        // Random byte strings: every outcome is a message or an error.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            fuzz_wire(&bytes);
        }
        // A huge length is refused before anything is allocated.
        let huge = [LOG, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            ToBackup::read(&mut &huge[..]),
            Err(WireError::Bad(_))
        ));
        let short_ack = [ACK, 3, 0, 0, 0, 1, 2, 3];
        assert!(matches!(
            ToPrimary::read(&mut &short_ack[..]),
            Err(WireError::Bad(_))
        ));
        let hello = |version: u32, lock: &[u8]| {
            let mut p = version.to_le_bytes().to_vec();
            p.extend_from_slice(&[0; 17]);
            p.extend_from_slice(lock);
            let mut m = vec![HELLO];
            m.extend_from_slice(&(p.len() as u32).to_le_bytes());
            m.extend_from_slice(&p);
            m
        };
        for bad in [hello(PROTOCOL, b"../"), hello(PROTOCOL + 1, b"disk.img")] {
            assert!(matches!(
                ToBackup::read(&mut &bad[..]),
                Err(WireError::Bad(_))
            ));
        }
        assert!(ToBackup::read(&mut &hello(PROTOCOL, b"disk.img")[..]).is_ok());
    }
}
