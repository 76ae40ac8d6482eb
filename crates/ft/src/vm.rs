//! A protected VM's observer across its whole life: alone, cloning into a new backup, paired,
//! and alone again after losing the backup (then cloning into a spare, if it has one).
//!
//! One VM process lives through many pairs. Each pair has its own log (starting from where
//! the VM stood when the pair formed) and its own FT generation; the VM keeps its outputs'
//! tickets increasing across pairs (each pair's tickets are offset past the previous pair's),
//! so an output held under one pair is never mistaken for one of the next.
//!
//! Where the VM stands with respect to a backup is one [`Pairing`] at a time; a clone in
//! progress is the [`CloneSlot`] beside it (copying, or draining held outputs before the
//! switch).
//!
//! Changing the backup of a running pair (moving the backup) follows the paper: the new
//! backup is cloned while the old one still protects the VM; at the switch the primary waits
//! until the old backup holds everything, takes the old generation's lock itself (so the old
//! backup can never go live, even if it misses the message that retires it), retires it, and
//! the new pair starts at the next generation.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ftvm_host::{Gate, Observer, RunEnd};
use ftvm_log::{LogHeader, StartState};
use ftvm_machine::{Effect, InputEvent, Machine};

use crate::clone::{CloneFailure, CloneJob, Step};
use crate::control::{CloneState, CloneStatus, Control, IoCounts, Role};
use crate::event::{Event, emit};
use crate::follow::claim_step;
use crate::primary::{FtPrimary, PrimaryConfig};
use crate::role::Claim;
use crate::rule::{AfterFailedMove, PrimaryPhase};
use crate::tiebreak::TieBreaker;

/// How long a switch to a new backup waits for the old one to ack the log.
const SWITCH_PATIENCE: Duration = Duration::from_secs(2);

/// The VM's observer: see the module doc.
pub struct FtVm {
    cfg: PrimaryConfig,
    tb: Arc<dyn TieBreaker>,
    control: Arc<Control>,
    pairing: Pairing,
    clone: CloneSlot,
    /// Where to clone a new backup when the VM runs alone.
    spares: VecDeque<String>,
    /// Added to the pair's tickets: everything of earlier pairs sorts before.
    base: u64,
    last_ticket: u64,
    /// Set by [`FtVm::end`]: no new pair may start after the run ended.
    ended: bool,
    /// A clone switched over to a new backup that has not yet confirmed holding the machine.
    confirming: Option<Confirming>,
    /// A VM gone live after a failover says when its first output leaves.
    first_output_pending: bool,
    /// When (on the config's clock) the device counters were last copied into the status.
    io_shown: Option<Duration>,
}

/// A switched clone waiting for its new backup's confirmation (its `CloneDone`): only then
/// is the new backup in lockstep for the operator (the event, the status, the count), so
/// `ftvm ctl add-backup` never reports a backup that failed while rebuilding the machine.
struct Confirming {
    target: String,
    icount: u64,
    generation: u64,
    summary: crate::event::CloneSummary,
}

/// The clone beside the pairing: at most one at a time.
enum CloneSlot {
    Idle,
    /// Pre-copy rounds while the guest runs.
    Copying(CloneJob),
    /// The rest is small, but outputs are held: the next gate releases them all once the
    /// backup acks them, so the switch finds nothing held and no I/O in flight. The gate then
    /// puts the job back to `Copying`, and the next `tend` decides again.
    Draining(CloneJob),
}

impl CloneSlot {
    fn job_mut(&mut self) -> Option<&mut CloneJob> {
        match self {
            CloneSlot::Idle => None,
            CloneSlot::Copying(job) | CloneSlot::Draining(job) => Some(job),
        }
    }

    fn take(&mut self) -> Option<CloneJob> {
        match std::mem::replace(self, CloneSlot::Idle) {
            CloneSlot::Idle => None,
            CloneSlot::Copying(job) | CloneSlot::Draining(job) => Some(job),
        }
    }
}

/// Where the VM stands with respect to a backup: one of these at a time.
enum Pairing {
    /// No backup: FT off, or the last one was lost and this side won.
    Alone,
    /// A backup runs in lockstep.
    Paired(FtPrimary),
    /// The VM moved to the primary at `to`; its backup, told so, follows there. The run ends
    /// here, and the pair is kept only to hand the backup the log's end.
    Moved { to: String, pair: Option<FtPrimary> },
    /// Lost the old generation's claim while switching backups: no output may leave again.
    Fenced,
}

impl Pairing {
    fn pair(&self) -> Option<&FtPrimary> {
        match self {
            Pairing::Paired(p) | Pairing::Moved { pair: Some(p), .. } => Some(p),
            _ => None,
        }
    }

    fn pair_mut(&mut self) -> Option<&mut FtPrimary> {
        match self {
            Pairing::Paired(p) | Pairing::Moved { pair: Some(p), .. } => Some(p),
            _ => None,
        }
    }

    /// The current backup's pair, leaving the VM alone (a moved or fenced VM keeps its phase).
    fn take_pair(&mut self) -> Option<FtPrimary> {
        match std::mem::replace(self, Pairing::Alone) {
            Pairing::Paired(p) => Some(p),
            Pairing::Moved { to, pair } => {
                *self = Pairing::Moved { to, pair: None };
                pair
            }
            other => {
                *self = other;
                None
            }
        }
    }
}

impl FtVm {
    /// A VM running alone (FT off until a backup is added) at `cfg.generation`.
    pub fn alone(
        cfg: PrimaryConfig,
        tb: Arc<dyn TieBreaker>,
        control: Arc<Control>,
        spares: Vec<String>,
    ) -> FtVm {
        let vm = FtVm {
            cfg,
            tb,
            control,
            pairing: Pairing::Alone,
            clone: CloneSlot::Idle,
            spares: spares.into(),
            base: 1,
            last_ticket: 1,
            ended: false,
            io_shown: None,
            confirming: None,
            first_output_pending: false,
        };
        vm.show_alone();
        vm
    }

    /// A VM already paired (its backup started from the same boot or snapshot).
    pub fn paired(mut self, pair: FtPrimary) -> FtVm {
        let g = pair.generation();
        self.cfg.generation = g;
        self.pairing = Pairing::Paired(pair);
        self.control
            .enter_primary_phase(&PrimaryPhase::Paired { generation: g });
        self
    }

    /// This VM went live here after its primary was lost: its first output is an event.
    pub fn after_failover(mut self) -> FtVm {
        self.first_output_pending = true;
        self
    }

    pub fn generation(&self) -> u64 {
        self.cfg.generation
    }

    /// Log bytes of the current pair.
    pub fn log_bytes(&self) -> u64 {
        self.pairing.pair().map_or(0, |p| p.log_bytes())
    }

    /// Time the current pair's log spent waiting for room in its outbox.
    pub fn stalled(&self) -> Duration {
        self.pairing.pair().map_or(Duration::ZERO, |p| p.stalled())
    }

    /// After the run: lets the current backup get the log's end (see [`FtPrimary::finish`]).
    pub fn finish(mut self, patience: Duration) -> bool {
        match self.pairing.take_pair() {
            Some(p) => p.finish(patience),
            None => true,
        }
    }

    fn show_alone(&self) {
        let generation = self.cfg.generation;
        self.control
            .enter_primary_phase(&PrimaryPhase::Alone { generation });
    }

    /// The pair lost its backup and this side won: run alone, and clone into a spare.
    fn on_alone(&mut self) {
        if let Some(p) = self.pairing.take_pair() {
            self.cfg.generation = p.generation() + 1;
            self.show_alone();
        }
    }

    /// Where the VM moved (`ftvm ctl migrate`), if it did: its run ended for that.
    pub fn moved_to(&self) -> Option<&str> {
        match &self.pairing {
            Pairing::Moved { to, .. } => Some(to),
            _ => None,
        }
    }

    fn start_clone(&mut self, target: String, ram_size: u64, migrate: bool) {
        let (generation, takeover) = match (migrate, self.pairing.pair().is_some()) {
            // The moved primary continues this pair (or this VM's generation, alone).
            (true, paired) => (self.cfg.generation, Some(paired)),
            // Moving the backup: the new pair takes the next generation at the switch.
            (false, true) => (self.cfg.generation + 1, None),
            // Alone: the generation this VM runs as, which no record holds yet.
            (false, false) => (
                crate::rule::clone_generation(self.cfg.generation, crate::rule::Bugs::default()),
                None,
            ),
        };
        let job = CloneJob::start(
            &target,
            generation,
            &self.cfg.lock,
            ram_size,
            takeover,
            self.cfg.timing,
            self.cfg.security.clone(),
        );
        match job {
            Ok(job) => {
                emit(Event::CloneStarted {
                    to: target.clone(),
                    migrate,
                });
                self.control
                    .update(|s| s.clone = CloneStatus::sending(&target, CloneState::Starting));
                self.set_clone(CloneSlot::Copying(job));
            }
            Err(e) => self.clone_failed(&target, e),
        }
    }

    /// Sets the clone slot (the control socket refuses another clone while it is full); the
    /// job that was there.
    fn set_clone(&mut self, slot: CloneSlot) -> Option<CloneJob> {
        let busy = !matches!(slot, CloneSlot::Idle);
        self.control.cloning.store(busy, Ordering::Relaxed);
        std::mem::replace(&mut self.clone, slot).take()
    }

    fn clone_failed(&mut self, target: &str, why: impl std::fmt::Display) {
        emit(Event::CloneFailed {
            to: target.to_string(),
            why: why.to_string(),
            paired: self.pairing.pair().is_some(),
        });
        self.control.update(|s| {
            s.clone = CloneStatus::sending(
                target,
                CloneState::Failed {
                    why: why.to_string(),
                },
            )
        });
    }

    /// A switched clone ends when its new backup confirms holding the machine, or fails if
    /// the pair is lost first.
    fn settle_confirmation(&mut self) {
        let Some(c) = self.confirming.take() else {
            return;
        };
        match self.pairing.pair() {
            Some(p) if p.confirmed() => {
                emit(Event::BackupInLockstep {
                    to: c.target.clone(),
                    icount: c.icount,
                    generation: c.generation,
                    summary: c.summary,
                });
                self.control.update(|s| {
                    s.clone = CloneStatus::sending(
                        &c.target,
                        CloneState::Done {
                            icount: c.icount,
                            rounds: c.summary.rounds as u32,
                            paused_ms: c.summary.paused_ms,
                        },
                    );
                    s.clones_done += 1;
                });
            }
            Some(p) if !p.is_alone() => {
                self.confirming = Some(c);
                return;
            }
            _ => self.clone_failed(
                &c.target,
                "the new backup was lost before it confirmed holding the machine",
            ),
        }
        self.control.cloning.store(false, Ordering::Relaxed);
    }

    /// A migration is ready: the state goes to the new primary and this VM's run ends there;
    /// the backup (told where to go) replays to the same instruction and reconnects to it.
    fn switch_primary(&mut self, job: CloneJob, m: &mut Machine) {
        let target = job.target.clone();
        let paired = self.pairing.pair().is_some();
        if job.generation != self.cfg.generation || job.takeover != Some(paired) {
            return self.clone_failed(&target, "the pair changed during the migration; retry");
        }
        // Nothing is held here (see `tend`): the backup already holds everything shown.
        if let Some(p) = self.pairing.pair() {
            p.send_moved_to(&target);
        }
        let icount = m.icount();
        let delivered = job.finish(m).and_then(|h| {
            // The new primary must hold the whole machine before this one stops.
            let sent = h
                .sender
                .join()
                .map_err(|_| Arc::new(CloneFailure::ThreadDied("sender")))?;
            sent.map_err(|error| {
                Arc::new(CloneFailure::Sending {
                    to: target.clone(),
                    error,
                })
            })?;
            let done = h
                .acks
                .join()
                .map_err(|_| Arc::new(CloneFailure::ThreadDied("ack reader")))?;
            done.map_err(|e| Arc::new(CloneFailure::NewBackup(e)))?;
            Ok((h.progress, h.paused))
        });
        match delivered {
            Ok((progress, paused)) => {
                emit(Event::MovedAway {
                    to: target.clone(),
                    icount,
                    summary: progress.summary(paused),
                });
                self.control.update(|s| {
                    s.role = Role::MovedTo { to: target.clone() };
                    s.clone = CloneStatus::sending(&target, CloneState::Moved { icount });
                    s.clones_done += 1;
                });
                let pair = self.pairing.take_pair();
                self.pairing = Pairing::Moved { to: target, pair };
            }
            Err(why) => {
                self.clone_failed(&target, why);
                match crate::rule::after_failed_move(crate::rule::Bugs::default()) {
                    AfterFailedMove::ClaimGeneration => self.take_own_generation(),
                    AfterFailedMove::GoOnPaired => {
                        if let Some(p) = self.pairing.pair() {
                            p.send_moved_to("");
                        }
                    }
                }
            }
        }
    }

    /// After a move that did not complete: the new host may hold the machine (its
    /// confirmation is what went missing) and, without a backup, claims this VM's generation
    /// to run it. So this side takes the generation first: won, it retires its backup (which
    /// cannot go live at this generation either) and runs alone at the next one, cloning into
    /// a spare as after any failover; lost, the new host runs the VM from the very state this
    /// one stood still at, and this one halts.
    fn take_own_generation(&mut self) {
        let old = self.pairing.take_pair();
        if let Some(next) = self.take_generation(old) {
            self.cfg.generation = next;
            self.show_alone();
        }
    }

    /// Claims the generation this VM runs as, so no other holder of the machine can run it:
    /// won, `old` (the backup of that generation) is retired and the next generation is
    /// returned; lost, the VM is fenced and shows nothing again.
    fn take_generation(&mut self, old: Option<FtPrimary>) -> Option<u64> {
        let g = self.cfg.generation;
        match claim_step(&*self.tb, g, &self.cfg.who) {
            Claim::Won {
                next_generation, ..
            } => {
                if let Some(old) = old {
                    old.retire();
                }
                Some(next_generation)
            }
            Claim::Lost { .. } => {
                self.control
                    .enter_primary_phase(&PrimaryPhase::Fenced { generation: g });
                self.pairing = Pairing::Fenced;
                None
            }
        }
    }

    /// The clone is ready: the switch, with the machine stopped where it stands.
    fn switch(&mut self, job: CloneJob, m: &mut Machine) {
        let target = job.target.clone();
        let mut g = self.cfg.generation;
        let expected = if self.pairing.pair().is_some() {
            g + 1
        } else {
            g
        };
        if job.generation != expected {
            return self.clone_failed(&target, "the pair changed during the clone; retry");
        }
        if let Some(old) = self.pairing.take_pair() {
            // Nothing is held here (see `tend`), so the old backup holds everything the VM has
            // shown; it must never go live again: this side takes its generation.
            let Some(next) = self.take_generation(Some(old)) else {
                return;
            };
            g = next;
            self.cfg.generation = g;
        }
        let icount = m.icount();
        let handoff = match job.finish(m) {
            Ok(h) => h,
            Err(why) => {
                self.show_alone();
                return self.clone_failed(&target, why);
            }
        };
        let header = LogHeader {
            start: StartState::Transferred { icount },
            start_hash: handoff.start_hash,
            paths: vec![],
        };
        let (paused, progress) = (handoff.paused, handoff.progress.clone());
        let mut cfg = self.cfg.clone();
        cfg.generation = g;
        match FtPrimary::start_after_clone(
            handoff,
            &header,
            cfg,
            self.tb.clone(),
            self.control.clone(),
        ) {
            Ok(p) => {
                self.base = self.last_ticket + 1;
                self.pairing = Pairing::Paired(p);
                self.control
                    .enter_primary_phase(&PrimaryPhase::Paired { generation: g });
                self.control.update(|s| {
                    s.clone = CloneStatus::sending(&target, CloneState::Confirming { icount })
                });
                // No other clone starts until this one is confirmed or failed.
                self.control.cloning.store(true, Ordering::Relaxed);
                self.confirming = Some(Confirming {
                    target,
                    icount,
                    generation: g,
                    summary: progress.summary(paused),
                });
            }
            Err(e) => {
                self.show_alone();
                self.clone_failed(&target, e);
            }
        }
    }
}

impl Observer for FtVm {
    fn input(&mut self, icount: u64, event: &InputEvent) {
        if let Some(p) = self.pairing.pair_mut() {
            p.input(icount, event)
        }
    }

    fn effect(&mut self, effect: &Effect) {
        if self.first_output_pending && leaves_the_vm(effect) {
            self.first_output_pending = false;
            emit(Event::FirstOutput {
                generation: self.cfg.generation,
                icount: effect.icount,
            });
        }
        if let Some(p) = self.pairing.pair_mut() {
            p.effect(effect)
        }
    }

    fn checkpoint_interval(&self) -> Option<u64> {
        Some(self.cfg.checkpoint_interval).filter(|&n| n > 0)
    }

    fn checkpoint(&mut self, icount: u64, hash: u128) {
        if let Some(p) = self.pairing.pair_mut() {
            p.checkpoint(icount, hash)
        }
    }

    fn end(&mut self, icount: u64, how: RunEnd) {
        self.ended = true;
        self.set_clone(CloneSlot::Idle);
        if let Some(p) = self.pairing.pair_mut() {
            p.end(icount, how)
        }
    }

    fn output_barrier(&mut self) -> u64 {
        self.last_ticket = match self.pairing.pair_mut() {
            Some(p) => self.base + p.output_barrier(),
            None => self.base,
        };
        self.last_ticket
    }

    fn stop_requested(&self) -> bool {
        matches!(self.pairing, Pairing::Moved { .. })
            || self.control.power_off_requested()
            || self.pairing.pair().is_some_and(|p| p.stop_requested())
    }

    fn wake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.pairing.pair().and_then(|p| p.wake_fd())
    }

    fn gate(&mut self, icount: u64, held: usize, wait: Duration) -> Gate {
        if matches!(self.pairing, Pairing::Fenced) {
            return Gate::Fenced;
        }
        if let CloneSlot::Draining(_) = self.clone {
            if let Some(job) = self.clone.take() {
                self.clone = CloneSlot::Copying(job);
            }
            if let Some(p) = self.pairing.pair_mut()
                && p.wait_acked(SWITCH_PATIENCE)
            {
                // Everything held is acked: all of it may go, and the switch finds nothing held.
                return Gate::Release(u64::MAX);
            }
        }
        let Some(p) = self.pairing.pair_mut() else {
            self.control.show_progress(icount, held);
            return Gate::Release(u64::MAX);
        };
        match p.gate(icount, held, wait) {
            Gate::Fenced => Gate::Fenced,
            Gate::Release(upto) => {
                if p.is_alone() {
                    self.on_alone();
                }
                Gate::Release(self.base.saturating_add(upto))
            }
        }
    }

    fn io_stats(&mut self, stats: &ftvm_host::IoStats) {
        // Copied at the status's own pace: the runner calls this after every slice.
        let now = self.cfg.clock.now();
        if self
            .io_shown
            .is_some_and(|t| now.saturating_sub(t) < Duration::from_millis(50))
        {
            return;
        }
        self.io_shown = Some(now);
        let io = IoCounts::from(stats);
        self.control.update(|s| s.io = io);
    }

    fn tend(&mut self, m: &mut Machine, held: usize) {
        self.settle_confirmation();
        if self.ended || matches!(self.pairing, Pairing::Fenced | Pairing::Moved { .. }) {
            return;
        }
        if matches!(self.clone, CloneSlot::Idle) && self.confirming.is_none() {
            if let Some(t) = self.control.take_migrate() {
                self.start_clone(t, m.ram().size(), true);
            } else if let Some(t) = self.control.take_add_backup().or_else(|| {
                if self.pairing.pair().is_none() {
                    self.spares.pop_front()
                } else {
                    None
                }
            }) {
                self.start_clone(t, m.ram().size(), false);
            }
        }
        let Some(job) = self.clone.job_mut() else {
            return;
        };
        match job.step(m) {
            Step::Running => {
                let p = job.progress();
                let t = job.target.clone();
                let secs = job.started.elapsed().as_secs_f64();
                let copying = CloneState::Copying {
                    round: p.round,
                    pages_copied: p.pages_copied,
                    pages_held: p.pages_acked,
                    mib_sent: p.bytes_sent as f64 / (1 << 20) as f64,
                    seconds: secs,
                };
                self.control
                    .update(|s| s.clone = CloneStatus::sending(&t, copying));
            }
            Step::Failed(why) => {
                let job = self.set_clone(CloneSlot::Idle).expect("checked");
                self.clone_failed(&job.target, why);
            }
            Step::Ready if held > 0 => {
                let job = self.clone.take().expect("checked");
                self.clone = CloneSlot::Draining(job);
            }
            Step::Ready => {
                let job = self.set_clone(CloneSlot::Idle).expect("checked");
                if job.takeover.is_some() {
                    self.switch_primary(job, m);
                } else {
                    self.switch(job, m);
                }
            }
        }
    }
}

/// Whether the world sees `effect` (entropy requests are served on the host, unseen).
fn leaves_the_vm(effect: &Effect) -> bool {
    match &effect.kind {
        ftvm_machine::EffectKind::Console(_) => true,
        ftvm_machine::EffectKind::Io { request, .. } => {
            !matches!(request, ftvm_virtio::Request::Entropy { .. })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ToBackup, ToPrimary};
    use std::net::TcpListener;
    use std::time::Instant;

    /// A spare that takes the clone and, given the final state, waits `confirm_after` and
    /// confirms (`Some`) or drops the connection unconfirmed (`None`).
    fn fake_spare(confirm_after: Option<Duration>) -> (String, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let _hello = ToBackup::read(&mut s).unwrap();
            let mut pages = 0;
            loop {
                match ToBackup::read(&mut s).unwrap() {
                    ToBackup::State(_) => break,
                    _ => {
                        pages += 1;
                        ToPrimary::CloneAck { pages }.write(&mut s).unwrap();
                    }
                }
            }
            let Some(after) = confirm_after else { return };
            std::thread::sleep(after);
            ToPrimary::CloneDone.write(&mut s).unwrap();
            // Keep the channel up a while, as a backup replaying would.
            std::thread::sleep(Duration::from_secs(2));
        });
        (at, t)
    }

    fn vm_cloning_to(at: &str, dir: &std::path::Path) -> (FtVm, Arc<Control>) {
        let cfg = PrimaryConfig {
            generation: 1,
            lock: "vm".into(),
            who: "test".into(),
            timing: crate::Timing::default(),
            buffer: 1 << 20,
            max_lag: Duration::from_secs(1),
            checkpoint_interval: 0,
            clock: crate::SystemClock::shared(),
            security: crate::secure::Security::Insecure,
        };
        let control = Control::new(Role::PrimaryAlone, 1);
        *control.add_backup.lock().unwrap() = Some(at.to_string());
        let tb = Arc::new(crate::LockFile::new(dir, "vm"));
        (FtVm::alone(cfg, tb, control.clone(), vec![]), control)
    }

    /// Runs the VM's observer over an idle machine until `done` says so (or 20 s pass).
    fn drive(vm: &mut FtVm, m: &mut Machine, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(20), "stuck");
            vm.tend(m, 0);
            let _ = vm.gate(m.icount(), 0, Duration::ZERO);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_clone_is_done_only_once_the_new_backup_confirms_it() {
        let dir = tempfile::tempdir().unwrap();
        let (at, spare) = fake_spare(Some(Duration::from_millis(300)));
        let (mut vm, control) = vm_cloning_to(&at, dir.path());
        let m = &mut Machine::blank(16 << 20).unwrap();
        let state = || control.status.lock().unwrap().clone();
        drive(&mut vm, m, || {
            matches!(
                state().clone,
                CloneStatus::To {
                    state: CloneState::Confirming { .. },
                    ..
                }
            )
        });
        assert_eq!(state().clones_done, 0, "done before the confirmation");
        drive(&mut vm, m, || state().clones_done == 1);
        assert!(matches!(
            state().clone,
            CloneStatus::To {
                state: CloneState::Done { .. },
                ..
            }
        ));
        spare.join().unwrap();
    }

    #[test]
    fn a_new_backup_lost_before_it_confirms_is_a_failed_clone() {
        let dir = tempfile::tempdir().unwrap();
        let (at, spare) = fake_spare(None);
        let (mut vm, control) = vm_cloning_to(&at, dir.path());
        let m = &mut Machine::blank(16 << 20).unwrap();
        let state = || control.status.lock().unwrap().clone();
        drive(&mut vm, m, || state().clone.failed());
        assert_eq!(state().clones_done, 0);
        assert!(
            state().clone.to_string().contains("confirm"),
            "{}",
            state().clone
        );
        spare.join().unwrap();
    }
}
