//! The faults striking and healing: which host each one hits (whoever has the role then),
//! and the one crash never made, the one that would destroy the VM's last copy.

use std::time::Duration;

use ftvm_ft::{BackupPhase, PrimaryPhase};

use crate::faults::FaultKind;
use crate::hosts::{Host, Migration, REPLAY_RECORDS, SLOW_RECORDS, SLOW_TURNS};
use crate::net::{Addr, Msg};
use crate::world::World;

impl World {
    pub(crate) fn fault(&mut self, index: usize, heal: bool) {
        let f = self.faults[index].clone();
        let primary = (0..self.hosts.len()).find(|&h| matches!(self.hosts[h], Host::Primary(_)));
        let backup = (0..self.hosts.len()).find(|&h| matches!(self.hosts[h], Host::Backup(_)));
        let spare = (0..self.hosts.len()).find(|&h| matches!(self.hosts[h], Host::Spare));
        let crash = matches!(
            f.kind,
            FaultKind::CrashPrimary | FaultKind::CrashBackup | FaultKind::CrashSpare
        );
        if !heal && !crash {
            self.stats.faults[f.kind as usize] += 1;
        }
        match f.kind {
            FaultKind::CrashPrimary | FaultKind::CrashBackup | FaultKind::CrashSpare => {
                if heal {
                    for &h in &self.struck[index] {
                        self.hosts[h] = Host::Spare;
                    }
                    return;
                }
                let target = match f.kind {
                    FaultKind::CrashPrimary => primary,
                    FaultKind::CrashBackup => backup,
                    _ => spare,
                };
                if let Some(h) = target {
                    if self.holds_last_copy(h) {
                        // No FT system survives losing the VM's last copy: not a protocol test.
                        self.stats.skipped += 1;
                        return;
                    }
                    self.stats.faults[f.kind as usize] += 1;
                    self.hosts[h] = Host::Down("crashed".into());
                    // Its memory and its connections die with it.
                    self.inbox[h].clear();
                    self.net.parked.remove(&h);
                    self.net.frozen.remove(&h);
                    self.struck[index] = vec![h];
                }
            }
            FaultKind::SlowBackup => {
                if !heal && let Some(b) = backup {
                    self.struck[index] = vec![b];
                }
                if let [b] = self.struck[index][..]
                    && let Host::Backup(backup) = &mut self.hosts[b]
                {
                    // A busy host gives the replay few turns, and little in each.
                    (backup.turn_every, backup.records_per_turn) = if heal {
                        (1, REPLAY_RECORDS)
                    } else {
                        (SLOW_TURNS, SLOW_RECORDS)
                    };
                }
            }
            FaultKind::FreezePrimary | FaultKind::FreezeBackup => {
                let target = if f.kind == FaultKind::FreezePrimary {
                    primary
                } else {
                    backup
                };
                if let (false, Some(h)) = (heal, target) {
                    // Overlapping freezes end with the later one: a host wakes once, and finds
                    // its messages in the order they came.
                    let wake = self.net.now + f.lasts;
                    let until = self.net.frozen.entry(h).or_insert(wake);
                    *until = (*until).max(wake);
                }
            }
            FaultKind::CutPair | FaultKind::CutPairOneWay | FaultKind::SlowPair => {
                if !heal && let (Some(p), Some(b)) = (primary, backup) {
                    self.struck[index] = vec![p, b];
                }
                let [p, b] = self.struck[index][..] else {
                    return;
                };
                let (p, b) = (Addr::Host(p), Addr::Host(b));
                match f.kind {
                    FaultKind::SlowPair => {
                        let by = if heal {
                            Duration::ZERO
                        } else {
                            Duration::from_millis(30)
                        };
                        self.net.slow(p, b, by);
                    }
                    FaultKind::CutPairOneWay => self.net.cut(p, b, !heal),
                    _ => {
                        self.net.cut(p, b, !heal);
                        self.net.cut(b, p, !heal);
                    }
                }
            }
            FaultKind::CutClients => {
                if !heal && let Some(p) = primary {
                    self.struck[index] = vec![p];
                }
                let [p] = self.struck[index][..] else { return };
                self.net.cut(Addr::Clients, Addr::Host(p), !heal);
                self.net.cut(Addr::Host(p), Addr::Clients, !heal);
            }
            FaultKind::TieBreakerDown => {
                self.tb_down = if heal {
                    self.tb_down.saturating_sub(1)
                } else {
                    self.tb_down + 1
                }
            }
            FaultKind::TieBreakerLosesAnswers => {
                self.tb_lossy = if heal {
                    self.tb_lossy.saturating_sub(1)
                } else {
                    self.tb_lossy + 1
                }
            }
            FaultKind::TieBreakerSlow => {
                self.tb_slow = if heal {
                    Duration::ZERO
                } else {
                    Duration::from_millis(80)
                }
            }
            FaultKind::MoveBackup => {
                let spare = self.free_spare();
                if let (false, Some(p), Some(_), Some(spare)) = (heal, primary, backup, spare)
                    && let Host::Primary(p) = &mut self.hosts[p]
                    && p.rule.logging()
                    && p.migrating.is_none()
                {
                    p.moving = Some(spare);
                }
            }
            FaultKind::MigratePrimary => {
                if heal {
                    if let [p, s] = self.struck[index][..] {
                        self.net.cut(Addr::Host(s), Addr::Host(p), false);
                    }
                    return;
                }
                let spare = self.free_spare();
                if let (Some(p), Some(_), Some(s)) = (primary, backup, spare)
                    && let Host::Primary(pp) = &mut self.hosts[p]
                    && pp.rule.logging()
                    && pp.migrating.is_none()
                    && pp.moving.is_none()
                {
                    pp.migrating = Some(Migration { to: s, sent: None });
                    // The new host's answers may be lost: it holds the machine, the moving
                    // primary does not know.
                    if self.rng.chance(50) {
                        self.net.cut(Addr::Host(s), Addr::Host(p), true);
                        self.struck[index] = vec![p, s];
                    }
                }
            }
            FaultKind::DiskErrors => self.disk.fail(!heal),
            FaultKind::DiskSlow => {
                // The answers are slow, not the requests: a write reaches the disk when it
                // leaves (a write that lingers on the way is one only the disk can fence:
                // see `Timing::lease`).
                let by = if heal {
                    Duration::ZERO
                } else {
                    Duration::from_millis(40)
                };
                for h in 0..self.hosts.len() {
                    self.net.slow(Addr::Disk, Addr::Host(h), by);
                }
            }
            FaultKind::PowerOff => {
                if !heal {
                    let to = Addr::Host(self.announced);
                    self.net.send(
                        &mut self.rng,
                        Addr::Clients,
                        to,
                        Msg::Request(b"P00000000000\n".to_vec()),
                    );
                }
            }
        }
    }

    /// Whether `h` holds the VM's only copy: a primary without a backup that has the machine,
    /// or a backup whose primary is gone.
    fn holds_last_copy(&self, h: usize) -> bool {
        // A side that won its pair's claim (since the pair formed) is the only one that may
        // run: its peer will halt.
        let won = |g: u64, channel: usize| {
            self.records
                .get(&g)
                .is_some_and(|&(w, at)| w == h && at >= self.net.channels[channel].opened)
        };
        // A backup following a moved primary and the new host waiting for it hold the same
        // VM: either may run it.
        let follower = |t: usize| {
            self.hosts
                .iter()
                .any(|x| matches!(x, Host::Backup(b) if b.moved_to == Some(t)))
        };
        let awaiting = |t: Option<usize>| {
            t.is_some_and(
                |t| matches!(&self.hosts[t], Host::Primary(p) if p.awaiting_backup.is_some()),
            )
        };
        match &self.hosts[h] {
            Host::Primary(p) if p.awaiting_backup.is_some() => !follower(h),
            Host::Primary(p) => {
                let claimed = match *p.rule.phase() {
                    PrimaryPhase::Paired { generation } | PrimaryPhase::Claiming { generation } => {
                        p.channel.is_some_and(|c| won(generation, c))
                    }
                    _ => false,
                };
                claimed
                    || !p.channel.is_some_and(|c| {
                        matches!(&self.hosts[self.net.channels[c].backup], Host::Backup(b) if b.channel == c)
                    })
            }
            Host::Backup(b) => {
                let claimed = match b.phase {
                    BackupPhase::Replaying { generation }
                    | BackupPhase::Claiming { generation } => won(generation, b.channel),
                    _ => false,
                };
                let primary = self.net.channels[b.channel].primary;
                claimed
                    || (!awaiting(b.moved_to)
                        && !matches!(&self.hosts[primary], Host::Primary(p) if p.channel == Some(b.channel)))
            }
            Host::Spare | Host::Down(_) => false,
        }
    }
}
