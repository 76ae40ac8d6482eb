//! The simulated world between the VMs: time, the event queue, links with delays, cuts and
//! slow spells, and the logging channels (TCP connections: a lost piece breaks one for good).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use ftvm_ft::tiebreak::Outcome;
use ftvm_machine::InputEvent;
use ftvm_virtio::Request;

use crate::rng::Rng;

/// A place messages go: a host, the clients' side of the network, the tie-breaker, or the
/// shared disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Addr {
    Host(usize),
    Clients,
    TieBreaker,
    Disk,
}

/// What travels.
#[derive(Debug, Clone)]
pub enum Msg {
    /// A piece of the log on logging channel `channel`.
    Log { channel: usize, bytes: Vec<u8> },
    /// The primary is alive (nothing to log).
    Heartbeat { channel: usize },
    /// The backup holds the first `received` bytes of the log and heard the channel's first
    /// `heard` messages (log pieces and heartbeats).
    Ack {
        channel: usize,
        received: u64,
        heard: u64,
    },
    /// A live clone's machine, opening `channel` to a spare: the log follows on it.
    Clone {
        channel: usize,
        snapshot: Rc<Vec<u8>>,
        generation: u64,
        console: u64,
    },
    /// The primary replaced this backup (it took the backup's generation first): stop.
    Retire { channel: usize },
    /// The VM moves to host `to` (`ftvm ctl migrate`): once the log ends, reconnect there.
    /// `None`: the move is called off.
    MovedTo { channel: usize, to: Option<usize> },
    /// A migration's machine, from the moving primary `from`: the receiver becomes the
    /// primary at `generation` once the backup reconnects (or it wins the claim).
    Migrate {
        from: usize,
        snapshot: Rc<Vec<u8>>,
        generation: u64,
        console: u64,
    },
    /// The new host holds the migrated machine: the moving primary may end its run.
    TookOver { host: usize },
    /// A backup whose primary moved asks the new host for the log.
    Reconnect { backup: usize },
    /// The new host's answer: the log of `generation` follows on `channel`.
    Rejoined { channel: usize, generation: u64 },
    /// A request line from a client.
    Request(Vec<u8>),
    /// Console bytes of the VM's stream, from byte `offset` on.
    Reply { offset: u64, bytes: Vec<u8> },
    /// A test-and-set.
    Claim { generation: u64 },
    /// Its answer.
    Answer { generation: u64, outcome: Outcome },
    /// A disk request a VM let out, from its host's `run`.
    DiskRequest {
        run: u64,
        slot: u8,
        request: Request,
    },
    /// The disk's completion of a request from `run`.
    DiskDone { run: u64, done: InputEvent },
}

/// A logging channel: a TCP connection from a primary to its backup.
#[derive(Debug, Clone)]
pub struct Channel {
    pub primary: usize,
    pub backup: usize,
    /// A message was lost on it: the connection is dead, both ways.
    pub broken: bool,
    /// Log bytes the backup holds (what the Output Rule is checked against).
    pub stored: u64,
    /// When the pair formed.
    pub opened: Duration,
}

/// Scheduled in the queue.
#[derive(Debug, Clone)]
pub enum Event {
    Deliver {
        from: Addr,
        to: Addr,
        msg: Msg,
    },
    /// A host's turn to run.
    Step(usize),
    /// A backup finished storing a piece of log that arrived earlier.
    Stored {
        host: usize,
        channel: usize,
        bytes: Vec<u8>,
    },
    /// The clients' turn.
    ClientTick,
    /// A fault from the schedule (an index into it) starts or heals.
    Fault {
        index: usize,
        heal: bool,
    },
}

/// A directed link's condition.
#[derive(Debug, Clone, Copy, Default)]
struct Link {
    cut: u32,
    slow: Duration,
    /// The latest delivery scheduled on it: deliveries keep their order (one connection).
    last: Duration,
}

pub struct Net {
    pub now: Duration,
    queue: BTreeMap<(Duration, u64), Event>,
    seq: u64,
    links: BTreeMap<(Addr, Addr), Link>,
    pub channels: Vec<Channel>,
    /// Hosts that are frozen until then (SIGSTOP): they neither run nor read.
    pub frozen: BTreeMap<usize, Duration>,
    /// What reached a frozen host, in order, for when it wakes.
    pub parked: BTreeMap<usize, Vec<Event>>,
    pub delivered: u64,
    pub dropped: u64,
}

impl Net {
    pub fn new() -> Net {
        Net {
            now: Duration::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            links: BTreeMap::new(),
            channels: Vec::new(),
            frozen: BTreeMap::new(),
            parked: BTreeMap::new(),
            delivered: 0,
            dropped: 0,
        }
    }

    pub fn at(&mut self, when: Duration, event: Event) {
        self.seq += 1;
        self.queue.insert((when.max(self.now), self.seq), event);
    }

    pub fn after(&mut self, delay: Duration, event: Event) {
        self.at(self.now + delay, event);
    }

    /// The next event due by `until`, with time moved to it.
    pub fn pop(&mut self, until: Duration) -> Option<Event> {
        let (&(when, _), _) = self.queue.first_key_value()?;
        if when > until {
            return None;
        }
        let (_, event) = self.queue.pop_first()?;
        self.now = when;
        Some(event)
    }

    /// Sends `msg`: it arrives after the link's delay, in order with what went before on the
    /// link, unless the link is cut (then it is lost, and so is its channel).
    pub fn send(&mut self, rng: &mut Rng, from: Addr, to: Addr, msg: Msg) {
        if let Some(c) = channel_of(&msg)
            && self.channels[c].broken
        {
            self.dropped += 1;
            return;
        }
        let link = self.links.entry((from, to)).or_default();
        if link.cut > 0 {
            self.dropped += 1;
            if let Some(c) = channel_of(&msg) {
                self.channels[c].broken = true;
            }
            return;
        }
        let jitter = Duration::from_micros(rng.range(100, 400));
        let when = (self.now + jitter + link.slow).max(link.last);
        link.last = when;
        self.at(when, Event::Deliver { from, to, msg });
    }

    /// Whether a message sent now on the link would be lost (a delivery already in flight
    /// meets the cut too).
    pub fn is_cut(&self, from: Addr, to: Addr) -> bool {
        self.links.get(&(from, to)).is_some_and(|l| l.cut > 0)
    }

    pub fn cut(&mut self, from: Addr, to: Addr, on: bool) {
        let link = self.links.entry((from, to)).or_default();
        if on {
            link.cut += 1;
        } else {
            link.cut = link.cut.saturating_sub(1);
        }
    }

    pub fn slow(&mut self, from: Addr, to: Addr, by: Duration) {
        self.links.entry((from, to)).or_default().slow = by;
    }

    pub fn is_frozen(&self, host: usize) -> bool {
        self.frozen.get(&host).is_some_and(|&t| t > self.now)
    }

    pub fn open_channel(&mut self, primary: usize, backup: usize) -> usize {
        self.channels.push(Channel {
            primary,
            backup,
            broken: false,
            stored: 0,
            opened: self.now,
        });
        self.channels.len() - 1
    }
}

fn channel_of(msg: &Msg) -> Option<usize> {
    match msg {
        Msg::Log { channel, .. }
        | Msg::Heartbeat { channel }
        | Msg::Ack { channel, .. }
        | Msg::Retire { channel }
        | Msg::MovedTo { channel, .. }
        | Msg::Rejoined { channel, .. }
        | Msg::Clone { channel, .. } => Some(*channel),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(channel: usize, byte: u8) -> Msg {
        Msg::Log {
            channel,
            bytes: vec![byte],
        }
    }

    #[test]
    fn a_link_delivers_in_order_and_a_cut_breaks_its_channel_for_good() {
        let mut net = Net::new();
        let mut rng = Rng::new(9);
        let c = net.open_channel(0, 1);
        let (a, b) = (Addr::Host(0), Addr::Host(1));
        for i in 0..50 {
            net.send(&mut rng, a, b, log(c, i));
        }
        let mut got = Vec::new();
        while let Some(Event::Deliver {
            msg: Msg::Log { bytes, .. },
            ..
        }) = net.pop(Duration::MAX)
        {
            got.push(bytes[0]);
        }
        assert_eq!(
            got,
            (0..50).collect::<Vec<u8>>(),
            "one connection keeps its order"
        );
        net.cut(a, b, true);
        net.send(&mut rng, a, b, log(c, 0));
        net.cut(a, b, false);
        net.send(&mut rng, a, b, log(c, 1));
        assert!(net.channels[c].broken);
        assert!(
            net.pop(Duration::MAX).is_none(),
            "nothing crosses a broken channel"
        );
        assert_eq!(net.dropped, 2);
    }
}
