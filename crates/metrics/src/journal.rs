//! The FT events this process emitted, kept for its metrics and its status page: counters
//! that only grow, the latest events, and the timelines of the last failover and the last
//! clone.
//!
//! Fed by the process's event printer (every `ftvm_ft::emit` passes through it), so the
//! counts are exactly the events an operator saw in the log. Bounded: a fixed number of
//! recent events, and each timeline holds only its own steps.

use std::collections::VecDeque;
use std::sync::Mutex;

use ftvm_ft::Event;
use serde::Serialize;

/// Recent events kept for the page.
const RECENT: usize = 64;
/// Steps kept in one timeline (a clone's page counts are not steps).
const TIMELINE_STEPS: usize = 16;

/// An event and when it was printed (Unix ms).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stamped {
    pub t_ms: u64,
    pub event: Event,
}

/// How often each thing an operator counts happened in this process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// This side went live after its primary was lost.
    pub failovers: u64,
    /// This side (a primary) stopped hearing its backup.
    pub backups_lost: u64,
    /// This side (a backup) stopped hearing its primary.
    pub primaries_lost: u64,
    pub claims_won: u64,
    pub claims_lost: u64,
    /// A test-and-set found the tie-breaker unreachable (and retried).
    pub tie_breaker_unreachable: u64,
    pub clones_started: u64,
    pub clones_done: u64,
    pub clones_failed: u64,
    pub clones_received: u64,
    pub clones_receive_failed: u64,
}

/// What the journal holds, as the page reads it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub counts: Counts,
    pub recent: Vec<Stamped>,
    /// The last failover's steps on this side: lost, test-and-set, its answer, live, first
    /// output.
    pub failover: Vec<Stamped>,
    /// The last clone's steps: started or arriving, then done, failed or moved.
    pub clone: Vec<Stamped>,
}

#[derive(Default)]
struct Inner {
    counts: Counts,
    recent: VecDeque<Stamped>,
    failover: Vec<Stamped>,
    clone: Vec<Stamped>,
    /// A primary was lost and this side has not gone live since.
    failover_open: bool,
}

/// The journal of one process.
#[derive(Default)]
pub struct Journal {
    inner: Mutex<Inner>,
}

impl Journal {
    pub fn new() -> Journal {
        Journal::default()
    }

    /// Takes in one event printed at `t_ms`.
    pub fn record(&self, t_ms: u64, event: &Event) {
        let mut j = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let stamped = Stamped {
            t_ms,
            event: event.clone(),
        };
        if !matches!(event, Event::ClonePages { .. }) {
            if j.recent.len() == RECENT {
                j.recent.pop_front();
            }
            j.recent.push_back(stamped.clone());
        }
        j.count(event);
        j.follow_timelines(stamped);
    }

    pub fn counts(&self) -> Counts {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).counts
    }

    pub fn snapshot(&self) -> Snapshot {
        let j = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Snapshot {
            counts: j.counts,
            recent: j.recent.iter().cloned().collect(),
            failover: j.failover.clone(),
            clone: j.clone.clone(),
        }
    }
}

impl Inner {
    fn count(&mut self, event: &Event) {
        let c = &mut self.counts;
        match event {
            Event::BackupLost { .. } => c.backups_lost += 1,
            Event::PrimaryLost { .. } => c.primaries_lost += 1,
            Event::ClaimWon { .. } => c.claims_won += 1,
            Event::ClaimLost { .. } => c.claims_lost += 1,
            Event::TieBreakerUnreachable { .. } => c.tie_breaker_unreachable += 1,
            Event::CloneStarted { .. } => c.clones_started += 1,
            Event::BackupInLockstep { .. } | Event::MovedAway { .. } => c.clones_done += 1,
            Event::CloneFailed { .. } => c.clones_failed += 1,
            Event::CloneReceived { .. } => c.clones_received += 1,
            Event::CloneReceiveFailed { .. } => c.clones_receive_failed += 1,
            Event::Live { .. } if self.failover_open => c.failovers += 1,
            _ => {}
        }
    }

    fn follow_timelines(&mut self, s: Stamped) {
        match &s.event {
            // A failover on a backup begins where it stops hearing its primary; on a primary
            // where it stops hearing its backup (it may win and run on alone).
            Event::PrimaryLost { .. } | Event::BackupLost { .. } => {
                self.failover_open = matches!(s.event, Event::PrimaryLost { .. });
                self.failover = vec![s];
            }
            // An outage of the tie-breaker is one step however often the claim retries.
            Event::TieBreakerUnreachable { .. }
                if self
                    .failover
                    .last()
                    .is_some_and(|l| matches!(l.event, Event::TieBreakerUnreachable { .. })) => {}
            Event::Claiming { .. }
            | Event::TieBreakerUnreachable { .. }
            | Event::ClaimWon { .. }
            | Event::ClaimLost { .. }
            | Event::PoweredOffNoGoLive => push(&mut self.failover, s),
            Event::Live { .. } => {
                self.failover_open = false;
                push(&mut self.failover, s);
            }
            Event::FirstOutput { .. } => push(&mut self.failover, s),
            Event::CloneStarted { .. } | Event::ReceivingClone { .. } => self.clone = vec![s],
            Event::BackupInLockstep { .. }
            | Event::MovedAway { .. }
            | Event::CloneFailed { .. }
            | Event::CloneReceived { .. }
            | Event::CloneReceiveFailed { .. }
            | Event::Replaying { .. }
            | Event::TakingOver { .. }
                if !self.clone.is_empty() =>
            {
                push(&mut self.clone, s)
            }
            _ => {}
        }
    }
}

fn push(timeline: &mut Vec<Stamped>, s: Stamped) {
    if timeline.len() < TIMELINE_STEPS {
        timeline.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost() -> Event {
        Event::PrimaryLost {
            why: "silent".into(),
            at_ms: 5,
            last_heard_ms: 4,
            icount: 9,
        }
    }

    fn live() -> Event {
        Event::Live {
            generation: 2,
            icount: 10,
            disks: 1,
            net: None,
            reissued: 0,
            announced: None,
        }
    }

    #[test]
    fn a_failover_counts_once_and_its_timeline_holds_its_steps_in_order() {
        let j = Journal::new();
        j.record(1, &Event::Replaying { generation: 1 });
        j.record(2, &lost());
        j.record(
            3,
            &Event::Claiming {
                generation: 1,
                on: "lock".into(),
            },
        );
        j.record(
            4,
            &Event::ClaimWon {
                generation: 1,
                next_generation: 2,
            },
        );
        j.record(5, &live());
        j.record(
            6,
            &Event::FirstOutput {
                generation: 2,
                icount: 11,
            },
        );
        let s = j.snapshot();
        assert_eq!((s.counts.failovers, s.counts.claims_won), (1, 1));
        let times: Vec<u64> = s.failover.iter().map(|e| e.t_ms).collect();
        assert_eq!(times, [2, 3, 4, 5, 6]);
        // A live that follows no loss (a migration's takeover) is no failover.
        j.record(7, &live());
        assert_eq!(j.counts().failovers, 1);
    }

    #[test]
    fn the_journal_stays_bounded_however_many_events_arrive() {
        let j = Journal::new();
        for t in 0..10_000 {
            j.record(t, &Event::ClonePages { pages: t });
            j.record(
                t,
                &Event::TieBreakerUnreachable {
                    error: "down".into(),
                },
            );
        }
        let s = j.snapshot();
        assert_eq!(s.recent.len(), RECENT);
        assert!(s.failover.len() <= TIMELINE_STEPS);
        assert_eq!(s.counts.tie_breaker_unreachable, 10_000);
    }
}
