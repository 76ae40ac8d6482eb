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
/// While outputs are held the runner looks for their release this often (about 0.3 ms of
/// execution): a reply should not wait a whole slice after its ack arrived, and shorter slices
/// cost the busy guest more in per-slice work than they save.
const HELD_SLICE: u64 = 100_000;
/// The longest an idle runner with held outputs waits before looking at its other inputs.
const HELD_WAIT: Duration = Duration::from_millis(5);

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
    /// The Output Rule: the outputs produced so far (console bytes, frames, disk requests) may
    /// leave the VM once [`Observer::gate`] releases this ticket. The default holds nothing.
    fn output_barrier(&mut self) -> u64 {
        0
    }
    /// Called between run slices: how far held outputs may go now. Waits at most `wait` for
    /// that to move (only called with a non-zero wait while outputs are held). It may also pace
    /// the run (an FT primary slows itself when its backup lags).
    /// `icount` is where the machine stands, `held` how many outputs wait.
    fn gate(&mut self, _icount: u64, _held: usize, _wait: Duration) -> Gate {
        Gate::Release(u64::MAX)
    }
    /// Whether the run should end cleanly now (an operator asked): held outputs still leave
    /// first.
    fn stop_requested(&self) -> bool {
        false
    }
    /// A descriptor that becomes readable when [`Observer::gate`] may release more: an idle
    /// runner with held outputs then waits on it together with its network, so a request that
    /// arrives while a reply waits for its ack is not kept waiting too.
    fn wake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
    /// Called before every slice with the machine stopped between two instructions: an
    /// observer may copy its state out (a live clone's rounds and its final copy). It must not
    /// change the guest's state. `held` is how many outputs wait for release.
    fn tend(&mut self, _machine: &mut Machine, _held: usize) {}
    /// The device backends' counters, after every slice (for status and metrics: an
    /// observer that shows them copies them out at its own pace).
    fn io_stats(&mut self, _stats: &crate::IoStats) {}
}

/// What an observer says about held outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Outputs with tickets up to this may leave.
    Release(u64),
    /// End the run now and drop held outputs: this VM must not be seen any more (it lost the
    /// test-and-set to its peer).
    Fenced,
}

/// An output waiting for its ticket.
enum Held {
    Console(Vec<u8>),
    Io {
        slot: u8,
        request: ftvm_virtio::Request,
    },
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
    /// The observer fenced this VM off: its held outputs were dropped.
    Fenced,
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
    /// Outputs waiting for the observer's release, oldest first, each with its ticket.
    held: std::collections::VecDeque<(u64, Held)>,
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
            held: Default::default(),
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

    /// Carries out the held outputs whose tickets are released, oldest first.
    fn release(&mut self, host: &mut dyn Host, obs: &mut dyn Observer, upto: u64) {
        while self.held.front().is_some_and(|(t, _)| *t <= upto) {
            let (_, out) = self.held.pop_front().expect("checked");
            match out {
                Held::Console(bytes) => host.output(&bytes),
                Held::Io { slot, request } => {
                    // A completion lands at the instruction the machine stands at now.
                    if let Some(done) = self.io.serve(slot, &request) {
                        self.apply(obs, done);
                    }
                }
            }
        }
    }

    /// The run ends with `end`: held outputs leave first, as soon as they are released.
    fn drain(&mut self, host: &mut dyn Host, obs: &mut dyn Observer, end: RunEnd) -> RunEnd {
        while !self.held.is_empty() {
            match obs.gate(self.machine.icount(), self.held.len(), HELD_WAIT) {
                Gate::Release(upto) => self.release(host, obs, upto),
                Gate::Fenced => return self.fence(),
            }
        }
        end
    }

    fn fence(&mut self) -> RunEnd {
        self.held.clear();
        RunEnd::Fenced
    }

    fn run_loop(&mut self, host: &mut dyn Host, obs: &mut dyn Observer) -> RunEnd {
        let interval = obs.checkpoint_interval().filter(|&n| n > 0);
        let mut last_checkpoint = 0;
        loop {
            obs.tend(&mut self.machine, self.held.len());
            // An observer may end the run exactly where tend left it (a migrated primary).
            if obs.stop_requested() {
                return self.drain(host, obs, RunEnd::Stopped);
            }
            let icount = self.machine.icount();
            if let Some(n) = interval
                && icount.is_multiple_of(n)
                && icount > last_checkpoint
            {
                let hash = self.machine.state_hash().0;
                obs.checkpoint(icount, hash);
                last_checkpoint = icount;
            }
            let slice = if !self.held.is_empty() {
                HELD_SLICE
            } else if self.clock == ClockMode::Realtime {
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
            let mut fresh = 0;
            let mut halt = None;
            // Applied after every effect is seen: an input is logged at the slice's end, which
            // must not come before an output's instruction in the log.
            let mut completions = Vec::new();
            for effect in self.machine.take_effects() {
                obs.effect(&effect);
                match effect.kind {
                    EffectKind::Console(bytes) => {
                        self.held.push_back((0, Held::Console(bytes)));
                        fresh += 1;
                    }
                    EffectKind::PowerOff(code) => halt = Some(RunEnd::PowerOff(code)),
                    EffectKind::Reset => halt = Some(RunEnd::Reset),
                    // Entropy leaves nothing behind in the world: no need to hold it.
                    EffectKind::Io {
                        slot,
                        request: request @ ftvm_virtio::Request::Entropy { .. },
                    } => completions.extend(self.io.serve(slot, &request)),
                    EffectKind::Io { slot, request } => {
                        self.held.push_back((0, Held::Io { slot, request }));
                        fresh += 1;
                    }
                }
            }
            for event in completions {
                self.apply(obs, event);
            }
            if fresh > 0 || halt.is_some() {
                let ticket = obs.output_barrier();
                for h in self.held.iter_mut().rev().take(fresh) {
                    h.0 = ticket;
                }
            }
            if let Some(end) = halt {
                return self.drain(host, obs, end);
            }
            match obs.gate(self.machine.icount(), self.held.len(), Duration::ZERO) {
                Gate::Release(upto) => self.release(host, obs, upto),
                Gate::Fenced => return self.fence(),
            }
            obs.io_stats(&self.io.stats);
            if obs.stop_requested() {
                return self.drain(host, obs, RunEnd::Stopped);
            }
            let machine = &self.machine;
            let frames = self.io.receive(|slot| machine.rx_ready(slot));
            let got_frames = !frames.is_empty();
            for event in frames {
                self.apply(obs, event);
            }
            let wait = match exit {
                Exit::PowerOff(code) => return self.drain(host, obs, RunEnd::PowerOff(code)),
                Exit::Reset => return self.drain(host, obs, RunEnd::Reset),
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
            // Held outputs wake the idle guest as soon as they are released (a disk write's
            // completion is an input the guest waits for).
            if !wait.is_zero() && !self.held.is_empty() {
                let mut gate_wait = wait.min(HELD_WAIT);
                if let Some(fd) = obs.wake_fd()
                    && !self.io.nets.is_empty()
                {
                    let mut fds = self.io.wait_fds();
                    fds.push(fd);
                    ftvm_net::wait_readable(&fds, gate_wait);
                    gate_wait = Duration::ZERO;
                }
                match obs.gate(self.machine.icount(), self.held.len(), gate_wait) {
                    Gate::Release(upto) => self.release(host, obs, upto),
                    Gate::Fenced => return self.fence(),
                }
                wait = Duration::ZERO;
            }
            // An idle guest wakes for frames too: with a network, the wait happens on its
            // sockets and the console is looked at after (typed keys wait at most one timer
            // period).
            if !wait.is_zero() && !self.io.nets.is_empty() {
                ftvm_net::wait_readable(&self.io.wait_fds(), wait);
                wait = Duration::ZERO;
            }
            match host.input(wait) {
                Err(Stop) => return self.drain(host, obs, RunEnd::Stopped),
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
