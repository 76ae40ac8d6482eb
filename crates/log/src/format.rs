//! Records and their frame.
//!
//! Frame: `kind: u8`, `icount delta: varint` (from the previous record; counts never decrease),
//! `payload length: varint`, `payload`, `crc32c: u32 LE` over everything before it in the frame.

use ftvm_machine::{EffectKind, InputEvent};

use crate::varint;

/// The largest payload a record may carry: a bound on what a damaged or hostile log can make the
/// reader allocate.
/// (A disk read's bounce buffer, at most `ftvm_virtio::MAX_REQUEST`, must fit.)
pub const MAX_PAYLOAD: usize = 2 << 20;

pub(crate) mod kind {
    pub const CLOCK_ANCHOR: u8 = 0x01;
    pub const CONSOLE_INPUT: u8 = 0x02;
    pub const BLOCK_DONE: u8 = 0x03;
    pub const NET_RX: u8 = 0x04;
    pub const ENTROPY: u8 = 0x05;
    pub const IO_OUTPUT: u8 = 0x13;
    pub const CONSOLE_OUTPUT: u8 = 0x10;
    pub const POWER_OFF: u8 = 0x11;
    pub const RESET: u8 = 0x12;
    pub const CHECKPOINT: u8 = 0x20;
    pub const END: u8 = 0x7f;
}

/// Why a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The host stopped the VM (Ctrl-A x, `--until`, a failover).
    Stopped = 0,
    /// The guest powered off or reset (the output record before says which).
    Halted = 1,
}

/// One log entry, at the instruction count it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A non-deterministic input, applied when the machine stands at `icount`.
    Input { icount: u64, event: InputEvent },
    /// An output the machine produced by `icount`; replay must produce the same.
    Output { icount: u64, effect: EffectKind },
    /// A device request the machine produced by `icount` (a disk operation, a frame sent, an
    /// entropy request), as a digest: replay checks it without the log carrying the data again.
    IoOutput { icount: u64, slot: u8, digest: u64 },
    /// The machine's state hash at `icount`.
    Checkpoint { icount: u64, hash: u128 },
    /// The end of the recording.
    End { icount: u64, reason: EndReason },
}

impl Record {
    pub fn icount(&self) -> u64 {
        match self {
            Record::Input { icount, .. }
            | Record::Output { icount, .. }
            | Record::IoOutput { icount, .. }
            | Record::Checkpoint { icount, .. }
            | Record::End { icount, .. } => *icount,
        }
    }

    /// The kind byte and payload.
    pub(crate) fn body(&self) -> (u8, Vec<u8>) {
        let mut p = Vec::new();
        let k = match self {
            Record::Input {
                event: InputEvent::ClockAnchor { mtime },
                ..
            } => {
                varint::put(&mut p, *mtime);
                kind::CLOCK_ANCHOR
            }
            Record::Input {
                event: InputEvent::ConsoleInput(b),
                ..
            } => {
                p.extend_from_slice(b);
                kind::CONSOLE_INPUT
            }
            Record::Input {
                event:
                    InputEvent::BlockDone {
                        slot,
                        id,
                        status,
                        data,
                    },
                ..
            } => {
                p.push(*slot);
                varint::put(&mut p, *id);
                p.push(*status);
                p.extend_from_slice(data);
                kind::BLOCK_DONE
            }
            Record::Input {
                event: InputEvent::NetRx { slot, frame },
                ..
            } => {
                p.push(*slot);
                p.extend_from_slice(frame);
                kind::NET_RX
            }
            Record::Input {
                event: InputEvent::Entropy { slot, id, bytes },
                ..
            } => {
                p.push(*slot);
                varint::put(&mut p, *id);
                p.extend_from_slice(bytes);
                kind::ENTROPY
            }
            Record::Output {
                effect: EffectKind::Console(b),
                ..
            } => {
                p.extend_from_slice(b);
                kind::CONSOLE_OUTPUT
            }
            Record::Output {
                effect: EffectKind::Io { slot, request },
                icount,
            } => {
                // Writers turn these into `IoOutput` digests; encoding one directly gives the same.
                return Record::IoOutput {
                    icount: *icount,
                    slot: *slot,
                    digest: io_digest(request),
                }
                .body();
            }
            Record::IoOutput { slot, digest, .. } => {
                p.push(*slot);
                p.extend_from_slice(&digest.to_le_bytes());
                kind::IO_OUTPUT
            }
            Record::Output {
                effect: EffectKind::PowerOff(code),
                ..
            } => {
                varint::put(&mut p, *code as u64);
                kind::POWER_OFF
            }
            Record::Output {
                effect: EffectKind::Reset,
                ..
            } => kind::RESET,
            Record::Checkpoint { hash, .. } => {
                p.extend_from_slice(&hash.to_le_bytes());
                kind::CHECKPOINT
            }
            Record::End { reason, .. } => {
                p.push(*reason as u8);
                kind::END
            }
        };
        (k, p)
    }

    /// Rebuilds a record from a kind byte and payload; `Err` names what is wrong.
    pub(crate) fn from_body(k: u8, icount: u64, p: &[u8]) -> Result<Record, String> {
        let whole_varint = |p: &[u8]| match varint::get(p) {
            Some((v, n)) if n == p.len() => Ok(v),
            _ => Err("bad integer payload".to_string()),
        };
        Ok(match k {
            kind::CLOCK_ANCHOR => Record::Input {
                icount,
                event: InputEvent::ClockAnchor {
                    mtime: whole_varint(p)?,
                },
            },
            kind::CONSOLE_INPUT => Record::Input {
                icount,
                event: InputEvent::ConsoleInput(p.to_vec()),
            },
            kind::BLOCK_DONE => {
                let (&slot, rest) = p.split_first().ok_or("empty block completion")?;
                let (id, n) = varint::get(rest).ok_or("bad block request id")?;
                let (&status, data) = rest[n..]
                    .split_first()
                    .ok_or("block completion without status")?;
                Record::Input {
                    icount,
                    event: InputEvent::BlockDone {
                        slot,
                        id,
                        status,
                        data: data.to_vec(),
                    },
                }
            }
            kind::NET_RX => {
                let (&slot, frame) = p.split_first().ok_or("empty received frame")?;
                Record::Input {
                    icount,
                    event: InputEvent::NetRx {
                        slot,
                        frame: frame.to_vec(),
                    },
                }
            }
            kind::ENTROPY => {
                let (&slot, rest) = p.split_first().ok_or("empty entropy record")?;
                let (id, n) = varint::get(rest).ok_or("bad entropy request id")?;
                Record::Input {
                    icount,
                    event: InputEvent::Entropy {
                        slot,
                        id,
                        bytes: rest[n..].to_vec(),
                    },
                }
            }
            kind::IO_OUTPUT => {
                let [slot, d @ ..] = p else {
                    return Err("empty I/O output record".into());
                };
                let digest: [u8; 8] = d.try_into().map_err(|_| "I/O digest is not 8 bytes")?;
                Record::IoOutput {
                    icount,
                    slot: *slot,
                    digest: u64::from_le_bytes(digest),
                }
            }
            kind::CONSOLE_OUTPUT => Record::Output {
                icount,
                effect: EffectKind::Console(p.to_vec()),
            },
            kind::POWER_OFF => {
                let code =
                    u32::try_from(whole_varint(p)?).map_err(|_| "power-off code too large")?;
                Record::Output {
                    icount,
                    effect: EffectKind::PowerOff(code),
                }
            }
            kind::RESET if p.is_empty() => Record::Output {
                icount,
                effect: EffectKind::Reset,
            },
            kind::CHECKPOINT => {
                let hash: [u8; 16] = p
                    .try_into()
                    .map_err(|_| "checkpoint hash is not 16 bytes")?;
                Record::Checkpoint {
                    icount,
                    hash: u128::from_le_bytes(hash),
                }
            }
            kind::END => match p {
                [0] => Record::End {
                    icount,
                    reason: EndReason::Stopped,
                },
                [1] => Record::End {
                    icount,
                    reason: EndReason::Halted,
                },
                _ => return Err("bad end reason".into()),
            },
            other => return Err(format!("unknown record kind {other:#04x}")),
        })
    }
}

/// Decodes the frame at the start of `buf`, whose previous record was at `prev_icount`:
/// `Ok(None)` while `buf` holds only part of it, else the record and the frame's length. `Err`
/// names what is wrong. Never reads past `buf` and never allocates more than [`MAX_PAYLOAD`].
pub(crate) fn decode_frame(
    buf: &[u8],
    prev_icount: u64,
) -> Result<Option<(Record, usize)>, String> {
    let Some((&k, mut rest)) = buf.split_first() else {
        return Ok(None);
    };
    let mut varints = [0u64; 2];
    for v in &mut varints {
        match varint::get(rest) {
            Some((value, n)) => {
                *v = value;
                rest = &rest[n..];
            }
            None if rest.len() >= 10 || rest.iter().any(|b| b & 0x80 == 0) => {
                return Err("over-long integer".into());
            }
            None => return Ok(None),
        }
    }
    let [delta, len] = varints;
    if len > MAX_PAYLOAD as u64 {
        return Err(format!("payload length {len} exceeds {MAX_PAYLOAD}"));
    }
    let head = buf.len() - rest.len();
    let end = head + len as usize + 4;
    if buf.len() < end {
        return Ok(None);
    }
    let body_end = end - 4;
    let crc = u32::from_le_bytes(buf[body_end..end].try_into().expect("4 bytes"));
    if crc32c::crc32c(&buf[..body_end]) != crc {
        return Err("checksum mismatch".into());
    }
    let icount = prev_icount
        .checked_add(delta)
        .ok_or("instruction count overflows")?;
    Ok(Some((
        Record::from_body(k, icount, &buf[head..body_end])?,
        end,
    )))
}

/// The digest an I/O request is logged and checked by.
pub fn io_digest(request: &ftvm_virtio::Request) -> u64 {
    let bytes = postcard::to_stdvec(request).unwrap_or_default();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}
