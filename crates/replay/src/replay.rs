//! Replaying: the log's inputs at their instructions, every output and checkpoint checked.

use std::io::Read;

use ftvm_log::{LogError, Reader, Record};
use ftvm_machine::{EffectKind, Exit, Machine};
use thiserror::Error;

/// The first point where the replayed machine differs from the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    pub icount: u64,
    pub pc: u64,
    pub what: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "at instruction {} (pc {:#x}): {}",
            self.icount, self.pc, self.what
        )
    }
}

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("{0}")]
    Log(#[from] LogError),
    #[error("replay diverged {0}")]
    Diverged(Divergence),
}

/// How a replay that did not diverge ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayEnd {
    /// Every record was replayed and matched, up to the log's end record.
    Complete { icount: u64, checkpoints: u64 },
    /// The log stops without an end record (the recorder died): everything in it matched.
    LogEndsEarly { icount: u64, checkpoints: u64 },
    /// Stopped at the requested instruction.
    Until { icount: u64 },
}

/// Receives the console bytes a replay produces.
pub type ConsoleSink = Box<dyn FnMut(&[u8])>;
/// Receives the device requests a replay produces: (virtio slot, request).
pub type RequestSink = Box<dyn FnMut(u8, &ftvm_virtio::Request)>;
/// A debugging hook run once at a chosen instruction.
pub type MachineHook = Box<dyn FnMut(&mut Machine)>;

pub struct Replayer<R: Read> {
    pub machine: Machine,
    /// Where the records come from; `None` when the caller hands them in ([`Replayer::step`]).
    log: Option<Reader<R>>,
    /// Console bytes replayed but not yet matched against a record.
    console: Vec<u8>,
    halted: Option<EffectKind>,
    /// Device requests replayed but not yet matched: (slot, digest).
    io: std::collections::VecDeque<(u8, u64)>,
    checkpoints: u64,
    /// Called with every console byte the replay produces (to show it).
    pub on_console: Option<ConsoleSink>,
    /// Called with every device request the replay produces (the backup learns its guest's
    /// address from the frames it would send).
    pub on_request: Option<RequestSink>,
    /// Set to the instruction count after each record is replayed (the backup reports it).
    pub progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Called at this instruction (once) with the machine, before anything else happens there:
    /// a debugging hook (e.g. to inject a fault and check that replay notices).
    pub at: Option<(u64, MachineHook)>,
}

fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let tail: String = s
        .chars()
        .rev()
        .take(200)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{tail:?}")
}

impl<R: Read> Replayer<R> {
    pub fn new(machine: Machine, log: Reader<R>) -> Self {
        Self::with_log(machine, Some(log))
    }

    fn with_log(machine: Machine, log: Option<Reader<R>>) -> Self {
        Replayer {
            machine,
            log,
            console: Vec::new(),
            halted: None,
            io: Default::default(),
            checkpoints: 0,
            on_console: None,
            on_request: None,
            progress: None,
            at: None,
        }
    }

    fn diverged(&self, what: String) -> ReplayError {
        ReplayError::Diverged(Divergence {
            icount: self.machine.icount(),
            pc: self.machine.hart().pc(),
            what,
        })
    }

    /// Runs the machine to exactly `target`, collecting its outputs.
    fn run_to(&mut self, target: u64) -> Result<(), ReplayError> {
        while self.machine.icount() < target {
            if let Some((at, _)) = &self.at {
                let at = *at;
                if self.machine.icount() >= at {
                    let (_, mut hook) = self.at.take().expect("checked");
                    hook(&mut self.machine);
                } else if at < target {
                    self.run_to(at)?;
                    continue;
                }
            }
            let exit = self.machine.run(target);
            for effect in self.machine.take_effects() {
                match effect.kind {
                    EffectKind::Console(bytes) => {
                        if let Some(f) = &mut self.on_console {
                            f(&bytes);
                        }
                        self.console.extend_from_slice(&bytes);
                    }
                    // Replay has no devices behind the machine: requests are only checked, and
                    // their completions come from the log.
                    EffectKind::Io { slot, request } => {
                        if let Some(f) = &mut self.on_request {
                            f(slot, &request);
                        }
                        self.io.push_back((slot, ftvm_log::io_digest(&request)))
                    }
                    other => self.halted = Some(other),
                }
            }
            let short = self.machine.icount() < target;
            match exit {
                Exit::Reached | Exit::Io => {}
                Exit::Idle { .. } | Exit::PowerOff(_) | Exit::Reset if !short => {}
                Exit::Idle { .. } => {
                    return Err(self.diverged(format!(
                        "the guest is idle, but the log's next record is at instruction {target}"
                    )));
                }
                Exit::PowerOff(_) | Exit::Reset => {
                    return Err(self.diverged(format!(
                        "the guest halted ({:?}) before instruction {target}",
                        self.halted
                    )));
                }
            }
        }
        Ok(())
    }

    /// The machine, where the replay left it.
    pub fn into_machine(self) -> Machine {
        self.machine
    }

    /// Whether the replayed guest powered off or reset (a backup must not go live then).
    pub fn halted(&self) -> bool {
        self.halted.is_some()
    }

    /// Console bytes replayed after the log's last console record: the primary never showed
    /// them, so a backup that goes live shows them.
    pub fn unmatched_console(&self) -> &[u8] {
        &self.console
    }

    /// Replays the whole log, or up to instruction `until`.
    pub fn run(&mut self, until: Option<u64>) -> Result<ReplayEnd, ReplayError> {
        loop {
            let record = match self.log.as_mut().and_then(|log| log.next()) {
                None => {
                    let icount = self.machine.icount();
                    return Ok(ReplayEnd::LogEndsEarly {
                        icount,
                        checkpoints: self.checkpoints,
                    });
                }
                Some(r) => r?,
            };
            if let Some(u) = until
                && record.icount() > u
                && record.icount() >= self.machine.icount()
            {
                self.run_to(u)?;
                return Ok(ReplayEnd::Until { icount: u });
            }
            if let Some(end) = self.step(record)? {
                return Ok(end);
            }
        }
    }

    /// Replays one record: runs to its instruction, then applies or checks it. `Some` once the
    /// log's end record matched.
    pub fn step(&mut self, record: Record) -> Result<Option<ReplayEnd>, ReplayError> {
        let at = record.icount();
        if at < self.machine.icount() {
            return Err(self.diverged(format!(
                "the log has a record for instruction {at}, already passed"
            )));
        }
        self.run_to(at)?;
        if let Some(p) = &self.progress {
            p.store(at, std::sync::atomic::Ordering::Relaxed);
        }
        match record {
            Record::Input { event, .. } => self.machine.apply(&event),
            Record::Output {
                effect: EffectKind::Console(expected),
                ..
            } => {
                if self.console != expected {
                    return Err(self.diverged(format!(
                        "console output differs: recorded {}, replayed {}",
                        show(&expected),
                        show(&self.console)
                    )));
                }
                self.console.clear();
            }
            Record::Output { effect, .. } => {
                if self.halted.as_ref() != Some(&effect) {
                    return Err(self.diverged(format!(
                        "recorded output {effect:?}, replayed {:?}",
                        self.halted
                    )));
                }
            }
            Record::IoOutput { slot, digest, .. } => match self.io.pop_front() {
                Some(got) if got == (slot, digest) => {}
                got => {
                    return Err(self.diverged(format!(
                        "recorded a request from virtio slot {slot} (digest {digest:016x}), \
                         replayed {}",
                        match got {
                            Some((s, d)) => format!("one from slot {s} (digest {d:016x})"),
                            None => "none".into(),
                        }
                    )));
                }
            },
            Record::Checkpoint { hash, .. } => {
                let replayed = self.machine.state_hash().0;
                if replayed != hash {
                    return Err(self.diverged(format!(
                        "state hash {replayed:032x} differs from the recorded {hash:032x}"
                    )));
                }
                self.checkpoints += 1;
            }
            Record::End { icount, .. } => {
                if !self.console.is_empty() {
                    return Err(self.diverged(format!(
                        "replay printed {} that the recording did not",
                        show(&self.console)
                    )));
                }
                return Ok(Some(ReplayEnd::Complete {
                    icount,
                    checkpoints: self.checkpoints,
                }));
            }
        }
        Ok(None)
    }

    /// Checkpoints matched so far.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints
    }
}

impl Replayer<std::io::Empty> {
    /// A replayer the caller feeds record by record ([`Replayer::step`]): for a backup driven
    /// step by step, whose log arrives in pieces (the simulator).
    pub fn stepping(machine: Machine) -> Self {
        Self::with_log(machine, None)
    }
}
