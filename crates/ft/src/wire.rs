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

/// Primary to backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToBackup {
    /// First message: the pair's FT generation and the name of its lock record in the shared
    /// storage (see `tiebreak`).
    Hello { generation: u64, lock: String },
    /// The next bytes of the event log.
    Log(Vec<u8>),
    /// Nothing to send, still alive.
    Heartbeat,
}

/// Backup to primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToPrimary {
    /// The backup holds the first `received` bytes of the log and has replayed up to
    /// instruction `replayed`. Sent as bytes arrive and as a heartbeat.
    Ack { received: u64, replayed: u64 },
    /// An operator asked the backup to power the pair off.
    PowerOff,
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
    // One write for small messages: a heartbeat or ack is one segment, not two.
    if payload.len() <= 64 {
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
            ToBackup::Hello { generation, lock } => {
                let mut p = generation.to_le_bytes().to_vec();
                p.extend_from_slice(lock.as_bytes());
                put(w, HELLO, &p)
            }
            ToBackup::Log(bytes) => put(w, LOG, bytes),
            ToBackup::Heartbeat => put(w, HEARTBEAT, &[]),
        }
    }

    pub fn read(r: &mut impl Read) -> Result<ToBackup, WireError> {
        let (kind, p) = get(r)?;
        match kind {
            HELLO => {
                let generation = u64_at(&p, 0)?;
                let lock = String::from_utf8(p[8..].to_vec())
                    .map_err(|_| WireError::Bad("lock name is not UTF-8".into()))?;
                if lock.is_empty() || lock.contains('/') || lock.starts_with('.') {
                    return Err(WireError::Bad(format!("lock name {lock:?}")));
                }
                Ok(ToBackup::Hello { generation, lock })
            }
            LOG => Ok(ToBackup::Log(p)),
            HEARTBEAT => Ok(ToBackup::Heartbeat),
            k => Err(WireError::Bad(format!("message kind {k} from a primary"))),
        }
    }
}

impl ToPrimary {
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            ToPrimary::Ack { received, replayed } => {
                let mut p = received.to_le_bytes().to_vec();
                p.extend_from_slice(&replayed.to_le_bytes());
                put(w, ACK, &p)
            }
            ToPrimary::PowerOff => put(w, POWER_OFF, &[]),
        }
    }

    pub fn read(r: &mut impl Read) -> Result<ToPrimary, WireError> {
        let (kind, p) = get(r)?;
        match kind {
            ACK => Ok(ToPrimary::Ack {
                received: u64_at(&p, 0)?,
                replayed: u64_at(&p, 8)?,
            }),
            POWER_OFF => Ok(ToPrimary::PowerOff),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let mut buf = Vec::new();
        let msgs = [
            ToBackup::Hello {
                generation: 7,
                lock: "redis.img".into(),
            },
            ToBackup::Log(vec![1; 1000]),
            ToBackup::Heartbeat,
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
        };
        ack.write(&mut buf).unwrap();
        ToPrimary::PowerOff.write(&mut buf).unwrap();
        let mut r = &buf[..];
        assert_eq!(ToPrimary::read(&mut r).unwrap(), ack);
        assert_eq!(ToPrimary::read(&mut r).unwrap(), ToPrimary::PowerOff);
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
        let bad_lock = [HELLO, 11, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'.', b'.', b'/'];
        assert!(matches!(
            ToBackup::read(&mut &bad_lock[..]),
            Err(WireError::Bad(_))
        ));
    }
}
