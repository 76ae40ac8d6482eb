//! The protocol's decisions as pure state machines: inputs and the time in, decisions out.
//!
//! [`PrimaryRule`] is the primary's side of §2.2 and §2.3: which outputs the Output Rule lets
//! go (those the backup's acks cover, while the acks are fresh: see below), when a silent
//! backup counts as lost, and what the claim's answer makes of the primary. [`BackupRule`] is the backup's: when to ack (what it
//! holds, as soon as it holds it, and at least every heartbeat), when a silent primary counts
//! as lost, and that it claims only once the log it holds is consumed. Neither reads a clock,
//! a socket or a thread: time comes in as a [`Duration`] since the role began (real time in
//! `ftvm primary`/`backup`, simulated time in `ftvm-sim`), so the simulator runs exactly the
//! rules the binary runs.
//!
//! [`Bugs`] are deliberate protocol bugs, all off unless a test turns one on: the simulator
//! must find each (docs/simulator.md). Nothing outside tests and `ftvm sim --bug` sets them.
//!
//! **Fresh acks.** Every ack says how many of the primary's messages (log pieces and
//! heartbeats) the backup has heard. Hearing message `k` proves the backup was still a backup
//! when `k` reached it, and a backup goes live only after [`Timing::timeout`] of silence from
//! then. So outputs the acks cover may go until `sent(k) + Timing::lease()` (half the
//! timeout), and no later: a primary that was frozen (SIGSTOP, a stalled host) wakes to find
//! acks that arrived while it slept, and by then its backup may have gone live and written the
//! shared disk anew; an old write let out now would undo that (the simulator found this in its
//! first 200 seeds with a disk: docs/simulator.md). Such a primary waits for an ack of a
//! message it sends now, or loses the backup and claims. A claiming primary lets nothing out:
//! its backup may be live already.
//!
//! Invariants (asserted): acks never go backwards; a decided phase (alone, fenced) is final;
//! an output is releasable only when covered by a fresh ack, or once this side won its claim.

use std::collections::VecDeque;
use std::time::Duration;

use crate::Timing;
use crate::role::Claim;

/// Deliberate protocol bugs, for proving that the simulator finds them. All off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    /// The Output Rule lets an output go one ack early: when the ack covers the output before.
    pub release_early: bool,
    /// The backup acks a log piece as it starts to arrive, before it holds it.
    pub ack_before_stored: bool,
    /// The backup claims and goes live while received log is still unreplayed.
    pub live_before_drained: bool,
    /// A side that lost its peer runs on without the test-and-set.
    pub skip_test_and_set: bool,
    /// A fenced primary releases the outputs it held.
    pub fenced_releases: bool,
    /// A pair formed by a clone reuses the generation its primary won, not the next one.
    pub stale_generation_after_clone: bool,
    /// A primary whose move to another host did not complete goes on with its backup without
    /// taking the generation, though the new host may hold the machine and claim it.
    pub migration_abort_without_claim: bool,
    /// Any ack lets outputs go, however long ago the log it covers was sent, and a claiming
    /// primary still lets out what the acks cover (no lease).
    pub acks_never_expire: bool,
}

impl Bugs {
    /// Every bug, by name, one at a time (`ftvm sim --bug NAME`).
    pub const NAMES: [&'static str; 8] = [
        "release-early",
        "ack-before-stored",
        "live-before-drained",
        "skip-test-and-set",
        "fenced-releases",
        "stale-generation-after-clone",
        "migration-abort-without-claim",
        "acks-never-expire",
    ];

    /// The bug called `name`, alone.
    pub fn named(name: &str) -> Option<Bugs> {
        let mut b = Bugs::default();
        match name {
            "release-early" => b.release_early = true,
            "ack-before-stored" => b.ack_before_stored = true,
            "live-before-drained" => b.live_before_drained = true,
            "skip-test-and-set" => b.skip_test_and_set = true,
            "fenced-releases" => b.fenced_releases = true,
            "stale-generation-after-clone" => b.stale_generation_after_clone = true,
            "migration-abort-without-claim" => b.migration_abort_without_claim = true,
            "acks-never-expire" => b.acks_never_expire = true,
            _ => return None,
        }
        Some(b)
    }
}

/// Where a primary is in its generation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryPhase {
    /// Logging to a backup; outputs wait for its acks.
    Paired { generation: u64 },
    /// The backup is lost: outputs are held until the claim of `generation` is answered.
    Claiming { generation: u64 },
    /// Won: no backup, outputs flow, running as `generation`.
    Alone { generation: u64 },
    /// Lost the claim: not another output, ever.
    Fenced { generation: u64 },
}

/// What the Output Rule lets out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Nothing now (no fresh ack, or the claim is out).
    Hold,
    /// Outputs whose ticket (log length at the output) is at most this.
    UpTo(u64),
    /// Everything: this side runs alone.
    All,
    /// Nothing, ever again.
    Fenced,
}

/// Log pieces the rule remembers the send time of, at most: more are merged into the newest
/// (which keeps the older time: a shorter lease, never a longer one).
const MAX_SENDS: usize = 4096;

/// The primary's decisions.
#[derive(Debug, Clone)]
pub struct PrimaryRule {
    phase: PrimaryPhase,
    acked: u64,
    heard: Duration,
    /// Messages sent and not yet heard: (messages sent by then, when), oldest first.
    sends: VecDeque<(u64, Duration)>,
    /// The most messages an ack said the backup heard.
    heard_messages: u64,
    /// Outputs the acks cover may go until then.
    lease_until: Duration,
    timing: Timing,
    bugs: Bugs,
}

impl PrimaryRule {
    /// A primary logging to a new backup of `generation`, at time `now`.
    pub fn paired(generation: u64, timing: Timing, now: Duration, bugs: Bugs) -> PrimaryRule {
        PrimaryRule {
            phase: PrimaryPhase::Paired { generation },
            acked: 0,
            heard: now,
            sends: VecDeque::new(),
            heard_messages: 0,
            // The backup has just joined: it counts the primary's silence from no earlier.
            lease_until: now + timing.lease(),
            timing,
            bugs,
        }
    }

    /// A primary with no backup (it went live, or it starts alone) as `generation`.
    pub fn alone(generation: u64, timing: Timing, now: Duration, bugs: Bugs) -> PrimaryRule {
        PrimaryRule {
            phase: PrimaryPhase::Alone { generation },
            ..Self::paired(generation, timing, now, bugs)
        }
    }

    pub fn phase(&self) -> &PrimaryPhase {
        &self.phase
    }

    /// The log bytes the backup said it holds.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Whether the log still goes to a backup.
    pub fn logging(&self) -> bool {
        matches!(self.phase, PrimaryPhase::Paired { .. })
    }

    /// The backup said something (a heartbeat): it is alive.
    pub fn heard(&mut self, now: Duration) {
        self.heard = self.heard.max(now);
    }

    /// The channel's first `end` messages (log pieces and heartbeats) are on their way to
    /// the backup, sent at `now`.
    pub fn sent(&mut self, end: u64, now: Duration) {
        let full = self.sends.len() >= MAX_SENDS;
        match self.sends.back_mut() {
            Some(last) if last.0 >= end => {}
            // Pieces sent within a millisecond share an entry, so a busy log costs little.
            Some(last) if full || now < last.1 + Duration::from_millis(1) => last.0 = end,
            _ => self.sends.push_back((end, now)),
        }
    }

    /// The backup holds the log's first `received` bytes and heard the channel's first
    /// `messages` messages.
    pub fn ack(&mut self, received: u64, messages: u64, now: Duration) {
        self.heard(now);
        self.acked = self.acked.max(received);
        if messages <= self.heard_messages {
            return;
        }
        self.heard_messages = messages;
        while self.sends.front().is_some_and(|&(end, _)| end < messages) {
            self.sends.pop_front();
        }
        // The newest message heard reached the backup no earlier than it was sent. An ack of
        // more than was sent (a peer that lies) renews nothing.
        if let Some(&(_, at)) = self.sends.front() {
            self.lease_until = self.lease_until.max(at + self.timing.lease());
        }
    }

    /// Checks the backup's silence: `Some(generation)` to claim when it just counted as lost.
    pub fn tick(&mut self, now: Duration) -> Option<u64> {
        match self.phase {
            PrimaryPhase::Paired { .. } if self.timing.silent(self.heard, now) => self.lose(),
            _ => None,
        }
    }

    /// The channel failed (closed, a bad message): `Some(generation)` to claim, the first time.
    pub fn lose(&mut self) -> Option<u64> {
        let PrimaryPhase::Paired { generation } = self.phase else {
            return None;
        };
        if self.bugs.skip_test_and_set {
            self.phase = PrimaryPhase::Alone {
                generation: generation + 1,
            };
            return None;
        }
        self.phase = PrimaryPhase::Claiming { generation };
        Some(generation)
    }

    /// The claim's answer.
    pub fn claimed(&mut self, claim: &Claim) {
        let PrimaryPhase::Claiming { generation } = self.phase else {
            panic!("a claim answered in phase {:?}", self.phase);
        };
        self.phase = match *claim {
            Claim::Won {
                generation: g,
                next_generation,
            } => {
                assert_eq!(g, generation, "claimed another generation");
                PrimaryPhase::Alone {
                    generation: next_generation,
                }
            }
            Claim::Lost { generation: g, .. } => {
                assert_eq!(g, generation, "claimed another generation");
                PrimaryPhase::Fenced { generation }
            }
        };
    }

    /// What may leave at `now`. `next_held`: the ticket of the oldest output still held
    /// after the acked ones, which only the `release_early` bug looks at.
    pub fn release(&self, next_held: Option<u64>, now: Duration) -> Release {
        match self.phase {
            PrimaryPhase::Paired { .. } | PrimaryPhase::Claiming { .. }
                if self.bugs.acks_never_expire =>
            {
                Release::UpTo(self.acked)
            }
            PrimaryPhase::Paired { .. } if now >= self.lease_until => Release::Hold,
            PrimaryPhase::Paired { .. } => match next_held {
                Some(t) if self.bugs.release_early => Release::UpTo(self.acked.max(t)),
                _ => Release::UpTo(self.acked),
            },
            PrimaryPhase::Claiming { .. } => Release::Hold,
            PrimaryPhase::Alone { .. } => Release::All,
            PrimaryPhase::Fenced { .. } if self.bugs.fenced_releases => Release::All,
            PrimaryPhase::Fenced { .. } => Release::Fenced,
        }
    }
}

/// The backup's decisions while it replays; the phases after (claim, live, halted) are
/// [`crate::BackupPhase`]'s.
#[derive(Debug, Clone)]
pub struct BackupRule {
    received: u64,
    /// Messages heard from the primary (log pieces and heartbeats): every ack says so.
    messages: u64,
    acked: u64,
    heard: Duration,
    acked_at: Duration,
    timing: Timing,
    bugs: Bugs,
    lost: bool,
}

impl BackupRule {
    pub fn new(timing: Timing, now: Duration, bugs: Bugs) -> BackupRule {
        BackupRule {
            received: 0,
            messages: 0,
            acked: 0,
            heard: now,
            acked_at: now,
            timing,
            bugs,
            lost: false,
        }
    }

    /// Log bytes held.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Messages heard from the primary: what an ack sent now tells it.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// A piece of `len` log bytes begins to arrive: what to ack at once (only the
    /// `ack_before_stored` bug acks here).
    pub fn arriving(&mut self, len: usize, now: Duration) -> Option<u64> {
        self.heard = self.heard.max(now);
        self.messages += 1;
        if !self.bugs.ack_before_stored || self.lost {
            return None;
        }
        self.acked_at = now;
        self.acked = self.acked.max(self.received + len as u64);
        Some(self.acked)
    }

    /// Whether log that arrives now is kept. Once the primary counts as lost the log is
    /// closed: what the backup may go live with is fixed, so it must not ack another byte (the
    /// binary's reader thread stops reading; acking log it will not replay would let the
    /// primary show outputs the survivor lacks).
    pub fn takes_log(&self) -> bool {
        !self.lost
    }

    /// `len` more log bytes are held: the ack to send.
    pub fn stored(&mut self, len: usize, now: Duration) -> Option<u64> {
        assert!(self.takes_log(), "log stored after the primary was lost");
        self.heard = self.heard.max(now);
        self.received += len as u64;
        if self.received <= self.acked {
            return None;
        }
        self.acked = self.received;
        self.acked_at = now;
        Some(self.acked)
    }

    /// When (on the rule's clock) the primary was last heard.
    pub fn last_heard(&self) -> Duration {
        self.heard
    }

    /// The primary said something without log (a heartbeat).
    pub fn heard(&mut self, now: Duration) {
        self.heard = self.heard.max(now);
        self.messages += 1;
    }

    /// An ack due as a heartbeat (nothing acked for a heartbeat's time).
    pub fn heartbeat_due(&mut self, now: Duration) -> Option<u64> {
        if now.saturating_sub(self.acked_at) < self.timing.heartbeat {
            return None;
        }
        self.acked_at = now;
        Some(self.acked.max(self.received))
    }

    /// How long until a heartbeat ack is due (zero: now).
    pub fn heartbeat_wait(&self, now: Duration) -> Duration {
        self.timing
            .heartbeat
            .saturating_sub(now.saturating_sub(self.acked_at))
    }

    /// Whether the primary's silence makes it lost (decided once; the log then ends where it
    /// stopped).
    pub fn primary_lost(&mut self, now: Duration) -> bool {
        if !self.lost && self.timing.silent(self.heard, now) {
            self.lost = true;
        }
        self.lost
    }

    /// The channel itself failed: the primary is lost.
    pub fn channel_failed(&mut self) {
        self.lost = true;
    }

    /// Whether a backup whose primary is lost may claim: only once every received record has
    /// been replayed (`drained`), so going live never drops log the primary's outputs
    /// depended on.
    pub fn may_claim(&self, drained: bool) -> bool {
        self.lost && (drained || self.bugs.live_before_drained)
    }
}

/// What a primary does when its move to another host did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailedMove {
    /// Take the generation before another output: the new host may hold the machine and,
    /// when the backup does not come, claim the generation and run it from where the move
    /// stopped. Winning, this side retires its backup (it cannot go live either) and runs
    /// alone until a new clone; losing, it halts (the new host runs the VM from the very
    /// state this side stood still at).
    ClaimGeneration,
    /// Go on with the backup as if nothing happened (only the deliberate bug).
    GoOnPaired,
}

/// What a primary whose move did not complete does (§ the module doc's invariants: a side
/// shows an output only if it is the one that may run the generation).
pub fn after_failed_move(bugs: Bugs) -> AfterFailedMove {
    if bugs.migration_abort_without_claim {
        AfterFailedMove::GoOnPaired
    } else {
        AfterFailedMove::ClaimGeneration
    }
}

/// The generation a pair formed by a live clone starts at: the one after what the primary
/// runs as, which no record holds yet (`running` is the primary's generation).
pub fn clone_generation(running: u64, bugs: Bugs) -> u64 {
    if bugs.stale_generation_after_clone {
        running.saturating_sub(1)
    } else {
        running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timing() -> Timing {
        Timing {
            heartbeat: 50 * MS,
            timeout: 300 * MS,
        }
    }

    #[test]
    fn outputs_go_only_as_far_as_the_acks_and_a_won_claim_releases_all() {
        let mut p = PrimaryRule::paired(4, timing(), Duration::ZERO, Bugs::default());
        assert_eq!(p.release(Some(100), MS), Release::UpTo(0));
        p.sent(1, 2 * MS);
        p.ack(120, 1, 10 * MS);
        p.ack(90, 1, 11 * MS);
        assert_eq!(
            p.release(Some(200), 11 * MS),
            Release::UpTo(120),
            "acks never go back"
        );
        assert_eq!(p.tick(300 * MS), None, "heard at 11 ms");
        assert_eq!(p.tick(311 * MS), Some(4));
        assert_eq!(
            p.release(Some(200), 311 * MS),
            Release::Hold,
            "nothing more while claiming: the backup may be live"
        );
        p.claimed(&Claim::Won {
            generation: 4,
            next_generation: 5,
        });
        assert_eq!(p.phase(), &PrimaryPhase::Alone { generation: 5 });
        assert_eq!(p.release(None, 311 * MS), Release::All);
        assert_eq!(p.lose(), None, "a decided phase is final");
    }

    #[test]
    fn acks_of_old_messages_release_nothing_after_the_lease() {
        let mut p = PrimaryRule::paired(1, timing(), Duration::ZERO, Bugs::default());
        p.sent(1, 5 * MS);
        p.sent(2, 10 * MS);
        // The primary was frozen: the ack of message 2, sent at 10 ms, is read at 400 ms.
        p.ack(200, 2, 400 * MS);
        assert_eq!(
            p.release(Some(300), 400 * MS),
            Release::Hold,
            "the backup may have gone live since 310 ms"
        );
        // An ack of a heartbeat sent now is fresh again, and lets the old outputs go.
        p.sent(3, 401 * MS);
        p.ack(200, 3, 402 * MS);
        assert_eq!(p.release(None, 402 * MS), Release::UpTo(200));
        assert_eq!(p.release(None, 551 * MS), Release::Hold, "lease of 150 ms");
    }

    #[test]
    fn an_ack_of_messages_never_sent_renews_nothing() {
        let mut p = PrimaryRule::paired(1, timing(), Duration::ZERO, Bugs::default());
        p.sent(1, MS);
        p.ack(5000, 7, 2 * MS);
        assert_eq!(p.release(None, 149 * MS), Release::UpTo(5000), "as joined");
        assert_eq!(p.release(None, 151 * MS), Release::Hold);
    }

    #[test]
    fn a_primary_that_loses_its_claim_never_releases_again() {
        let mut p = PrimaryRule::paired(2, timing(), Duration::ZERO, Bugs::default());
        assert_eq!(p.lose(), Some(2));
        assert_eq!(p.lose(), None, "only the first loss claims");
        p.claimed(&Claim::Lost {
            generation: 2,
            winner: "backup".into(),
        });
        assert_eq!(p.release(Some(1), MS), Release::Fenced);
    }

    #[test]
    fn the_backup_acks_what_it_holds_and_claims_only_when_drained() {
        let mut b = BackupRule::new(timing(), Duration::ZERO, Bugs::default());
        assert_eq!(b.arriving(100, MS), None);
        assert_eq!(b.stored(100, 2 * MS), Some(100));
        assert_eq!(b.heartbeat_due(20 * MS), None);
        assert_eq!(b.heartbeat_due(52 * MS), Some(100));
        assert!(!b.primary_lost(300 * MS));
        assert!(b.primary_lost(302 * MS));
        assert!(!b.may_claim(false));
        assert!(b.may_claim(true));
        assert!(!b.takes_log(), "the log is closed once the primary is lost");
        assert_eq!(b.arriving(10, 303 * MS), None);
    }

    #[test]
    fn each_bug_is_named_and_changes_a_decision() {
        for name in Bugs::NAMES {
            assert_ne!(Bugs::named(name), Some(Bugs::default()), "{name}");
        }
        assert_eq!(Bugs::named("none such"), None);
        let early = Bugs::named("release-early").unwrap();
        let p = PrimaryRule::paired(1, timing(), Duration::ZERO, early);
        assert_eq!(p.release(Some(7), MS), Release::UpTo(7));
    }
}
