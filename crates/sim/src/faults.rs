//! A seed's fault schedule: which faults, when, for how long.

use std::time::Duration;

use crate::rng::Rng;

/// One kind of fault. "Primary" and "backup" mean whichever host has that role when the fault
/// strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// The host dies (its machine and memory are gone); it comes back as a spare.
    CrashPrimary,
    CrashBackup,
    CrashSpare,
    /// The host stops running and reading (SIGSTOP), then goes on.
    FreezePrimary,
    FreezeBackup,
    /// The backup's host turns slow: its replay falls behind.
    SlowBackup,
    /// The logging channel's network is cut both ways, or only from primary to backup.
    CutPair,
    CutPairOneWay,
    /// The clients cannot reach the primary.
    CutClients,
    /// The link from primary to backup turns slow.
    SlowPair,
    /// The tie-breaker cannot be reached.
    TieBreakerDown,
    /// The tie-breaker answers slowly.
    TieBreakerSlow,
    /// The tie-breaker acts on claims but its answers are lost.
    TieBreakerLosesAnswers,
    /// The operator moves the backup to a spare (`ftvm ctl add-backup` on a paired primary):
    /// the primary takes the old generation itself, retires the old backup and clones.
    MoveBackup,
    /// The guest is told to power off (a request from a client).
    PowerOff,
    /// The operator moves the primary to a spare (`ftvm ctl migrate`); half the time the
    /// network to the new host breaks for the fault's length, cutting the move short.
    MigratePrimary,
    /// Every request to the shared disk fails (EIO): the guest issues it again.
    DiskErrors,
    /// The shared disk answers slowly.
    DiskSlow,
}

impl FaultKind {
    pub const ALL: [FaultKind; 18] = [
        FaultKind::CrashPrimary,
        FaultKind::CrashBackup,
        FaultKind::CrashSpare,
        FaultKind::FreezePrimary,
        FaultKind::FreezeBackup,
        FaultKind::SlowBackup,
        FaultKind::CutPair,
        FaultKind::CutPairOneWay,
        FaultKind::CutClients,
        FaultKind::SlowPair,
        FaultKind::TieBreakerDown,
        FaultKind::TieBreakerSlow,
        FaultKind::TieBreakerLosesAnswers,
        FaultKind::MoveBackup,
        FaultKind::PowerOff,
        FaultKind::MigratePrimary,
        FaultKind::DiskErrors,
        FaultKind::DiskSlow,
    ];

    /// How often a schedule picks it, relative to the others.
    fn weight(self) -> u64 {
        match self {
            FaultKind::CrashPrimary => 8,
            FaultKind::CrashBackup => 4,
            FaultKind::CrashSpare => 1,
            FaultKind::FreezePrimary | FaultKind::FreezeBackup => 3,
            FaultKind::SlowBackup => 4,
            FaultKind::CutPair => 4,
            FaultKind::CutPairOneWay => 2,
            FaultKind::CutClients => 2,
            FaultKind::SlowPair => 2,
            FaultKind::TieBreakerDown | FaultKind::TieBreakerSlow => 2,
            FaultKind::TieBreakerLosesAnswers => 2,
            FaultKind::MoveBackup => 3,
            FaultKind::PowerOff => 1,
            FaultKind::MigratePrimary => 3,
            FaultKind::DiskErrors | FaultKind::DiskSlow => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::CrashPrimary => "crash-primary",
            FaultKind::CrashBackup => "crash-backup",
            FaultKind::CrashSpare => "crash-spare",
            FaultKind::FreezePrimary => "freeze-primary",
            FaultKind::FreezeBackup => "freeze-backup",
            FaultKind::SlowBackup => "slow-backup",
            FaultKind::CutPair => "cut-pair",
            FaultKind::CutPairOneWay => "cut-pair-one-way",
            FaultKind::CutClients => "cut-clients",
            FaultKind::SlowPair => "slow-pair",
            FaultKind::TieBreakerDown => "tiebreaker-down",
            FaultKind::TieBreakerSlow => "tiebreaker-slow",
            FaultKind::TieBreakerLosesAnswers => "tiebreaker-loses-answers",
            FaultKind::MoveBackup => "move-backup",
            FaultKind::PowerOff => "power-off",
            FaultKind::MigratePrimary => "migrate",
            FaultKind::DiskErrors => "disk-errors",
            FaultKind::DiskSlow => "disk-slow",
        }
    }

    pub fn named(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub at: Duration,
    /// How long until it heals (a crashed host's return as a spare).
    pub lasts: Duration,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {} ms for {} ms",
            self.kind.name(),
            self.at.as_millis(),
            self.lasts.as_millis()
        )
    }
}

/// One to three faults among `kinds`, between 100 ms and `until`, each healing within a
/// second.
pub fn schedule(rng: &mut Rng, kinds: &[FaultKind], until: Duration) -> Vec<Fault> {
    let weights: Vec<u64> = kinds.iter().map(|k| k.weight()).collect();
    let count = 1 + rng.weighted(&[5, 3, 2]);
    let mut faults: Vec<Fault> = (0..count)
        .map(|_| Fault {
            kind: kinds[rng.weighted(&weights)],
            at: Duration::from_millis(rng.range(100, until.as_millis() as u64)),
            lasts: Duration::from_millis(rng.range(50, 1000)),
        })
        .collect();
    // Faults that compound are the telling ones: half the time a slow backup's primary dies
    // while the backup trails, leaving it a backlog to drain before it may go live.
    if kinds.contains(&FaultKind::CrashPrimary) {
        let slow: Vec<Fault> = faults
            .iter()
            .filter(|f| f.kind == FaultKind::SlowBackup)
            .cloned()
            .collect();
        for f in slow {
            if rng.chance(50) {
                faults.push(Fault {
                    kind: FaultKind::CrashPrimary,
                    at: f.at + f.lasts / 2,
                    lasts: Duration::from_millis(rng.range(50, 1000)),
                });
            }
        }
    }
    faults.sort_by_key(|f| f.at);
    faults
}
