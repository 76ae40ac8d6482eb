//! Fault tolerance: a primary VM and a backup in virtual lockstep (docs/ft-design.md).
//!
//! Job: the protocol of VMware FT (../shared/design/ft-paper.md) on ftvm's event log. The
//! primary's [`FtPrimary`] observer records to the logging channel and holds every output until
//! the backup acknowledges the log up to it (the Output Rule); the backup's [`BackupLink`]
//! feeds `ftvm-replay`'s `Replayer`, which checks every output and checkpoint. Heartbeats and
//! log/ack traffic detect failure; a [`TieBreaker`] test-and-set on shared storage decides who
//! runs when the pair splits; [`announce`] moves the network to a backup that goes live.
//! [`clone`] copies a running VM into a new backup (pre-copy rounds, then a short pause), and
//! [`FtVm`] is a VM's observer for its whole life: alone, cloning, paired, alone again, so
//! redundancy comes back after a failover and either side of a pair can move. [`role`] holds
//! the backup's decisions as typed phases and the one [`claim`] step every side takes;
//! [`follow`] runs the backup's life on them, [`live`] the moment a side goes live, and every
//! step is a typed [`Event`].
//!
//! Invariants: an output leaves the primary only after the backup holds the log up to it, or
//! after the primary won the test-and-set; the loser of a test-and-set never shows another
//! output; a backup goes live only with a whole machine (a clone cut short is dropped); a
//! replaced backup's generation is taken before it is retired; a peer's bytes are untrusted
//! (bounded messages and batches, errors not panics).

pub mod announce;
mod backup;
mod channel;
pub mod clock;
pub mod clone;
pub mod control;
mod etcd;
pub mod event;
pub mod follow;
pub mod live;
mod primary;
pub mod role;
pub mod rule;
pub mod secure;
pub mod tiebreak;
pub mod transport;
mod vm;
mod wire;

use std::time::Duration;

pub use backup::{BackupLink, InboxReader, read_hello};
pub use channel::{
    ChannelError, accept_backup, accept_within, bind_primary, connect_to_backup, connect_to_primary,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use control::{
    Alone, CloneState, CloneStatus, Control, DelayHistogram, IoCounts, Role, Status,
};
pub use etcd::{Etcd, PrivateEtcd};
pub use event::{Event, emit};
pub use follow::{
    BackupEnd, BackupHost, FollowError, GoLive, Joined, Pass, TakeOver, follow, take_over,
};
pub use live::{LiveNic, go_live};
pub use primary::{BackupLost, FtPrimary, PrimaryConfig};
pub use role::{BackupPhase, Claim, PassEnd, Stop, claim};
pub use rule::{BackupRule, Bugs, PrimaryPhase, PrimaryRule, Release};
pub use secure::{Keys, SecureError, Security, fuzz_sealed};
pub use tiebreak::{LockFile, Outcome, TieBreaker};
pub use transport::{Connection, Transport};
pub use vm::FtVm;
pub use wire::{Hello, ToBackup, ToPrimary, WireError, fuzz_wire};

/// Failure detection's clock.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often an idle side says it is alive.
    pub heartbeat: Duration,
    /// Silence after which the peer counts as failed.
    pub timeout: Duration,
}

impl Timing {
    /// Whether a peer last heard at `heard` counts as failed at `now`: the one silence rule
    /// of both sides (the binary's channel threads and the rules the simulator runs).
    pub fn silent(&self, heard: Duration, now: Duration) -> bool {
        now.saturating_sub(heard) >= self.timeout
    }

    /// How long an ack lets the primary's outputs go after the acked log was sent: well
    /// inside the timeout after which the backup may go live, leaving the other half for the
    /// output's own way out (a disk write's trip to the shared disk) and for clocks that run
    /// at slightly different rates.
    pub fn lease(&self) -> Duration {
        self.timeout / 2
    }
}

impl Default for Timing {
    /// LAN defaults: a 50 ms heartbeat and a 300 ms timeout, well under the paper's seconds,
    /// yet six missed heartbeats before a failover.
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(50),
            timeout: Duration::from_millis(300),
        }
    }
}
