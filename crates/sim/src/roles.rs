//! The roles' turns in the world: a primary's step and the Output Rule's release (checked
//! against what the backup really holds), a backup's step, the claims' answers, go-live and
//! the live clone into a spare. Every decision is `ftvm-ft`'s; this file moves the pieces.

use std::rc::Rc;
use std::time::Duration;

use ftvm_ft::rule::AfterFailedMove;
use ftvm_ft::{BackupPhase, Claim, PrimaryPhase, PrimaryRule, Release, Stop, rule};
use ftvm_machine::{InputEvent, Machine};

use crate::hosts::{Asked, Backup, BackupStep, Held, Host, Migration, Output, Primary};
use crate::net::{Addr, Event, Msg, Net};
use crate::rng::Rng;
use crate::world::{
    CLAIM_RETRY, CLONE_DELAY, MIGRATE_PATIENCE, RECONNECT_PATIENCE, RECONNECT_RETRY, World,
};

impl World {
    pub(crate) fn host_receives(&mut self, h: usize, msg: Msg) {
        match &self.hosts[h] {
            Host::Primary(_) => self.primary_receives(h, msg),
            Host::Backup(_) => self.backup_receives(h, msg),
            Host::Spare => self.spare_receives(h, msg),
            Host::Down(_) => {}
        }
    }

    fn primary_receives(&mut self, h: usize, msg: Msg) {
        let now = self.net.now;
        let Host::Primary(p) = &mut self.hosts[h] else {
            unreachable!()
        };
        match msg {
            Msg::Request(line) if !p.halted => {
                self.inbox[h].push_back(InputEvent::ConsoleInput(line))
            }
            Msg::DiskDone { run, done } if run == p.run => self.inbox[h].push_back(done),
            Msg::Ack {
                channel,
                received,
                heard,
            } if p.channel == Some(channel) => p.rule.ack(received, heard, now),
            Msg::TookOver { host }
                if p.migrating
                    .is_some_and(|m| m.to == host && m.sent.is_some()) =>
            {
                self.moved_away(h)
            }
            Msg::Reconnect { backup } if p.awaiting_backup.is_some() => self.rejoin(h, backup),
            Msg::Answer {
                generation,
                outcome,
            } if p.asked.is_some_and(|a| a.generation == generation)
                && matches!(p.rule.phase(), PrimaryPhase::Claiming { .. }) =>
            {
                p.asked = None;
                p.rule.claimed(&Claim::of(generation, outcome));
                self.after_primary_claim(h);
            }
            _ => {}
        }
    }

    fn backup_receives(&mut self, h: usize, msg: Msg) {
        let now = self.net.now;
        let Host::Backup(b) = &mut self.hosts[h] else {
            unreachable!()
        };
        match msg {
            Msg::Log { channel, bytes } if b.channel == channel => {
                b.storing += 1;
                let early = b.rule.arriving(bytes.len(), now);
                // The reader thread stores pieces in the order they came.
                let delay = Duration::from_micros(self.rng.range(50, 1500));
                let when = (now + delay).max(b.last_store);
                b.last_store = when;
                let stored = Event::Stored {
                    host: h,
                    channel,
                    bytes,
                };
                self.net.at(when, stored);
                if let Some(received) = early {
                    self.send_ack(h, channel, received);
                }
            }
            Msg::Heartbeat { channel } if b.channel == channel => b.rule.heard(now),
            Msg::Retire { channel } if b.channel == channel => {
                b.retired = true;
                b.rule.channel_failed();
            }
            Msg::MovedTo { channel, to } if b.channel == channel => b.moved_to = to,
            Msg::Rejoined {
                channel,
                generation,
            } if matches!(b.phase, BackupPhase::Reconnecting { .. })
                && b.moved_to == Some(self.net.channels[channel].primary) =>
            {
                self.rejoined(h, channel, generation)
            }
            Msg::Answer {
                generation,
                outcome,
            } if b.asked.is_some_and(|a| a.generation == generation)
                && matches!(b.phase, BackupPhase::Claiming { .. }) =>
            {
                b.asked = None;
                b.phase = b.phase.clone().claimed(Claim::of(generation, outcome));
                self.after_backup_claim(h);
            }
            _ => {}
        }
    }

    /// A spare takes a live clone: the machine restored, it becomes the backup on the clone's
    /// channel and says so (its first ack), and the log follows.
    fn spare_receives(&mut self, h: usize, msg: Msg) {
        if let Msg::Migrate {
            from,
            snapshot,
            generation,
            console,
        } = msg
        {
            return self.take_over(h, from, &snapshot, generation, console);
        }
        let Msg::Clone {
            channel,
            snapshot,
            generation,
            console,
        } = msg
        else {
            return;
        };
        let machine = match Machine::restore(&snapshot) {
            Ok(m) => m,
            Err(e) => return self.fail(format!("a clone's snapshot does not restore: {e}")),
        };
        let backup = self.new_backup(machine, generation, channel, console);
        self.hosts[h] = Host::Backup(Box::new(backup));
        self.stats.clones += 1;
        self.send_ack(h, channel, 0);
    }

    pub(crate) fn primary_step(&mut self, h: usize) {
        let now = self.net.now;
        let Host::Primary(p) = &mut self.hosts[h] else {
            unreachable!()
        };
        if let Some(deadline) = p.awaiting_backup {
            // A migrated primary runs only once its backup is back, or it won the claim.
            if now < deadline {
                return;
            }
            p.awaiting_backup = None;
            p.rule.lose();
        }
        if p.rule.tick(now).is_some() {
            self.stats.backups_lost += 1;
        }
        self.tend_migration(h);
        let Host::Primary(p) = &mut self.hosts[h] else {
            unreachable!()
        };
        if p.moving.is_some() && p.held.is_empty() && p.rule.logging() {
            // The switch to a new backup: the old one holds everything shown; this side takes
            // its generation (the claim), then retires it and clones.
            p.rule.lose();
        }
        if matches!(p.rule.phase(), PrimaryPhase::Alone { .. }) && p.channel.is_some() {
            // Alone without a claim: only the skip-test-and-set bug gets here.
            self.after_primary_claim(h);
        }
        let Host::Primary(p) = &mut self.hosts[h] else {
            unreachable!()
        };
        if let PrimaryPhase::Claiming { generation } = *p.rule.phase() {
            p.asked = ask_claim(&mut self.net, &mut self.rng, h, generation, p.asked);
            // The claim blocks the VM's thread in the binary: the guest waits too.
            return;
        }
        if matches!(p.rule.phase(), PrimaryPhase::Alone { .. })
            && !p.halted
            && p.held.is_empty()
            && now >= p.clone_at
        {
            p.clone_at = now + CLONE_DELAY;
            self.try_clone(h);
        }
        let Host::Primary(p) = &mut self.hosts[h] else {
            unreachable!()
        };
        // A migrating guest stands still from the moment its machine left.
        if p.migrating.is_none_or(|m| m.sent.is_none()) {
            while let Some(event) = self.inbox[h].pop_front() {
                p.input(event);
            }
            p.run_slice();
        }
        let log = p.take_log();
        if let Some(channel) = p.channel
            && p.rule.logging()
        {
            let hb = now - p.last_sent >= self.timing.heartbeat;
            let backup = self.net.channels[channel].backup;
            if !log.is_empty() {
                p.sending(now);
                self.net.send(
                    &mut self.rng,
                    Addr::Host(h),
                    Addr::Host(backup),
                    Msg::Log {
                        channel,
                        bytes: log,
                    },
                );
            } else if hb {
                p.sending(now);
                self.net.send(
                    &mut self.rng,
                    Addr::Host(h),
                    Addr::Host(backup),
                    Msg::Heartbeat { channel },
                );
            }
        }
        self.release(h);
    }

    /// The Output Rule at work, and checked: what the rule lets go must be covered by what the
    /// backup really holds, or by this host's own win in the tie-breaker.
    fn release(&mut self, h: usize) {
        let Host::Primary(p) = &mut self.hosts[h] else {
            unreachable!()
        };
        let acked = p.rule.acked();
        let next = p.held.iter().find(|o| o.ticket > acked).map(|o| o.ticket);
        let limit = match p.rule.release(next, self.net.now) {
            Release::UpTo(a) => a,
            Release::All => u64::MAX,
            Release::Hold | Release::Fenced => return,
        };
        let (phase, channel, run) = (p.rule.phase().clone(), p.channel, p.run);
        let mut out = Vec::new();
        while p.held.front().is_some_and(|o| o.ticket <= limit) {
            out.push(p.held.pop_front().expect("checked"));
        }
        for o in out {
            if let PrimaryPhase::Fenced { generation } = phase {
                self.fail(format!(
                    "a fenced host showed output: host {h} lost generation {generation} to host {:?}",
                    self.winner(generation)
                ));
                return;
            }
            let covered = channel.is_some_and(|c| self.net.channels[c].stored >= o.ticket);
            if !covered {
                let won = match phase {
                    PrimaryPhase::Alone { generation } => self.winner(generation - 1) == Some(h),
                    _ => false,
                };
                if !won {
                    let held = channel.map(|c| self.net.channels[c].stored).unwrap_or(0);
                    self.fail(format!(
                        "Output Rule: host {h} ({phase:?}) let out {} logged by byte {}, \
                         but its backup holds only {held} bytes and the host holds no won claim",
                        o.output.describe(),
                        o.ticket
                    ));
                    return;
                }
            }
            self.stats.outputs += 1;
            match o.output {
                Output::PowerOff => {
                    self.powered_off = true;
                    self.hosts[h] = Host::Down("the guest powered off".into());
                    return;
                }
                Output::Console { offset, bytes } => {
                    self.shown = self.shown.max(offset + bytes.len() as u64);
                    let reply = Msg::Reply { offset, bytes };
                    self.net
                        .send(&mut self.rng, Addr::Host(h), Addr::Clients, reply);
                }
                Output::Disk { slot, request } => {
                    let request = Msg::DiskRequest { run, slot, request };
                    self.net
                        .send(&mut self.rng, Addr::Host(h), Addr::Disk, request);
                }
            }
        }
    }

    fn after_primary_claim(&mut self, h: usize) {
        let Host::Primary(p) = &mut self.hosts[h] else {
            unreachable!()
        };
        match *p.rule.phase() {
            PrimaryPhase::Alone { generation } => {
                if std::mem::take(&mut p.reissue_pending) {
                    p.reissue_io();
                }
                let old = p.channel.take();
                p.clone_at = self.net.now + CLONE_DELAY;
                let moving = p.moving.take();
                // It runs the VM: the network learns so (a migrated primary that won).
                self.announced = h;
                self.runs_alone(h, generation);
                if let (Some(spare), Some(old)) = (moving, old) {
                    // Moving the backup: the old one's generation is this side's now, so it
                    // can never go live even if it misses its retirement.
                    let backup = self.net.channels[old].backup;
                    let retire = Msg::Retire { channel: old };
                    self.net
                        .send(&mut self.rng, Addr::Host(h), Addr::Host(backup), retire);
                    self.stats.moves += 1;
                    // Into the spare now if nothing waits to be shown (else as any clone does,
                    // once everything held is out: a new log's tickets start afresh).
                    let Host::Primary(p) = &self.hosts[h] else {
                        unreachable!()
                    };
                    if p.held.is_empty() {
                        self.clone_into(h, spare);
                    }
                }
            }
            PrimaryPhase::Fenced { .. } => {
                if matches!(p.rule.release(None, self.net.now), Release::Fenced) {
                    p.held.clear();
                    self.hosts[h] = Host::Down("fenced: lost the claim".into());
                } else {
                    // Only a deliberate bug lets a fenced primary go on: it shows what it held.
                    self.release(h);
                }
            }
            _ => {}
        }
    }

    /// At most one host runs alone as any generation.
    fn runs_alone(&mut self, h: usize, generation: u64) {
        if let Some(&other) = self.alone.get(&generation)
            && other != h
        {
            self.fail(format!(
                "split brain: hosts {other} and {h} both run alone as generation {generation}"
            ));
        }
        self.alone.insert(generation, h);
    }

    fn try_clone(&mut self, h: usize) {
        if let Some(spare) = self.free_spare() {
            self.clone_into(h, spare);
        }
    }

    /// A spare that can take a clone now.
    pub(crate) fn free_spare(&self) -> Option<usize> {
        (0..self.hosts.len())
            .find(|&s| matches!(self.hosts[s], Host::Spare) && !self.net.is_frozen(s))
    }

    fn clone_into(&mut self, h: usize, spare: usize) {
        if !matches!(self.hosts[spare], Host::Spare) {
            return;
        }
        let now = self.net.now;
        let channel = self.net.open_channel(h, spare);
        let Host::Primary(p) = &mut self.hosts[h] else {
            unreachable!()
        };
        let PrimaryPhase::Alone { generation } = *p.rule.phase() else {
            unreachable!()
        };
        let g = rule::clone_generation(generation, self.bugs);
        let snapshot = Rc::new(p.machine.snapshot());
        let console = p.console;
        p.restart_log(
            PrimaryRule::paired(g, self.timing, now, self.bugs),
            channel,
            now,
        );
        self.net.send(
            &mut self.rng,
            Addr::Host(h),
            Addr::Host(spare),
            Msg::Clone {
                channel,
                snapshot,
                generation: g,
                console,
            },
        );
    }

    pub(crate) fn backup_step(&mut self, h: usize) {
        let now = self.net.now;
        let Host::Backup(b) = &mut self.hosts[h] else {
            unreachable!()
        };
        if let BackupPhase::Claiming { generation } = b.phase {
            b.asked = ask_claim(&mut self.net, &mut self.rng, h, generation, b.asked);
            return;
        }
        if let (BackupPhase::Reconnecting { .. }, Some((give_up, asked)), Some(to)) =
            (&b.phase, b.reconnect, b.moved_to)
        {
            if now >= give_up {
                // The moved primary is not there: both hold the same machine, the
                // tie-breaker decides.
                b.reconnect = None;
                b.phase = b.phase.clone().reconnect_failed();
                self.stats.primaries_lost += 1;
            } else if now - asked >= RECONNECT_RETRY {
                b.reconnect = Some((give_up, now));
                let ask = Msg::Reconnect { backup: h };
                self.net
                    .send(&mut self.rng, Addr::Host(h), Addr::Host(to), ask);
            }
            return;
        }
        b.turns += 1;
        if b.turns % b.turn_every != 0 {
            return;
        }
        let channel = b.channel;
        if let Some(received) = b.rule.heartbeat_due(now) {
            self.send_ack(h, channel, received);
        }
        let Host::Backup(b) = &mut self.hosts[h] else {
            unreachable!()
        };
        match b.step(now) {
            Err(e) => self.fail(e),
            Ok(BackupStep::Replaying) => {}
            Ok(BackupStep::Reconnect(to)) => {
                b.reconnect = Some((now + RECONNECT_PATIENCE, now));
                let ask = Msg::Reconnect { backup: h };
                self.net
                    .send(&mut self.rng, Addr::Host(h), Addr::Host(to), ask);
            }
            Ok(BackupStep::Claim(generation)) => {
                self.stats.primaries_lost += 1;
                b.asked = Some(Asked {
                    generation,
                    at: now,
                });
                self.net.send(
                    &mut self.rng,
                    Addr::Host(h),
                    Addr::TieBreaker,
                    Msg::Claim { generation },
                );
            }
            // A retired backup's host is free again.
            Ok(BackupStep::Stopped(_)) if b.retired => self.hosts[h] = Host::Spare,
            Ok(BackupStep::Stopped(why)) => {
                // The log it replayed ends with the guest's own power-off: the VM is off, even
                // if the primary died before it showed that (seed 198630).
                if matches!(
                    b.phase,
                    BackupPhase::Stopped(Stop::PrimaryFinished | Stop::GuestPoweredOff)
                ) {
                    self.powered_off = true;
                }
                self.hosts[h] = Host::Down(why);
            }
        }
    }

    fn after_backup_claim(&mut self, h: usize) {
        let Host::Backup(b) = &self.hosts[h] else {
            unreachable!()
        };
        match b.phase.clone() {
            BackupPhase::Live { generation } => {
                if self.powered_off {
                    self.fail(format!(
                        "host {h} went live after the guest had powered off"
                    ));
                    return;
                }
                // A log that ended where the VM moved (and the move's new host was not there)
                // is the one complete log a backup may go live with.
                if b.replayer.halted() || (b.complete && b.moved_to.is_none()) {
                    self.fail(format!(
                        "host {h} went live with a machine that had powered off"
                    ));
                    return;
                }
                let Host::Backup(b) = std::mem::replace(&mut self.hosts[h], Host::Spare) else {
                    unreachable!()
                };
                let now = self.net.now;
                let (machine, offset, unshown) = b.into_live();
                let produced = offset + unshown.len() as u64;
                if produced < self.shown {
                    self.fail(format!(
                        "Output Requirement: the world saw {} console bytes, but the VM going live \
                         on host {h} had produced only {produced}: it lacks outputs already shown",
                        self.shown
                    ));
                    return;
                }
                let mut p = Primary::new(
                    machine,
                    PrimaryRule::alone(generation, self.timing, now, self.bugs),
                    offset + unshown.len() as u64,
                    now,
                );
                p.clone_at = now + CLONE_DELAY;
                p.run = self.new_run();
                if !unshown.is_empty() {
                    p.held.push_back(Held {
                        ticket: 0,
                        output: Output::Console {
                            offset,
                            bytes: unshown,
                        },
                    });
                }
                // The dead primary's unfinished disk requests (their completions never reached
                // the log, so the guest still waits): issued again, as `ftvm backup` does when
                // it goes live (`ftvm_ft::live::reissue_pending_io`).
                p.reissue_io();
                self.hosts[h] = Host::Primary(Box::new(p));
                self.inbox[h].clear();
                self.announced = h;
                self.stats.failovers += 1;
                self.runs_alone(h, generation);
            }
            BackupPhase::Halted { .. } => self.hosts[h] = Host::Down("lost the claim".into()),
            _ => {}
        }
    }
}

impl World {
    /// A backup of `generation` on `channel` from `machine`, `console` bytes into the stream.
    fn new_backup(
        &self,
        machine: Machine,
        generation: u64,
        channel: usize,
        console: u64,
    ) -> Backup {
        let (timing, now, bugs) = (self.timing, self.net.now, self.bugs);
        Backup::new(machine, generation, channel, console, timing, now, bugs)
    }

    /// A primary asked to move: once nothing is held it sends its machine to the new host and
    /// tells the backup where the VM goes, then stands still until the new host has it. A
    /// move that does not complete is called off by `ftvm-ft`'s rule for it.
    fn tend_migration(&mut self, h: usize) {
        let now = self.net.now;
        let Host::Primary(p) = &mut self.hosts[h] else {
            unreachable!()
        };
        let Some(m) = p.migrating else { return };
        match m.sent {
            None if !p.rule.logging() => p.migrating = None,
            None if p.held.is_empty() => {
                let (Some(channel), PrimaryPhase::Paired { generation }) =
                    (p.channel, p.rule.phase().clone())
                else {
                    return;
                };
                let snapshot = Rc::new(p.machine.snapshot());
                let console = p.console;
                p.migrating = Some(Migration {
                    sent: Some(now),
                    ..m
                });
                let backup = self.net.channels[channel].backup;
                let moved = Msg::MovedTo {
                    channel,
                    to: Some(m.to),
                };
                let machine = Msg::Migrate {
                    from: h,
                    snapshot,
                    generation,
                    console,
                };
                self.net
                    .send(&mut self.rng, Addr::Host(h), Addr::Host(backup), moved);
                self.net
                    .send(&mut self.rng, Addr::Host(h), Addr::Host(m.to), machine);
            }
            Some(sent) if !p.rule.logging() || now - sent >= MIGRATE_PATIENCE => {
                p.migrating = None;
                match rule::after_failed_move(self.bugs) {
                    // The new host may hold the machine and claim the generation: this side
                    // takes it first (as when it moves its backup: retire, then clone).
                    // (A side already claiming, or alone, has taken or is taking it.)
                    AfterFailedMove::ClaimGeneration if p.rule.logging() => p.moving = Some(m.to),
                    AfterFailedMove::ClaimGeneration => {}
                    AfterFailedMove::GoOnPaired => {
                        if let Some(channel) = p.channel {
                            let backup = self.net.channels[channel].backup;
                            let off = Msg::MovedTo { channel, to: None };
                            self.net
                                .send(&mut self.rng, Addr::Host(h), Addr::Host(backup), off);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// The new host holds the machine: the log ends here and this host is free.
    fn moved_away(&mut self, h: usize) {
        let Host::Primary(p) = &mut self.hosts[h] else {
            unreachable!()
        };
        p.end_log();
        let log = p.take_log();
        if let Some(channel) = p.channel {
            let backup = self.net.channels[channel].backup;
            let bytes = Msg::Log {
                channel,
                bytes: log,
            };
            self.net
                .send(&mut self.rng, Addr::Host(h), Addr::Host(backup), bytes);
        }
        self.stats.migrations += 1;
        self.hosts[h] = Host::Spare;
        self.inbox[h].clear();
    }

    /// A spare receives a moving primary: it is the primary of `generation` from the
    /// machine's instruction, waiting for the pair's backup (see `ftvm_ft::take_over`).
    fn take_over(&mut self, h: usize, from: usize, snapshot: &[u8], generation: u64, console: u64) {
        let machine = match Machine::restore(snapshot) {
            Ok(m) => m,
            Err(e) => return self.fail(format!("a migration's snapshot does not restore: {e}")),
        };
        let now = self.net.now;
        let rule = PrimaryRule::paired(generation, self.timing, now, self.bugs);
        let mut p = Primary::new(machine, rule, console, now);
        p.awaiting_backup = Some(now + RECONNECT_PATIENCE);
        p.run = self.new_run();
        // Completions of requests in flight go to the old host's run: this side issues them
        // again once it holds the VM (the backup reconnected, or it won the claim).
        p.reissue_pending = p.disk_busy();
        self.hosts[h] = Host::Primary(Box::new(p));
        self.inbox[h].clear();
        let took = Msg::TookOver { host: h };
        self.net
            .send(&mut self.rng, Addr::Host(h), Addr::Host(from), took);
    }

    /// The moved primary's backup reconnected: the pair goes on, a new log from here.
    fn rejoin(&mut self, h: usize, backup: usize) {
        let now = self.net.now;
        let channel = self.net.open_channel(h, backup);
        let Host::Primary(p) = &mut self.hosts[h] else {
            unreachable!()
        };
        let PrimaryPhase::Paired { generation } = *p.rule.phase() else {
            return;
        };
        p.awaiting_backup = None;
        p.restart_log(
            PrimaryRule::paired(generation, self.timing, now, self.bugs),
            channel,
            now,
        );
        if std::mem::take(&mut p.reissue_pending) {
            p.reissue_io();
        }
        self.announced = h;
        let hello = Msg::Rejoined {
            channel,
            generation,
        };
        self.net
            .send(&mut self.rng, Addr::Host(h), Addr::Host(backup), hello);
    }

    /// The backup follows its moved primary: the same machine, a new log.
    fn rejoined(&mut self, h: usize, channel: usize, generation: u64) {
        let Host::Backup(b) = std::mem::replace(&mut self.hosts[h], Host::Spare) else {
            unreachable!()
        };
        let phase = b.phase.clone().reconnected(generation);
        let (turn_every, records_per_turn, console) =
            (b.turn_every, b.records_per_turn, b.console());
        let mut next = self.new_backup(b.replayer.into_machine(), generation, channel, console);
        (next.phase, next.turn_every, next.records_per_turn) =
            (phase, turn_every, records_per_turn);
        self.hosts[h] = Host::Backup(Box::new(next));
        self.send_ack(h, channel, 0);
    }
}

/// Sends host `h`'s test-and-set of `generation` unless one is out and not yet due for a retry
/// (`decide` in the binary retries too); what is out afterwards.
fn ask_claim(
    net: &mut Net,
    rng: &mut Rng,
    h: usize,
    generation: u64,
    asked: Option<Asked>,
) -> Option<Asked> {
    let now = net.now;
    if asked.is_some_and(|a| a.generation == generation && now - a.at < CLAIM_RETRY) {
        return asked;
    }
    net.send(
        rng,
        Addr::Host(h),
        Addr::TieBreaker,
        Msg::Claim { generation },
    );
    Some(Asked {
        generation,
        at: now,
    })
}
