//! One seed's world: hosts, clients, the tie-breaker and the network, driven event by event
//! in simulated time, with the checks after every event that can break them.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use ftvm_ft::tiebreak::Outcome;
use ftvm_ft::{Bugs, PrimaryRule, Timing};
use ftvm_machine::InputEvent;

use crate::clients::Clients;
use crate::disk::SharedDisk;
use crate::faults::Fault;
use crate::hosts::{Backup, Host, Primary};
use crate::net::{Addr, Event, Msg, Net};
use crate::rng::Rng;
use crate::{Options, Stats};

pub(crate) const STEP: Duration = Duration::from_millis(1);
/// A claim unanswered this long is asked again (the binary's `decide` retries every 200 ms).
pub(crate) const CLAIM_RETRY: Duration = Duration::from_millis(200);
/// A primary running alone looks for a spare this long after it went alone.
pub(crate) const CLONE_DELAY: Duration = Duration::from_millis(50);
/// A moving primary waits this long for the new host to confirm it holds the machine.
pub(crate) const MIGRATE_PATIENCE: Duration = Duration::from_millis(500);
/// A moved primary's backup gets this long to reconnect, and tries to that long (the binary's
/// five seconds, scaled like the simulated VM: a seed's whole story runs in six).
pub(crate) const RECONNECT_PATIENCE: Duration = Duration::from_millis(1000);
pub(crate) const RECONNECT_RETRY: Duration = Duration::from_millis(100);

/// Why a seed failed: the broken check, and when.
#[derive(Debug, Clone)]
pub struct Broken {
    pub at: Duration,
    pub what: String,
}

pub struct World {
    pub net: Net,
    pub(crate) rng: Rng,
    pub(crate) hosts: Vec<Host>,
    /// Inputs that reached a host (request lines, disk completions), waiting for its next
    /// step.
    pub(crate) inbox: Vec<VecDeque<InputEvent>>,
    pub(crate) disk: SharedDisk,
    /// The last VM run handed out (see [`Primary::run`]).
    pub(crate) runs: u64,
    pub clients: Clients,
    /// The host the network delivers the VM's traffic to (the last one to announce itself).
    pub(crate) announced: usize,
    /// The tie-breaker's records: generation -> who won it, and when.
    pub(crate) records: BTreeMap<u64, (usize, Duration)>,
    /// Who ran alone as each generation (at most one host may).
    pub(crate) alone: BTreeMap<u64, usize>,
    pub(crate) tb_down: u32,
    pub(crate) tb_slow: Duration,
    pub(crate) tb_lossy: u32,
    /// Console bytes shown to the world so far (the end of the furthest one).
    pub(crate) shown: u64,
    /// The guest powered off and the world saw it: no host may go live after.
    pub powered_off: bool,
    pub(crate) faults: Vec<Fault>,
    /// What each fault struck (the hosts a cut or freeze applies to), for its healing.
    pub(crate) struck: Vec<Vec<usize>>,
    pub(crate) timing: Timing,
    pub(crate) bugs: Bugs,
    pub stats: Stats,
    pub broken: Option<Broken>,
}

impl World {
    pub fn new(opts: &Options, faults: Vec<Fault>, rng: Rng) -> World {
        let boot = crate::guest::machine();
        let hosts = opts.hosts.max(2);
        let timing = Timing::default();
        let mut net = Net::new();
        let channel = net.open_channel(0, 1);
        let mut primary = Primary::new(
            boot,
            PrimaryRule::paired(1, timing, Duration::ZERO, opts.bugs),
            0,
            Duration::ZERO,
        );
        primary.channel = Some(channel);
        primary.run = 1;
        let twin = crate::guest::machine();
        // Two loads of one ELF are the same machine (the first checkpoint in the log checks
        // it; hashing both here cost a tenth of a seed).
        let backup = Backup::new(twin, 1, channel, 0, timing, Duration::ZERO, opts.bugs);
        let mut all = vec![
            Host::Primary(Box::new(primary)),
            Host::Backup(Box::new(backup)),
        ];
        all.extend((2..hosts).map(|_| Host::Spare));
        let mut w = World {
            net,
            rng,
            inbox: vec![VecDeque::new(); all.len()],
            hosts: all,
            disk: SharedDisk::new(),
            runs: 1,
            clients: Clients::new(opts.clients),
            announced: 0,
            records: BTreeMap::new(),
            alone: BTreeMap::new(),
            tb_down: 0,
            tb_slow: Duration::ZERO,
            tb_lossy: 0,
            powered_off: false,
            shown: 0,
            struck: vec![Vec::new(); faults.len()],
            faults,
            timing,
            bugs: opts.bugs,
            stats: Stats::default(),
            broken: None,
        };
        for h in 0..w.hosts.len() {
            w.net.at(Duration::ZERO, Event::Step(h));
        }
        w.net.at(Duration::ZERO, Event::ClientTick);
        for i in 0..w.faults.len() {
            let f = &w.faults[i];
            let (at, heal) = (f.at, f.at + f.lasts);
            w.net.at(
                at,
                Event::Fault {
                    index: i,
                    heal: false,
                },
            );
            w.net.at(
                heal,
                Event::Fault {
                    index: i,
                    heal: true,
                },
            );
        }
        w
    }

    /// Who won `generation`, if anyone has.
    pub(crate) fn winner(&self, generation: u64) -> Option<usize> {
        self.records.get(&generation).map(|&(h, _)| h)
    }

    pub(crate) fn fail(&mut self, what: String) {
        if self.broken.is_none() {
            self.broken = Some(Broken {
                at: self.net.now,
                what,
            });
        }
    }

    /// Runs the events due by `until`, or until a check breaks.
    pub fn run_until(&mut self, until: Duration) {
        while self.broken.is_none() {
            let Some(event) = self.net.pop(until) else {
                return;
            };
            self.stats.events += 1;
            self.handle(event);
        }
    }

    pub(crate) fn handle(&mut self, event: Event) {
        match event {
            Event::Step(h) => self.step(h),
            Event::ClientTick => {
                let lines = if self.powered_off {
                    Vec::new()
                } else {
                    self.clients.tick(self.net.now, &mut self.rng)
                };
                for line in lines {
                    let to = Addr::Host(self.announced);
                    self.net
                        .send(&mut self.rng, Addr::Clients, to, Msg::Request(line));
                }
                self.net.after(STEP, Event::ClientTick);
            }
            Event::Deliver { from, to, msg } => self.deliver(from, to, msg),
            Event::Stored {
                host,
                channel,
                bytes,
            } => {
                if self.net.is_frozen(host) {
                    self.net
                        .parked
                        .entry(host)
                        .or_default()
                        .push(Event::Stored {
                            host,
                            channel,
                            bytes,
                        });
                    return;
                }
                let now = self.net.now;
                if let Host::Backup(b) = &mut self.hosts[host]
                    && b.channel == channel
                {
                    if b.takes_log() {
                        self.net.channels[channel].stored += bytes.len() as u64;
                    }
                    if let Some(received) = b.store(&bytes, now) {
                        self.send_ack(host, channel, received);
                    }
                }
            }
            Event::Fault { index, heal } => self.fault(index, heal),
        }
    }

    fn deliver(&mut self, from: Addr, to: Addr, msg: Msg) {
        if self.net.is_cut(from, to) {
            self.net.dropped += 1;
            if let Msg::Log { channel, .. }
            | Msg::Ack { channel, .. }
            | Msg::Heartbeat { channel }
            | Msg::Clone { channel, .. } = &msg
            {
                self.net.channels[*channel].broken = true;
            }
            return;
        }
        if let Addr::Host(h) = to
            && self.net.is_frozen(h)
        {
            // A frozen host reads nothing: it finds its messages waiting, in order, when it
            // wakes.
            self.net
                .parked
                .entry(h)
                .or_default()
                .push(Event::Deliver { from, to, msg });
            return;
        }
        self.net.delivered += 1;
        match to {
            Addr::Clients => {
                if let Msg::Reply { offset, bytes } = msg {
                    let now = self.net.now;
                    if let Err(e) = self.clients.receive(offset, &bytes, now, &mut self.rng) {
                        self.fail(e);
                    }
                }
            }
            Addr::TieBreaker => {
                if let (Msg::Claim { generation }, Addr::Host(h)) = (msg, from) {
                    self.test_and_set(h, generation);
                }
            }
            Addr::Disk => {
                if let (Msg::DiskRequest { run, slot, request }, Addr::Host(h)) = (msg, from)
                    && let Some(done) = self.disk.serve(slot, &request)
                {
                    let done = Msg::DiskDone { run, done };
                    self.net
                        .send(&mut self.rng, Addr::Disk, Addr::Host(h), done);
                }
            }
            Addr::Host(h) => self.host_receives(h, msg),
        }
    }

    /// A number for a new run of the VM on some host.
    pub(crate) fn new_run(&mut self) -> u64 {
        self.runs += 1;
        self.runs
    }

    fn test_and_set(&mut self, host: usize, generation: u64) {
        if self.tb_down > 0 {
            return;
        }
        let now = self.net.now;
        let (winner, _) = *self.records.entry(generation).or_insert((host, now));
        let outcome = if winner == host {
            Outcome::Won
        } else {
            Outcome::Lost {
                winner: format!("host {winner}"),
            }
        };
        self.stats.claims += 1;
        if self.tb_lossy > 0 {
            return;
        }
        let slow = self.tb_slow;
        let answer = Msg::Answer {
            generation,
            outcome,
        };
        if slow.is_zero() {
            self.net
                .send(&mut self.rng, Addr::TieBreaker, Addr::Host(host), answer);
        } else {
            self.net.after(
                slow,
                Event::Deliver {
                    from: Addr::TieBreaker,
                    to: Addr::Host(host),
                    msg: answer,
                },
            );
        }
    }

    /// The backup on `host` acks `received` log bytes, and says how many messages it heard.
    pub(crate) fn send_ack(&mut self, host: usize, channel: usize, received: u64) {
        let primary = self.net.channels[channel].primary;
        let heard = match &self.hosts[host] {
            Host::Backup(b) => b.rule.messages(),
            _ => 0,
        };
        let ack = Msg::Ack {
            channel,
            received,
            heard,
        };
        self.net
            .send(&mut self.rng, Addr::Host(host), Addr::Host(primary), ack);
    }

    fn step(&mut self, h: usize) {
        if self.net.is_frozen(h) {
            let wake = self.net.frozen[&h];
            self.net.at(wake, Event::Step(h));
            return;
        }
        self.net.after(STEP, Event::Step(h));
        for event in self.net.parked.remove(&h).unwrap_or_default() {
            self.handle(event);
        }
        match &self.hosts[h] {
            Host::Primary(_) => self.primary_step(h),
            Host::Backup(_) => self.backup_step(h),
            Host::Spare | Host::Down(_) => {}
        }
    }

    /// Whether the VM is protected again: a primary logging to a backup that holds its log.
    pub fn redundant(&self) -> bool {
        self.hosts.iter().any(|h| match h {
            Host::Primary(p) => {
                p.rule.logging()
                    && p.channel.is_some_and(|c| {
                        let ch = &self.net.channels[c];
                        !ch.broken
                            && ch.stored > 0
                            && matches!(self.hosts[ch.backup], Host::Backup(_))
                    })
            }
            _ => false,
        })
    }

    /// Whether a host waits as a spare (redundancy can come back only then).
    pub fn has_spare(&self) -> bool {
        self.hosts.iter().any(|h| matches!(h, Host::Spare))
    }

    /// Whether some host still runs the VM.
    pub fn running(&self) -> bool {
        self.hosts.iter().any(|h| matches!(h, Host::Primary(_)))
    }

    /// Each host's state, for a failure's report.
    pub fn describe_hosts(&self) -> Vec<String> {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| match h {
                Host::Spare => format!("host {i}: spare"),
                Host::Primary(p) => format!(
                    "host {i}: primary {:?}, icount {}, {} outputs held",
                    p.rule.phase(),
                    p.machine.icount(),
                    p.held.len()
                ),
                Host::Backup(b) => format!(
                    "host {i}: backup {:?}, icount {}",
                    b.phase,
                    b.replayer.machine.icount()
                ),
                Host::Down(why) => format!("host {i}: down ({why})"),
            })
            .collect()
    }

    pub fn fail_now(&mut self, what: String) {
        self.fail(what);
    }
}
