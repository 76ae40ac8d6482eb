//! The backup's whole life, run as [`BackupPhase`]s: one pass of replay per primary (a primary
//! that moves ends its log where the new one starts, and the backup reconnects and goes on
//! with the same machine), then the claim when the primary is lost, then live or halted.
//!
//! And the other side of a migration, [`take_over`]: the host that receives a moving primary
//! waits for the pair's backup to reconnect, and claims the generation if it does not come.
//!
//! What touches threads, the guest's console or its devices is the [`BackupHost`]'s (the
//! binary's); every decision is here, on typed phases, and each step is an [`Event`].

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use ftvm_log::{LogError, LogHeader, StartState};
use ftvm_machine::Machine;
use ftvm_replay::{ReplayEnd, ReplayError};
use thiserror::Error;

use crate::Timing;
use crate::backup::{BackupLink, read_hello};
use crate::channel::{ChannelError, accept_within, connect_to_primary};
use crate::clock::Clock;
use crate::control::{Control, Role};
use crate::event::{Event, emit};
use crate::primary::{FtPrimary, PrimaryConfig};
use crate::role::{BackupPhase, Claim, PassEnd, Stop, claim};
use crate::rule::PrimaryPhase;
use crate::tiebreak::TieBreaker;
use crate::wire::{Hello, WireError};

/// How long a moved primary's backup gets to reconnect, and to reach the moved primary.
pub const RECONNECT_PATIENCE: Duration = Duration::from_secs(5);

/// Why a backup's life ended in an error (not a decision: those are [`BackupEnd`]s).
#[derive(Debug, Error)]
pub enum FollowError {
    #[error("the logging channel: {0}")]
    Channel(#[from] WireError),
    #[error("connecting: {0}")]
    Connect(#[from] ChannelError),
    /// The replay found the backup's execution differing from the primary's.
    #[error("replay: {0}")]
    Replay(#[from] ReplayError),
    /// A replay that stopped at an instruction limit: a backup's replay has none.
    #[error("the replay stopped at a limit")]
    StoppedAtLimit,
    /// The host's own part failed (its replay thread, its tie-breaker's configuration).
    #[error(transparent)]
    Host(Box<dyn std::error::Error + Send + Sync>),
    #[error("starting the reconnected pair: {0}")]
    Reconnected(std::io::Error),
}

/// Where one pass of replay left the backup.
pub struct Pass {
    pub result: Result<ReplayEnd, ReplayError>,
    pub machine: Machine,
    /// Console output the log had not yet confirmed (shown once live).
    pub pending_console: Vec<u8>,
    /// The guest had powered off where the replay stopped.
    pub halted: bool,
    /// The guest's IPv4 address, from the frames it sent (announced once live).
    pub guest_ip: Option<[u8; 4]>,
    pub secs: f64,
}

/// What the backup's host does for it.
pub trait BackupHost {
    /// Replays the log `link` carries until it ends, starting from `received` (the machine a
    /// clone or the previous pass left), else from the log's header.
    fn replay(&mut self, link: &BackupLink, received: Option<Machine>)
    -> Result<Pass, FollowError>;
    /// The tie-breaker holding the lock records named `lock`.
    fn tiebreaker(&mut self, lock: &str) -> Result<Arc<dyn TieBreaker>, FollowError>;
    /// The clock failure detection and heartbeats run on.
    fn clock(&self) -> Arc<dyn Clock>;
    /// How a reconnection to a moved primary is sealed.
    fn security(&self) -> crate::secure::Security;
}

/// How a backup's life ended.
pub enum BackupEnd {
    /// Stopped without going live (the primary finished, the guest had powered off, or a
    /// newer backup replaced this one).
    Stopped(Stop),
    /// Lost the claim of `generation` to `winner`.
    Halted { generation: u64, winner: String },
    /// Won: the VM runs here as `generation`, its lock records named `lock`.
    Live(Box<GoLive>),
}

/// What a backup that won goes live with.
pub struct GoLive {
    pub generation: u64,
    pub lock: String,
    pub tiebreaker: Arc<dyn TieBreaker>,
    pub machine: Machine,
    pub guest_ip: Option<[u8; 4]>,
    pub pending_console: Vec<u8>,
}

/// A backup at the start of its life: a channel whose hello was read, and the machine a live
/// clone delivered, if one did.
pub struct Joined {
    pub channel: crate::transport::Connection,
    pub hello: Hello,
    pub machine: Option<Machine>,
}

/// Runs the backup's life (see the module doc); `who` names this side in the lock record.
pub fn follow(
    host: &mut dyn BackupHost,
    joined: Joined,
    timing: Timing,
    control: &Arc<Control>,
    who: &str,
) -> Result<BackupEnd, FollowError> {
    let Joined {
        mut channel,
        mut hello,
        machine: mut received,
    } = joined;
    let mut following: Option<BackupPhase> = None;
    let mut pass_checkpoints;
    let (link, pass, phase) = loop {
        let link = BackupLink::start(channel, &hello, timing, control.clone(), host.clock())?;
        let generation = link.generation;
        let phase = match following.take() {
            Some(moved) => moved.reconnected(generation),
            None => BackupPhase::replaying(generation),
        };
        control.update(|s| s.generation = generation);
        control.enter_backup_phase(&phase);
        emit(Event::Replaying { generation });
        let mut pass = host.replay(&link, received.take())?;
        let result = std::mem::replace(
            &mut pass.result,
            Ok(ReplayEnd::LogEndsEarly {
                icount: 0,
                checkpoints: 0,
            }),
        );
        let (end, checkpoints) = pass_end(&link, result, pass.halted)?;
        pass_checkpoints = checkpoints;
        let icount = pass.machine.icount();
        let next = phase.pass_ended(&end);
        let next = match next {
            BackupPhase::Reconnecting { ref to, .. } => {
                let to = to.clone();
                emit(Event::PrimaryMoved {
                    to: to.clone(),
                    icount,
                });
                match reconnect(&to, timing, &host.security()) {
                    Ok((c, h)) => {
                        (channel, hello) = (c, h);
                        received = Some(pass.machine);
                        following = Some(next);
                        continue;
                    }
                    Err(e) => {
                        // The moved primary is gone before the pair re-formed: this side
                        // holds the same machine; the test-and-set decides who runs it.
                        emit(Event::MovedPrimaryUnreachable {
                            to,
                            error: e.to_string(),
                        });
                        next.reconnect_failed()
                    }
                }
            }
            other => other,
        };
        break (link, pass, next);
    };
    let icount = pass.machine.icount();
    if let BackupPhase::Stopped(stop) = phase {
        emit(match stop {
            Stop::PrimaryFinished => Event::PrimaryFinished {
                icount,
                checkpoints: pass_checkpoints,
                secs: pass.secs,
            },
            Stop::GuestPoweredOff => lost_event(&link, icount),
            Stop::Retired => Event::Retired { icount },
        });
        if stop == Stop::GuestPoweredOff {
            emit(Event::PoweredOffNoGoLive);
        }
        control.enter_backup_phase(&BackupPhase::Stopped(stop.clone()));
        return Ok(BackupEnd::Stopped(stop));
    }
    emit(lost_event(&link, icount));
    let BackupPhase::Claiming { generation } = phase else {
        unreachable!("after a pass: {phase:?}");
    };
    let tb = host.tiebreaker(&link.lock)?;
    control.enter_backup_phase(&phase);
    let decided = phase.claimed(claim_step(&*tb, generation, who));
    control.enter_backup_phase(&decided);
    match decided {
        BackupPhase::Live { generation } => Ok(BackupEnd::Live(Box::new(GoLive {
            generation,
            lock: link.lock.clone(),
            tiebreaker: tb,
            machine: pass.machine,
            guest_ip: pass.guest_ip,
            pending_console: pass.pending_console,
        }))),
        BackupPhase::Halted { generation, winner } => Ok(BackupEnd::Halted { generation, winner }),
        other => unreachable!("after a claim: {other:?}"),
    }
}

/// The one decide-and-halt step, with its events: the test-and-set of `generation`, retried
/// while the tie-breaker is unreachable.
pub fn claim_step(tb: &dyn TieBreaker, generation: u64, who: &str) -> Claim {
    emit(Event::Claiming {
        generation,
        on: tb.describe(),
    });
    let answer = claim(tb, generation, who, |e| {
        emit(Event::TieBreakerUnreachable {
            error: e.to_string(),
        })
    });
    emit(match &answer {
        Claim::Won {
            generation,
            next_generation,
        } => Event::ClaimWon {
            generation: *generation,
            next_generation: *next_generation,
        },
        Claim::Lost { generation, winner } => Event::ClaimLost {
            generation: *generation,
            winner: winner.clone(),
        },
    });
    answer
}

/// How a pass ended, as the phases read it, and the checkpoints it matched; a replay that
/// diverged is an error, not an end.
fn pass_end(
    link: &BackupLink,
    result: Result<ReplayEnd, ReplayError>,
    halted: bool,
) -> Result<(PassEnd, u64), FollowError> {
    let (complete, checkpoints) = match result {
        Ok(ReplayEnd::Complete { checkpoints, .. }) => (true, checkpoints),
        Ok(ReplayEnd::Until { .. }) => {
            return Err(FollowError::StoppedAtLimit);
        }
        Ok(ReplayEnd::LogEndsEarly { .. }) | Err(ReplayError::Log(LogError::Truncated { .. })) => {
            (false, 0)
        }
        Err(e) => return Err(FollowError::Replay(e)),
    };
    let end = PassEnd {
        complete,
        moved_to: link.moved_to(),
        guest_halted: halted,
        retired: link.retired(),
    };
    Ok((end, checkpoints))
}

fn lost_event(link: &BackupLink, icount: u64) -> Event {
    let now = std::time::SystemTime::now();
    let lost = link.lost().unwrap_or_else(|| crate::backup::Lost {
        why: "the log ended".into(),
        at: now,
        last_heard: now,
    });
    let ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    Event::PrimaryLost {
        why: lost.why,
        at_ms: ms(lost.at),
        last_heard_ms: ms(lost.last_heard),
        icount,
    }
}

fn reconnect(
    to: &str,
    timing: Timing,
    security: &crate::secure::Security,
) -> Result<(crate::transport::Connection, Hello), FollowError> {
    let mut c = connect_to_primary(to, RECONNECT_PATIENCE, security)?;
    let h = read_hello(&mut *c, timing)?;
    Ok((c, h))
}

/// How a migration's receiving side starts.
pub enum TakeOver {
    /// The backup reconnected: the pair goes on at the same generation.
    Paired(Box<FtPrimary>),
    /// No backup (none followed, or it did not come) and this side won: the VM runs alone as
    /// `generation`.
    Alone { generation: u64 },
    /// Another side (the backup, or the moving primary) won the claim: this side halts.
    Halted { generation: u64, winner: String },
}

/// The receiving side of a migration, holding the moved `machine`: waits at `listener` for
/// the pair's backup to reconnect (if one follows); if it does not, or none follows, the
/// test-and-set of the generation decides between this side and the others holding the same
/// machine (the backup, or a moving primary whose move did not complete).
pub fn take_over(
    machine: &mut Machine,
    listener: TcpListener,
    hello: &Hello,
    cfg: &PrimaryConfig,
    tb: Arc<dyn TieBreaker>,
    control: &Arc<Control>,
) -> Result<TakeOver, FollowError> {
    let generation = hello.generation;
    let icount = machine.icount();
    control.update(|s| {
        s.role = Role::PrimaryWaitingForBackup;
        s.generation = generation;
    });
    emit(Event::TakingOver {
        icount,
        backup_follows: hello.backup_follows,
    });
    let reconnected = if hello.backup_follows {
        accept_within(&listener, RECONNECT_PATIENCE, &cfg.security)
    } else {
        None
    };
    // A backup that comes later finds nobody: it then loses the test-and-set below.
    drop(listener);
    if let Some(stream) = reconnected {
        let header = LogHeader {
            start: StartState::Transferred { icount },
            start_hash: machine.state_hash().0,
            paths: vec![],
        };
        let pair = FtPrimary::start(stream, &header, cfg.clone(), tb, control.clone())
            .map_err(FollowError::Reconnected)?;
        emit(Event::BackupReconnected { generation });
        return Ok(TakeOver::Paired(Box::new(pair)));
    }
    // Without the backup, this side runs only if it wins the generation: the moving side,
    // if its move did not complete, claims it too before it shows another output
    // (`rule::after_failed_move`), so exactly one of them runs the VM.
    if hello.backup_follows {
        emit(Event::BackupDidNotReconnect { generation });
    }
    Ok(match claim_step(&*tb, generation, &cfg.who) {
        Claim::Won {
            next_generation, ..
        } => TakeOver::Alone {
            generation: next_generation,
        },
        Claim::Lost { winner, .. } => {
            control.enter_primary_phase(&PrimaryPhase::Fenced { generation });
            TakeOver::Halted { generation, winner }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiebreak::LockFile;
    use crate::wire::ToBackup;
    use std::cell::Cell;

    /// A bare-metal RISC-V ELF of one `j .` at the start of RAM: a machine the host hands back.
    fn spin_elf() -> Vec<u8> {
        let entry: u64 = 0x8000_0000;
        let code = 0x0000_006f_u32.to_le_bytes(); // jal x0, 0
        let mut e = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        e.resize(16, 0);
        e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        e.extend_from_slice(&243u16.to_le_bytes()); // EM_RISCV
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&entry.to_le_bytes());
        e.extend_from_slice(&64u64.to_le_bytes()); // program headers at 64
        e.extend_from_slice(&0u64.to_le_bytes()); // no sections
        e.extend_from_slice(&0u32.to_le_bytes());
        for v in [64u16, 56, 1, 64, 0, 0] {
            e.extend_from_slice(&v.to_le_bytes());
        }
        e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        e.extend_from_slice(&5u32.to_le_bytes()); // R X
        for v in [120u64, entry, entry, 4, 4, 4] {
            e.extend_from_slice(&v.to_le_bytes());
        }
        e.extend_from_slice(&code);
        e
    }

    /// Replays nothing: returns how the test says the pass ended, once the channel closed.
    struct FakeHost {
        end: Result<ReplayEnd, ReplayError>,
        halted: bool,
        dir: std::path::PathBuf,
        asked_tiebreaker: Cell<bool>,
    }

    impl BackupHost for FakeHost {
        fn security(&self) -> crate::secure::Security {
            crate::secure::Security::Insecure
        }

        fn replay(&mut self, link: &BackupLink, _: Option<Machine>) -> Result<Pass, FollowError> {
            while link.lost().is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let end = std::mem::replace(&mut self.end, Ok(ReplayEnd::Until { icount: 0 }));
            Ok(Pass {
                result: end,
                machine: Machine::bare_metal(&spin_elf(), 16 << 20).unwrap(),
                pending_console: vec![],
                halted: self.halted,
                guest_ip: None,
                secs: 0.0,
            })
        }

        fn tiebreaker(&mut self, lock: &str) -> Result<Arc<dyn TieBreaker>, FollowError> {
            self.asked_tiebreaker.set(true);
            Ok(Arc::new(LockFile::new(&self.dir, lock)))
        }

        fn clock(&self) -> Arc<dyn Clock> {
            crate::SystemClock::shared()
        }
    }

    /// A primary of generation 1 that says `then` and hangs up; the backup joined to it.
    fn primary_saying(then: Vec<ToBackup>) -> Joined {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            ToBackup::Hello(Hello::paired(1, "vm"))
                .write(&mut s)
                .unwrap();
            for m in then {
                m.write(&mut s).unwrap();
            }
        });
        let mut channel: crate::transport::Connection =
            Box::new(std::net::TcpStream::connect(at).unwrap());
        let hello = read_hello(&mut *channel, Timing::default()).unwrap();
        Joined {
            channel,
            hello,
            machine: None,
        }
    }

    fn run(then: Vec<ToBackup>, host: &mut FakeHost) -> Result<BackupEnd, FollowError> {
        run_as("backup A", then, host)
    }

    fn run_as(
        who: &str,
        then: Vec<ToBackup>,
        host: &mut FakeHost,
    ) -> Result<BackupEnd, FollowError> {
        let control = Control::new(Role::Backup, 0);
        follow(host, primary_saying(then), Timing::default(), &control, who)
    }

    fn host(dir: &std::path::Path, end: ReplayEnd, halted: bool) -> FakeHost {
        FakeHost {
            end: Ok(end),
            halted,
            dir: dir.to_path_buf(),
            asked_tiebreaker: Cell::new(false),
        }
    }

    const CUT: ReplayEnd = ReplayEnd::LogEndsEarly {
        icount: 9,
        checkpoints: 0,
    };

    #[test]
    fn a_lost_primary_is_claimed_once_and_the_second_claimant_halts() {
        let dir = tempfile::tempdir().unwrap();
        match run(vec![], &mut host(dir.path(), CUT, false)).unwrap() {
            BackupEnd::Live(live) => assert_eq!((live.generation, live.lock.as_str()), (2, "vm")),
            _ => panic!("the first claimant goes live"),
        }
        match run_as("backup B", vec![], &mut host(dir.path(), CUT, false)).unwrap() {
            BackupEnd::Halted { generation, winner } => {
                assert_eq!(generation, 1);
                assert!(winner.contains("backup A"), "{winner}");
            }
            _ => panic!("the second claimant of generation 1 must halt"),
        }
    }

    #[test]
    fn a_guest_that_powered_off_or_a_retired_backup_never_claims() {
        let dir = tempfile::tempdir().unwrap();
        let mut off = host(dir.path(), CUT, true);
        assert!(matches!(
            run(vec![], &mut off).unwrap(),
            BackupEnd::Stopped(Stop::GuestPoweredOff)
        ));
        let mut retired = host(dir.path(), CUT, false);
        assert!(matches!(
            run(vec![ToBackup::Retire], &mut retired).unwrap(),
            BackupEnd::Stopped(Stop::Retired)
        ));
        let finished = ReplayEnd::Complete {
            icount: 9,
            checkpoints: 3,
        };
        let mut done = host(dir.path(), finished, false);
        assert!(matches!(
            run(vec![], &mut done).unwrap(),
            BackupEnd::Stopped(Stop::PrimaryFinished)
        ));
        for h in [off, retired, done] {
            assert!(
                !h.asked_tiebreaker.get(),
                "a side that stops must not claim"
            );
        }
        assert!(!dir.path().join("vm.ft-lock.1").exists());
    }

    #[test]
    fn a_moved_primary_that_cannot_be_reached_is_claimed() {
        // The new host hangs up before its hello: the pair cannot re-form.
        let gone = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = gone.local_addr().unwrap().to_string();
        std::thread::spawn(move || drop(gone.accept()));
        let dir = tempfile::tempdir().unwrap();
        let moved = ReplayEnd::Complete {
            icount: 9,
            checkpoints: 0,
        };
        let mut h = host(dir.path(), moved, false);
        let end = run(vec![ToBackup::MovedTo(to)], &mut h).unwrap();
        assert!(matches!(end, BackupEnd::Live(ref l) if l.generation == 2));
        assert!(dir.path().join("vm.ft-lock.1").exists());
    }

    #[test]
    fn a_replay_that_fails_is_an_error_not_a_failover() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = host(dir.path(), CUT, false);
        h.end = Err(ReplayError::Log(LogError::NotALog));
        assert!(matches!(run(vec![], &mut h), Err(FollowError::Replay(_))));
        assert!(!h.asked_tiebreaker.get());
    }

    fn config(who: &str, generation: u64) -> PrimaryConfig {
        PrimaryConfig {
            generation,
            lock: "vm".into(),
            who: who.into(),
            timing: Timing::default(),
            buffer: 1 << 20,
            max_lag: Duration::from_secs(1),
            checkpoint_interval: 0,
            clock: crate::SystemClock::shared(),
            security: crate::secure::Security::Insecure,
        }
    }

    #[test]
    fn a_moved_primary_without_its_backup_runs_only_if_it_wins_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let tb: Arc<dyn TieBreaker> = Arc::new(LockFile::new(dir.path(), "vm"));
        let hello = Hello {
            generation: 3,
            clone_ram: 1 << 20,
            takeover: true,
            backup_follows: false,
            lock: "vm".into(),
        };
        let receive = |who: &str| {
            let mut m = Machine::bare_metal(&spin_elf(), 16 << 20).unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let control = Control::new(Role::Spare, 0);
            take_over(
                &mut m,
                listener,
                &hello,
                &config(who, 3),
                tb.clone(),
                &control,
            )
            .unwrap()
        };
        assert!(matches!(
            receive("new host"),
            TakeOver::Alone { generation: 4 }
        ));
        // The moving side, which missed the confirmation, claims its generation too: it loses
        // and halts, so only one runs the VM.
        assert!(matches!(
            claim_step(&*tb, 3, "old host"),
            Claim::Lost { ref winner, .. } if winner.contains("new host")
        ));
        assert!(matches!(
            receive("another host"),
            TakeOver::Halted { generation: 3, .. }
        ));
    }
}
