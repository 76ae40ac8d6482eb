//! The VMs' hosts: a primary (a real `Machine` recorded by the real `Recorder`, its outputs let
//! go by `ftvm-ft`'s [`PrimaryRule`]), a backup (the real `Replayer` fed the log as it arrives,
//! acking and claiming by [`BackupRule`] and [`BackupPhase`]), a spare waiting for a clone, or
//! a host that is down (crashed, fenced, halted, stopped).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::rc::Rc;
use std::time::Duration;

use ftvm_ft::{BackupPhase, BackupRule, Bugs, PrimaryRule, Timing};
use ftvm_host::{Observer, RunEnd};
use ftvm_log::{LogHeader, StartState, Stream, Writer};
use ftvm_machine::{EffectKind, InputEvent, Machine};
use ftvm_replay::{Recorder, Replayer};
use ftvm_virtio::Request;

/// Guest instructions a host runs per step (one simulated millisecond: a slow, cheap VM).
pub const SLICE: u64 = 1_000;
/// Instructions between state-hash checkpoints in the log.
pub const CHECKPOINT: u64 = 50_000;
/// How far a backup replays in one step: an instruction budget (faster than the primary, so it
/// catches up) and a record budget (what a slow host gets through; a backlog is what a go-live
/// must drain).
pub const REPLAY_BUDGET: u64 = 3 * SLICE;
pub const REPLAY_RECORDS: usize = 256;
/// A slow backup host: a turn in five, two records a turn.
pub const SLOW_TURNS: u64 = 5;
pub const SLOW_RECORDS: usize = 2;

/// The recorder's output: log bytes waiting to go on the channel.
#[derive(Clone, Default)]
pub struct Outbox(Rc<RefCell<Vec<u8>>>);

impl Write for Outbox {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Outbox {
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.borrow_mut())
    }
}

/// An output held by the Output Rule until the log is acked up to `ticket`.
#[derive(Debug, Clone)]
pub struct Held {
    pub ticket: u64,
    pub output: Output,
}

/// What the VM does to the world.
#[derive(Debug, Clone)]
pub enum Output {
    /// Console bytes at stream `offset`: a reply to the clients.
    Console { offset: u64, bytes: Vec<u8> },
    /// A request to the shared disk from the device in `slot`.
    Disk { slot: u8, request: Request },
    /// The guest powered off here.
    PowerOff,
}

impl Output {
    /// For a failure's report.
    pub fn describe(&self) -> String {
        match self {
            Output::Console { offset, bytes } => {
                format!("{} console bytes at {offset}", bytes.len())
            }
            Output::Disk {
                request: Request::Block { op, .. },
                ..
            } => match op {
                ftvm_virtio::BlockOp::Read { sector, .. } => format!("a read of sector {sector}"),
                ftvm_virtio::BlockOp::Write { sector, .. } => {
                    format!("a write of sector {sector}")
                }
                ftvm_virtio::BlockOp::Flush => "a disk flush".into(),
            },
            Output::Disk { .. } => "a device request".into(),
            Output::PowerOff => "the guest's power-off".into(),
        }
    }
}

/// A test-and-set sent and not yet answered.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub generation: u64,
    pub at: Duration,
}

pub struct Primary {
    pub machine: Machine,
    rec: Recorder<Outbox>,
    outbox: Outbox,
    pub rule: PrimaryRule,
    /// The logging channel and the backup's host, while paired.
    pub channel: Option<usize>,
    /// The generation the pair (or the win) this side runs on began at.
    pub held: VecDeque<Held>,
    /// Console bytes produced so far: the stream offset of the next one.
    pub console: u64,
    next_checkpoint: u64,
    pub last_sent: Duration,
    /// Messages (log pieces, heartbeats) sent on the channel.
    pub messages_sent: u64,
    pub asked: Option<Asked>,
    /// The guest powered off: the run ends once its last outputs are out.
    pub halted: bool,
    /// When to look for a spare to clone into next.
    pub clone_at: Duration,
    /// The operator asked to move the backup to this spare.
    pub moving: Option<usize>,
    /// The operator asked to move this primary to another host.
    pub migrating: Option<Migration>,
    /// A migrated primary waits until then for its backup to reconnect (it does not run
    /// meanwhile), then claims the generation.
    pub awaiting_backup: Option<Duration>,
    /// This run of the VM on its host: the shared disk's answers name it, so an answer to a
    /// run that has ended (the host crashed, or moved the VM on) is not taken by the next.
    pub run: u64,
    /// The machine came by a migration with disk requests in flight: issue them again once
    /// this side holds the VM.
    pub reissue_pending: bool,
}

/// A primary's move to another host.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub to: usize,
    /// When the machine was sent (the guest stands still since); `None`: not yet (outputs are
    /// still held).
    pub sent: Option<Duration>,
}

/// The log's header: the simulator builds every machine itself, so it only names the guest.
fn header(icount: u64) -> LogHeader {
    LogHeader {
        start: StartState::Transferred { icount },
        start_hash: 0,
        paths: vec!["ftvm-sim kv guest".into()],
    }
}

/// A recorder whose log starts at instruction `icount`, and where its bytes collect.
fn new_log(icount: u64) -> (Recorder<Outbox>, Outbox) {
    let outbox = Outbox::default();
    let writer = Writer::new(outbox.clone(), &header(icount)).expect("in memory");
    let rec = Recorder::new(writer).with_checkpoint_interval(CHECKPOINT);
    (rec, outbox)
}

impl Primary {
    /// A primary of `machine` with `rule`; a new log starts at the machine's instruction.
    pub fn new(machine: Machine, rule: PrimaryRule, console: u64, now: Duration) -> Primary {
        let icount = machine.icount();
        let (rec, outbox) = new_log(icount);
        Primary {
            rec,
            outbox,
            rule,
            channel: None,
            held: VecDeque::new(),
            console,
            next_checkpoint: (icount / CHECKPOINT + 1) * CHECKPOINT,
            last_sent: now,
            messages_sent: 0,
            asked: None,
            halted: false,
            clone_at: now,
            moving: None,
            migrating: None,
            awaiting_backup: None,
            run: 0,
            reissue_pending: false,
            machine,
        }
    }

    /// Starts a new log for a new backup (a live clone): what was logged before is not its.
    pub fn restart_log(&mut self, rule: PrimaryRule, channel: usize, now: Duration) {
        (self.rec, self.outbox) = new_log(self.machine.icount());
        self.rule = rule;
        self.channel = Some(channel);
        self.last_sent = now;
        self.messages_sent = 0;
    }

    /// Applies an input (a client's request line, a disk completion) at the current
    /// instruction, logged first.
    pub fn input(&mut self, event: InputEvent) {
        self.rec.input(self.machine.icount(), &event);
        self.machine.apply(&event);
    }

    /// Whether the machine waits for disk requests already let out.
    pub fn disk_busy(&self) -> bool {
        !self.machine.outstanding_io().is_empty()
    }

    /// Issues the machine's unfinished disk requests again (a VM that went live or moved
    /// here: the completions of the previous run never reach this one). They are outputs of
    /// a VM that holds its generation, and go out with the next release.
    pub fn reissue_io(&mut self) {
        for (slot, request) in self.machine.outstanding_io() {
            let output = Output::Disk { slot, request };
            self.held.push_back(Held { ticket: 0, output });
        }
    }

    /// Runs one slice; new outputs are held with their ticket.
    pub fn run_slice(&mut self) {
        if self.halted {
            return;
        }
        let target = (self.machine.icount() + SLICE).min(self.next_checkpoint);
        self.machine.run(target);
        // The slice's outputs: their ticket is the log's length once the records that produced
        // them are flushed, known only after the slice.
        let mut fresh = Vec::new();
        for effect in self.machine.take_effects() {
            self.rec.effect(&effect);
            match effect.kind {
                EffectKind::Console(bytes) => {
                    let offset = self.console;
                    self.console += bytes.len() as u64;
                    fresh.push(Output::Console { offset, bytes });
                }
                EffectKind::PowerOff(_) | EffectKind::Reset => {
                    self.rec.end(self.machine.icount(), RunEnd::PowerOff(0));
                    fresh.push(Output::PowerOff);
                    self.halted = true;
                }
                EffectKind::Io { slot, request } => fresh.push(Output::Disk { slot, request }),
            }
        }
        // Whatever stopped the slice there (an I/O request's exit too), as the binary's runner
        // does: the checkpoint comes before the next step's inputs at the same instruction.
        if !self.halted && self.machine.icount() == self.next_checkpoint {
            let icount = self.machine.icount();
            self.rec.checkpoint(icount, self.machine.state_hash().0);
            self.next_checkpoint += CHECKPOINT;
        }
        let ticket = self.rec.barrier();
        self.held
            .extend(fresh.into_iter().map(|output| Held { ticket, output }));
    }

    /// Ends the log here (the VM moved away): the backup's replay completes at this
    /// instruction.
    pub fn end_log(&mut self) {
        self.rec.end(self.machine.icount(), RunEnd::Stopped);
        self.halted = true;
    }

    /// A message (a log piece or a heartbeat) goes out on the channel now: the rule times it.
    pub fn sending(&mut self, now: Duration) {
        self.last_sent = now;
        self.messages_sent += 1;
        self.rule.sent(self.messages_sent, now);
    }

    /// Log bytes produced since the last call.
    pub fn take_log(&mut self) -> Vec<u8> {
        self.rec.barrier();
        self.outbox.take()
    }
}

pub struct Backup {
    pub replayer: Replayer<io::Empty>,
    stream: Stream,
    pub rule: BackupRule,
    pub phase: BackupPhase,
    pub channel: usize,
    /// Console bytes replayed: the stream offset of the next one.
    console: Rc<Cell<u64>>,
    /// Pieces arrived and not yet stored, and when the last of them will be.
    pub storing: usize,
    pub last_store: Duration,
    /// The log's end record was replayed (the primary finished: never go live).
    pub complete: bool,
    pub asked: Option<Asked>,
    /// The primary replaced it with a new backup.
    pub retired: bool,
    /// Steps taken, and how many of them replay (1: each; more while its host is slow).
    pub turns: u64,
    pub turn_every: u64,
    /// Records it replays per turn.
    pub records_per_turn: usize,
    /// The primary said the VM moves to this host.
    pub moved_to: Option<usize>,
    /// Reconnecting to the moved primary: give up then, and when to ask again.
    pub reconnect: Option<(Duration, Duration)>,
}

/// What a backup's step came to.
pub enum BackupStep {
    Replaying,
    /// The primary is lost and the log drained: claim `generation`.
    Claim(u64),
    /// The log ended where the primary moved to this host: reconnect there.
    Reconnect(usize),
    /// Stopped without going live.
    Stopped(String),
}

impl Backup {
    pub fn new(
        machine: Machine,
        generation: u64,
        channel: usize,
        console: u64,
        timing: Timing,
        now: Duration,
        bugs: Bugs,
    ) -> Backup {
        let mut replayer = Replayer::stepping(machine);
        let count = Rc::new(Cell::new(console));
        let c = count.clone();
        replayer.on_console = Some(Box::new(move |b: &[u8]| c.set(c.get() + b.len() as u64)));
        Backup {
            replayer,
            stream: Stream::new(),
            rule: BackupRule::new(timing, now, bugs),
            phase: BackupPhase::replaying(generation),
            channel,
            console: count,
            storing: 0,
            last_store: now,
            complete: false,
            asked: None,
            retired: false,
            turns: 0,
            turn_every: 1,
            records_per_turn: REPLAY_RECORDS,
            moved_to: None,
            reconnect: None,
        }
    }

    /// Stores a piece of log that arrived: the ack to send. `None` too once the log is closed
    /// (the primary counted as lost): the piece is dropped.
    pub fn store(&mut self, bytes: &[u8], now: Duration) -> Option<u64> {
        self.storing -= 1;
        if !self.rule.takes_log() {
            return None;
        }
        self.stream.push(bytes);
        self.rule.stored(bytes.len(), now)
    }

    /// Whether the piece would be kept (the world's count of what the backup holds).
    pub fn takes_log(&self) -> bool {
        self.rule.takes_log()
    }

    /// Replays what it holds (within the step's budget), then decides.
    pub fn step(&mut self, now: Duration) -> Result<BackupStep, String> {
        let start = self.replayer.machine.icount();
        let mut drained = false;
        let mut records = 0;
        while !self.complete {
            if self.replayer.machine.icount() >= start + REPLAY_BUDGET
                || records == self.records_per_turn
            {
                break;
            }
            records += 1;
            match self.stream.next_record() {
                Err(e) => return Err(format!("the backup read a damaged log: {e}")),
                Ok(None) => {
                    drained = self.storing == 0;
                    break;
                }
                Ok(Some(record)) => match self.replayer.step(record) {
                    Err(e) => return Err(format!("the backup's replay diverged: {e}")),
                    Ok(Some(_)) => self.complete = true,
                    Ok(None) => {}
                },
            }
        }
        if self.complete {
            self.phase = self.phase.clone().pass_ended(&self.pass_end());
            return Ok(match (&self.phase, self.moved_to) {
                (BackupPhase::Reconnecting { .. }, Some(to)) => BackupStep::Reconnect(to),
                _ => BackupStep::Stopped(format!("{:?}", self.phase)),
            });
        }
        if !self.rule.primary_lost(now) || !self.rule.may_claim(drained) {
            return Ok(BackupStep::Replaying);
        }
        self.phase = self.phase.clone().pass_ended(&self.pass_end());
        match self.phase {
            BackupPhase::Claiming { generation } => Ok(BackupStep::Claim(generation)),
            ref other => Ok(BackupStep::Stopped(format!("{other:?}"))),
        }
    }

    fn pass_end(&self) -> ftvm_ft::PassEnd {
        ftvm_ft::PassEnd {
            complete: self.complete,
            moved_to: self.moved_to.map(|h| format!("host {h}")),
            guest_halted: self.replayer.halted(),
            retired: self.retired,
        }
    }

    /// The console bytes replayed so far.
    pub fn console(&self) -> u64 {
        self.console.get()
    }

    /// Goes live: the machine where replay left it, and the console bytes it produced past
    /// the log's last output (never shown by the primary) with their offset.
    pub fn into_live(self) -> (Machine, u64, Vec<u8>) {
        let unshown = self.replayer.unmatched_console().to_vec();
        let offset = self.console.get() - unshown.len() as u64;
        (self.replayer.into_machine(), offset, unshown)
    }
}

/// A host's state.
pub enum Host {
    /// Waiting for a live clone.
    Spare,
    Primary(Box<Primary>),
    Backup(Box<Backup>),
    /// Not running a VM: crashed (comes back as a spare when the fault heals), fenced,
    /// halted or stopped.
    Down(String),
}
