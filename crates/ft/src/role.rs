//! The backup's life as a state machine, and the one claim step every role takes when its peer
//! is gone.
//!
//! The decisions live here, as transitions on typed phases, so that the binary only runs the
//! phases (replays, reconnects, goes live) and prints them. The backup's rules, from the
//! paper's §4 and §6:
//! - a pass of replay that ends with the primary's own end (it powered off) stops the backup:
//!   a powered-off VM never goes live;
//! - a primary that moved is followed; only if it cannot be reached does the backup claim;
//! - a log that stops short means the primary is lost: the backup has consumed every record
//!   it received and claims the generation, unless the guest had powered off there or a newer
//!   backup replaced this one (its generation was taken; claiming would only lose);
//! - a claim won goes live at the next generation, a claim lost halts.
//!
//! Invariant (asserted): a phase only moves forward along these edges; `Live` and `Halted`
//! and `Stopped` are final.

use std::io;

use crate::control::Role;
use crate::tiebreak::{Outcome, TieBreaker, decide};

/// The result of the claim step: the test-and-set of a generation, retried while the
/// tie-breaker cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This side holds `generation`: it runs on, as `next_generation` (the pair it forms next
    /// starts there, so the old generation's record can never decide for it).
    Won {
        generation: u64,
        next_generation: u64,
    },
    /// The other side holds it: this side halts without another output.
    Lost { generation: u64, winner: String },
}

/// Claims `generation` for `who`, waiting while the tie-breaker is unreachable (`waiting`
/// hears each failure): the same step for a backup going live, a primary that lost its backup,
/// a primary taking the old backup's generation, and a migrated primary whose backup did not
/// follow.
pub fn claim(
    tb: &dyn TieBreaker,
    generation: u64,
    who: &str,
    waiting: impl FnMut(&io::Error),
) -> Claim {
    Claim::of(generation, decide(tb, generation, who, waiting))
}

impl Claim {
    /// The claim that a test-and-set's answer for `generation` makes: for a caller that asks
    /// the tie-breaker itself (the simulator's, whose answers take simulated time).
    pub fn of(generation: u64, outcome: Outcome) -> Claim {
        match outcome {
            Outcome::Won => Claim::Won {
                generation,
                next_generation: generation + 1,
            },
            Outcome::Lost { winner } => Claim::Lost { generation, winner },
        }
    }
}

/// How one pass of replay ended, as the backup saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassEnd {
    /// The log ended with the primary's own end record (a power-off or a move), not cut off.
    pub complete: bool,
    /// The primary said it moved there (`ftvm ctl migrate`).
    pub moved_to: Option<String>,
    /// The guest had powered off where the replay stopped.
    pub guest_halted: bool,
    /// A newer backup replaced this one (its generation was taken by the primary).
    pub retired: bool,
}

/// Why a backup stops without going live.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// The primary powered the VM off (`ftvm ctl poweroff`, or its guest did).
    PrimaryFinished,
    /// The log was cut where the guest had powered off: nothing to run.
    GuestPoweredOff,
    /// A newer backup took this one's place.
    Retired,
}

/// Where a backup is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupPhase {
    /// Replaying the log of `generation` in lockstep.
    Replaying { generation: u64 },
    /// The primary moved: connecting to it there to go on replaying.
    Reconnecting { generation: u64, to: String },
    /// The primary is lost: claiming `generation`.
    Claiming { generation: u64 },
    /// Won: the VM runs here as `generation`.
    Live { generation: u64 },
    /// Lost the claim to `winner`.
    Halted { generation: u64, winner: String },
    /// Stopped without going live.
    Stopped(Stop),
}

impl BackupPhase {
    /// A pass of replay of `generation` begins.
    pub fn replaying(generation: u64) -> BackupPhase {
        BackupPhase::Replaying { generation }
    }

    /// What follows a pass of replay.
    pub fn pass_ended(self, end: &PassEnd) -> BackupPhase {
        let BackupPhase::Replaying { generation } = self else {
            panic!("a pass ended in phase {self:?}");
        };
        if end.complete {
            return match &end.moved_to {
                Some(to) => BackupPhase::Reconnecting {
                    generation,
                    to: to.clone(),
                },
                None => BackupPhase::Stopped(Stop::PrimaryFinished),
            };
        }
        if end.guest_halted {
            BackupPhase::Stopped(Stop::GuestPoweredOff)
        } else if end.retired {
            BackupPhase::Stopped(Stop::Retired)
        } else {
            BackupPhase::Claiming { generation }
        }
    }

    /// The moved primary answered with the log of `generation`: replay goes on.
    pub fn reconnected(self, generation: u64) -> BackupPhase {
        assert!(
            matches!(self, BackupPhase::Reconnecting { .. }),
            "reconnected in phase {self:?}"
        );
        BackupPhase::Replaying { generation }
    }

    /// The moved primary cannot be reached: both sides hold the same machine, so the
    /// tie-breaker decides who runs it.
    pub fn reconnect_failed(self) -> BackupPhase {
        let BackupPhase::Reconnecting { generation, .. } = self else {
            panic!("a reconnect failed in phase {self:?}");
        };
        BackupPhase::Claiming { generation }
    }

    /// The claim's answer.
    pub fn claimed(self, claim: Claim) -> BackupPhase {
        let BackupPhase::Claiming { generation } = self else {
            panic!("claimed in phase {self:?}");
        };
        match claim {
            Claim::Won {
                generation: g,
                next_generation,
            } => {
                assert_eq!(g, generation, "claimed another generation");
                BackupPhase::Live {
                    generation: next_generation,
                }
            }
            Claim::Lost {
                generation: g,
                winner,
            } => {
                assert_eq!(g, generation, "claimed another generation");
                BackupPhase::Halted { generation, winner }
            }
        }
    }

    /// The role `ftvm ctl status` shows for this phase.
    pub fn role(&self) -> Role {
        match self {
            BackupPhase::Replaying { .. } | BackupPhase::Reconnecting { .. } => Role::Backup,
            BackupPhase::Claiming { .. } => Role::BackupClaiming,
            BackupPhase::Live { .. } => Role::PrimaryAlone,
            BackupPhase::Halted { .. } => Role::Halted,
            BackupPhase::Stopped(_) => Role::Stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiebreak::LockFile;

    fn cut() -> PassEnd {
        PassEnd {
            complete: false,
            moved_to: None,
            guest_halted: false,
            retired: false,
        }
    }

    #[test]
    fn a_lost_primary_is_claimed_and_a_win_goes_live_at_the_next_generation() {
        let phase = BackupPhase::replaying(3).pass_ended(&cut());
        assert_eq!(phase, BackupPhase::Claiming { generation: 3 });
        let won = Claim::Won {
            generation: 3,
            next_generation: 4,
        };
        assert_eq!(phase.claimed(won), BackupPhase::Live { generation: 4 });
    }

    #[test]
    fn a_lost_claim_halts() {
        let lost = Claim::Lost {
            generation: 3,
            winner: "primary".into(),
        };
        let phase = BackupPhase::replaying(3).pass_ended(&cut()).claimed(lost);
        assert_eq!(phase.role(), Role::Halted);
        assert!(matches!(phase, BackupPhase::Halted { generation: 3, .. }));
    }

    #[test]
    fn a_power_off_never_leads_to_a_go_live() {
        let finished = PassEnd {
            complete: true,
            ..cut()
        };
        assert_eq!(
            BackupPhase::replaying(1).pass_ended(&finished),
            BackupPhase::Stopped(Stop::PrimaryFinished)
        );
        // Cut off right where the guest powered off: still no claim, even if retired too.
        for retired in [false, true] {
            let halted = PassEnd {
                guest_halted: true,
                retired,
                ..cut()
            };
            assert_eq!(
                BackupPhase::replaying(1).pass_ended(&halted),
                BackupPhase::Stopped(Stop::GuestPoweredOff)
            );
        }
    }

    #[test]
    fn a_retired_backup_never_claims() {
        let retired = PassEnd {
            retired: true,
            ..cut()
        };
        assert_eq!(
            BackupPhase::replaying(2).pass_ended(&retired),
            BackupPhase::Stopped(Stop::Retired)
        );
    }

    #[test]
    fn a_moved_primary_is_followed_and_claimed_only_when_unreachable() {
        let moved = PassEnd {
            complete: true,
            moved_to: Some("10.0.0.9:7000".into()),
            ..cut()
        };
        let phase = BackupPhase::replaying(5).pass_ended(&moved);
        assert_eq!(
            phase,
            BackupPhase::Reconnecting {
                generation: 5,
                to: "10.0.0.9:7000".into()
            }
        );
        assert_eq!(
            phase.clone().reconnected(5),
            BackupPhase::Replaying { generation: 5 }
        );
        assert_eq!(
            phase.reconnect_failed(),
            BackupPhase::Claiming { generation: 5 }
        );
    }

    #[test]
    #[should_panic(expected = "claimed in phase")]
    fn a_phase_cannot_skip_its_claim() {
        let won = Claim::Won {
            generation: 1,
            next_generation: 2,
        };
        let _ = BackupPhase::replaying(1).claimed(won);
    }

    #[test]
    fn the_claim_step_gives_the_next_generation_to_one_side_only() {
        let dir = tempfile::tempdir().unwrap();
        let tb = LockFile::new(dir.path(), "vm.img");
        let first = claim(&tb, 7, "backup", |_| {});
        let second = claim(&tb, 7, "primary", |_| {});
        assert_eq!(
            first,
            Claim::Won {
                generation: 7,
                next_generation: 8
            }
        );
        assert!(
            matches!(second, Claim::Lost { generation: 7, winner } if winner.contains("backup"))
        );
    }
}
