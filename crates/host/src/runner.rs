//! Driving a machine: slices of instructions, time, console, observers.
//!
//! In `Realtime` mode guest time follows the host's monotonic clock: the runner re-anchors the
//! guest clock as real time passes and, when the guest idles, sleeps until its next timer is due
//! or input arrives. In `Virtual` mode idle time is skipped: the clock jumps to the next deadline
//! at once, which makes runs fast and independent of host timing. Either way time enters the
//! machine only as `ClockAnchor` events, which an observer sees like any other input.

use std::time::{Duration, Instant};

use ftvm_cpu::clock::TIMEBASE_HZ;
use ftvm_machine::{Effect, EffectKind, Exit, InputEvent, Machine};

/// Instructions per run slice: small enough that console input and time updates feel immediate.
const SLICE: u64 = 4_000_000;
/// In real-time mode the clock is re-anchored after every slice, so the slice bounds how late a
/// timer can fire: about a millisecond of execution.
const REALTIME_SLICE: u64 = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClockMode {
    /// Guest time follows the host's clock (interactive use).
    Realtime,
    /// Guest time skips idle periods (tests, benchmarks): runs as fast as the CPU allows.
    Virtual,
}

/// The console and whoever decides when to stop.
pub trait Host {
    /// Console bytes from the guest.
    fn output(&mut self, bytes: &[u8]);
    /// Input for the guest, waiting at most `timeout`. `Err(Stop)` ends the run (e.g. Ctrl-A x).
    fn input(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, Stop>;
}

/// Why the host ended the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop;

/// Sees everything that crosses the machine boundary, in order.
pub trait Observer {
    /// `event` is being applied with the machine at `icount`.
    fn input(&mut self, icount: u64, event: &InputEvent);
    /// The machine produced `effect`.
    fn effect(&mut self, effect: &Effect);
    /// Instructions between checkpoints (`None`: no checkpoints).
    fn checkpoint_interval(&self) -> Option<u64> {
        None
    }
    /// The machine stands at a checkpoint (a multiple of the interval) with this state hash.
    fn checkpoint(&mut self, _icount: u64, _hash: u128) {}
    /// The run ended at `icount`.
    fn end(&mut self, _icount: u64, _how: RunEnd) {}
}

/// An observer that ignores everything.
pub struct NoObserver;

impl Observer for NoObserver {
    fn input(&mut self, _: u64, _: &InputEvent) {}
    fn effect(&mut self, _: &Effect) {}
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    PowerOff(u32),
    Reset,
    /// The host ended it (Ctrl-A x, or a script that got what it wanted or gave up).
    Stopped,
    /// The instruction count reached `Runner::stop_at`.
    ReachedLimit,
}

pub struct Runner {
    pub machine: Machine,
    pub clock: ClockMode,
    /// Stop exactly at this instruction count (snapshots, debugging).
    pub stop_at: Option<u64>,
    /// What serves the machine's device requests.
    pub io: crate::io::IoBackends,
    started: Instant,
    mtime_at_start: u64,
}

impl Runner {
    pub fn new(machine: Machine, clock: ClockMode) -> Self {
        let mtime_at_start = machine.mtime();
        Runner {
            machine,
            clock,
            stop_at: None,
            io: Default::default(),
            started: Instant::now(),
            mtime_at_start,
        }
    }

    /// The guest time that corresponds to host time now.
    fn real_mtime(&self) -> u64 {
        let ns = self.started.elapsed().as_nanos();
        self.mtime_at_start + (ns * TIMEBASE_HZ as u128 / 1_000_000_000) as u64
    }

    fn host_time_until(&self, mtime: u64) -> Duration {
        let ticks = mtime.saturating_sub(self.real_mtime());
        Duration::from_nanos((ticks as u128 * 1_000_000_000 / TIMEBASE_HZ as u128) as u64)
    }

    fn apply(&mut self, obs: &mut dyn Observer, event: InputEvent) {
        obs.input(self.machine.icount(), &event);
        self.machine.apply(&event);
    }

    /// Runs until the guest powers off or resets, or the host stops it.
    pub fn run(&mut self, host: &mut dyn Host) -> RunEnd {
        self.run_observed(host, &mut NoObserver)
    }

    /// [`Runner::run`], with `obs` seeing every input, effect and checkpoint.
    pub fn run_observed(&mut self, host: &mut dyn Host, obs: &mut dyn Observer) -> RunEnd {
        let end = self.run_loop(host, obs);
        obs.end(self.machine.icount(), end);
        end
    }

    fn run_loop(&mut self, host: &mut dyn Host, obs: &mut dyn Observer) -> RunEnd {
        let interval = obs.checkpoint_interval().filter(|&n| n > 0);
        let mut last_checkpoint = 0;
        loop {
            let icount = self.machine.icount();
            if let Some(n) = interval
                && icount.is_multiple_of(n)
                && icount > last_checkpoint
            {
                let hash = self.machine.state_hash().0;
                obs.checkpoint(icount, hash);
                last_checkpoint = icount;
            }
            let slice = if self.clock == ClockMode::Realtime {
                REALTIME_SLICE
            } else {
                SLICE
            };
            let mut target = icount + slice;
            if let Some(n) = interval {
                target = target.min((icount / n + 1) * n);
            }
            if let Some(limit) = self.stop_at {
                if icount >= limit {
                    return RunEnd::ReachedLimit;
                }
                target = target.min(limit);
            }
            let exit = self.machine.run(target);
            let mut completions = Vec::new();
            for effect in self.machine.take_effects() {
                obs.effect(&effect);
                match effect.kind {
                    EffectKind::Console(bytes) => host.output(&bytes),
                    EffectKind::PowerOff(code) => return RunEnd::PowerOff(code),
                    EffectKind::Reset => return RunEnd::Reset,
                    EffectKind::Io { slot, request } => {
                        completions.extend(self.io.serve(slot, &request));
                    }
                }
            }
            // Served synchronously, so each completion lands at the instruction where the run
            // stopped for its request: the guest sees the disk as fast as the host's page cache.
            for event in completions {
                self.apply(obs, event);
            }
            let machine = &self.machine;
            let frames = self.io.receive(|slot| machine.rx_ready(slot));
            let got_frames = !frames.is_empty();
            for event in frames {
                self.apply(obs, event);
            }
            let wait = match exit {
                Exit::PowerOff(code) => return RunEnd::PowerOff(code),
                Exit::Reset => return RunEnd::Reset,
                Exit::Reached | Exit::Io => Duration::ZERO,
                Exit::Idle { next_deadline } => match (self.clock, next_deadline) {
                    (ClockMode::Virtual, Some(t)) => {
                        self.apply(obs, InputEvent::ClockAnchor { mtime: t });
                        Duration::ZERO
                    }
                    (ClockMode::Realtime, Some(t)) => self.host_time_until(t),
                    (_, None) => Duration::from_millis(100),
                },
            };
            let mut wait = if got_frames { Duration::ZERO } else { wait };
            // An idle guest wakes for frames too: with a network, the wait happens on its
            // sockets and the console is looked at after (typed keys wait at most one timer
            // period).
            if !wait.is_zero() && !self.io.nets.is_empty() {
                ftvm_net::wait_readable(&self.io.wait_fds(), wait);
                wait = Duration::ZERO;
            }
            match host.input(wait) {
                Err(Stop) => return RunEnd::Stopped,
                Ok(Some(bytes)) => self.apply(obs, InputEvent::ConsoleInput(bytes)),
                Ok(None) => {}
            }
            if self.clock == ClockMode::Realtime {
                let mtime = self.real_mtime();
                // Only a real move forward is an input worth applying (and logging).
                if mtime > self.machine.mtime() {
                    self.apply(obs, InputEvent::ClockAnchor { mtime });
                }
            }
        }
    }
}
