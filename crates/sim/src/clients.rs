//! The simulated clients: each sends one request at a time, retransmits it until answered (as
//! TCP would), and checks every answer against the writes it saw acknowledged.
//!
//! The VM's console is one byte stream; every byte carries its offset in that stream (a VM
//! and its replica produce the same stream, so offsets agree whoever sends). Bytes never shown
//! (held by a primary that then died) leave a gap: the line it cuts is dropped, like a lost
//! packet, and the client's retransmission gets the answer again.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::rng::Rng;

/// How long a client waits for an answer before sending the request again.
pub const RETRY: Duration = Duration::from_millis(100);
const KEYS_PER_CLIENT: u8 = 8;

#[derive(Debug, Clone)]
struct Pending {
    line: Vec<u8>,
    op: u8,
    key: u8,
    value: u16,
    sent: Duration,
}

#[derive(Debug)]
struct Client {
    id: u8,
    seq: u16,
    pending: Option<Pending>,
    next: Duration,
    /// Every key's value as the acknowledged writes left it (0: never written).
    model: BTreeMap<u8, u16>,
    /// Keys still to read back at the end.
    verify: Option<Vec<u8>>,
    done: bool,
}

/// What the clients saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub writes_acked: u64,
    pub reads_checked: u64,
    pub retransmits: u64,
    pub gaps: u64,
}

pub struct Clients {
    clients: Vec<Client>,
    /// The console stream: the next offset expected, and the line being put together.
    offset: u64,
    line: Vec<u8>,
    /// A gap cut the current line: skip to the next newline.
    skipping: bool,
    pub seen: Seen,
    stopping: bool,
}

impl Clients {
    pub fn new(count: u8) -> Clients {
        Clients {
            clients: (0..count)
                .map(|id| Client {
                    id,
                    seq: 0,
                    pending: None,
                    next: Duration::ZERO,
                    model: BTreeMap::new(),
                    verify: None,
                    done: false,
                })
                .collect(),
            offset: 0,
            line: Vec::new(),
            skipping: false,
            seen: Seen::default(),
            stopping: false,
        }
    }

    /// From now on no new writes: each client reads back every key it wrote, then is done.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    pub fn all_done(&self) -> bool {
        self.clients.iter().all(|c| c.done)
    }

    /// The oldest request still unanswered: (client, when sent), for the liveness check.
    pub fn oldest_pending(&self) -> Option<(u8, Duration)> {
        self.clients
            .iter()
            .filter_map(|c| c.pending.as_ref().map(|p| (c.id, p.sent)))
            .min_by_key(|&(_, t)| t)
    }

    /// The request lines to send now (new ones and retransmissions).
    pub fn tick(&mut self, now: Duration, rng: &mut Rng) -> Vec<Vec<u8>> {
        let stopping = self.stopping;
        let mut out = Vec::new();
        for c in &mut self.clients {
            if let Some(p) = &mut c.pending {
                if now - p.sent >= RETRY {
                    p.sent = now;
                    out.push(p.line.clone());
                    self.seen.retransmits += 1;
                }
                continue;
            }
            if c.done || now < c.next {
                continue;
            }
            if stopping && c.verify.is_none() {
                c.verify = Some(c.model.keys().copied().collect());
            }
            let (op, key, value) = match &mut c.verify {
                Some(keys) => match keys.pop() {
                    Some(k) => (b'G', k, 0),
                    None => {
                        c.done = true;
                        continue;
                    }
                },
                None => {
                    let key = c.id * KEYS_PER_CLIENT + rng.range(0, KEYS_PER_CLIENT as u64) as u8;
                    if rng.chance(60) {
                        (b'S', key, rng.range(0, 0x10000) as u16)
                    } else {
                        (b'G', key, 0)
                    }
                }
            };
            c.seq = c.seq.wrapping_add(1);
            let line = format!(
                "{}{:x}{:04x}{key:02x}{value:04x}\n",
                op as char, c.id, c.seq
            );
            let line = line.into_bytes();
            out.push(line.clone());
            c.pending = Some(Pending {
                line,
                op,
                key,
                value,
                sent: now,
            });
        }
        out
    }

    /// Console bytes from offset `at`. `Err` says which answer broke the Output Requirement.
    pub fn receive(
        &mut self,
        at: u64,
        bytes: &[u8],
        now: Duration,
        rng: &mut Rng,
    ) -> Result<(), String> {
        let end = at + bytes.len() as u64;
        if end <= self.offset {
            return Ok(()); // already seen
        }
        if at > self.offset {
            self.seen.gaps += 1;
            self.line.clear();
            self.skipping = true;
            self.offset = at;
        }
        let fresh = &bytes[(self.offset - at) as usize..];
        self.offset = end;
        for &b in fresh {
            if self.skipping {
                self.skipping = b != b'\n';
                continue;
            }
            if b != b'\n' {
                if self.line.len() < 64 {
                    self.line.push(b);
                }
                continue;
            }
            let line = std::mem::take(&mut self.line);
            self.answer(&line, now, rng)?;
        }
        Ok(())
    }

    fn answer(&mut self, line: &[u8], now: Duration, rng: &mut Rng) -> Result<(), String> {
        let text = String::from_utf8_lossy(line);
        let parsed = (|| {
            let t = text.strip_prefix('R')?;
            if t.len() != 11 {
                return None;
            }
            Some((
                u8::from_str_radix(&t[0..1], 16).ok()?,
                u16::from_str_radix(&t[1..5], 16).ok()?,
                u8::from_str_radix(&t[5..7], 16).ok()?,
                u16::from_str_radix(&t[7..11], 16).ok()?,
            ))
        })();
        let Some((id, seq, key, value)) = parsed else {
            return Err(format!("the VM answered with a malformed line {text:?}"));
        };
        let Some(c) = self.clients.get_mut(id as usize) else {
            return Err(format!("an answer for client {id}, which does not exist"));
        };
        let Some(p) = c.pending.clone() else {
            return Ok(()); // a repeated answer
        };
        if seq != c.seq {
            return Ok(()); // an old request's answer again
        }
        if key != p.key {
            return Err(format!(
                "client {id} request {seq} was for key {:02x}, the answer is for key {key:02x}",
                p.key
            ));
        }
        match p.op {
            b'S' if value != p.value => {
                return Err(format!(
                    "client {id} set key {key:02x} to {:04x}, the VM acknowledged {value:04x}",
                    p.value
                ));
            }
            b'S' => {
                c.model.insert(key, value);
                self.seen.writes_acked += 1;
            }
            _ => {
                let want = c.model.get(&key).copied().unwrap_or(0);
                if value != want {
                    return Err(format!(
                        "Output Requirement: client {id} read key {key:02x} as {value:04x}, but \
                         its last acknowledged write left {want:04x}"
                    ));
                }
                self.seen.reads_checked += 1;
            }
        }
        c.pending = None;
        c.next = now + Duration::from_micros(rng.range(500, 5000));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(c: &mut Clients, at: u64, bytes: &[u8]) -> Result<(), String> {
        c.receive(at, bytes, Duration::from_millis(1), &mut Rng::new(0))
    }

    /// The next bytes of the stream.
    fn next(c: &mut Clients, bytes: &[u8]) -> Result<(), String> {
        let at = c.offset;
        answer(c, at, bytes)
    }

    #[test]
    fn a_read_must_return_the_last_acknowledged_write() {
        let mut c = Clients::new(1);
        let mut rng = Rng::new(1);
        // Drive client 0 until it has a write pending, then acknowledge it.
        let mut now = Duration::ZERO;
        let line = loop {
            let out = c.tick(now, &mut rng);
            if let Some(l) = out.into_iter().find(|l| l[0] == b'S') {
                break l;
            }
            let p = c.clients[0].pending.clone().expect("a request");
            let reply = format!("R0{:04x}{:02x}0000\n", c.clients[0].seq, p.key);
            next(&mut c, reply.as_bytes()).unwrap();
            now += Duration::from_millis(10);
        };
        let text = String::from_utf8(line).unwrap();
        let reply = format!("R{}\n", &text[1..12]);
        next(&mut c, reply.as_bytes()).unwrap();
        let key = u8::from_str_radix(&text[6..8], 16).unwrap();
        let value = u16::from_str_radix(&text[8..12], 16).unwrap();
        assert_eq!(c.clients[0].model.get(&key), Some(&value));
        // A read of that key answered with anything else breaks the Output Requirement.
        c.clients[0].seq += 1;
        c.clients[0].pending = Some(Pending {
            line: Vec::new(),
            op: b'G',
            key,
            value: 0,
            sent: now,
        });
        let stale = format!("R0{:04x}{key:02x}{:04x}\n", c.clients[0].seq, value ^ 1);
        let err = next(&mut c, stale.as_bytes()).unwrap_err();
        assert!(err.contains("Output Requirement"), "{err}");
    }

    #[test]
    fn bytes_never_shown_drop_the_line_they_cut_and_repeats_are_ignored() {
        let mut c = Clients::new(1);
        // "R0" shown, then a gap: the rest of that line must not be read as an answer.
        answer(&mut c, 0, b"R0").unwrap();
        answer(&mut c, 5, b"garbage\nR0").unwrap();
        assert_eq!(c.seen.gaps, 1);
        // Bytes already seen again (a replica's copy) are ignored.
        answer(&mut c, 0, b"R0ffff").unwrap();
        assert_eq!(c.offset, 15);
    }
}
