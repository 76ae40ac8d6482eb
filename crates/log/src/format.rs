//! Records and their frame.
//!
//! Frame: `kind: u8`, `icount delta: varint` (from the previous record; counts never decrease),
//! `payload length: varint`, `payload`, `crc32c: u32 LE` over everything before it in the frame.

use ftvm_machine::{EffectKind, InputEvent};

use crate::varint;

/// The largest payload a record may carry: a bound on what a damaged or hostile log can make the
/// reader allocate.
pub const MAX_PAYLOAD: usize = 1 << 20;

pub(crate) mod kind {
    pub const CLOCK_ANCHOR: u8 = 0x01;
    pub const CONSOLE_INPUT: u8 = 0x02;
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
            Record::Output {
                effect: EffectKind::Console(b),
                ..
            } => {
                p.extend_from_slice(b);
                kind::CONSOLE_OUTPUT
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
