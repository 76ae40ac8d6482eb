//! What an FT role tells its operator, as typed events.
//!
//! Every step of the protocol a person or a tool may want to follow (a backup connected, the
//! peer lost, a test-and-set and its answer, going live, a clone's progress, a move) is one
//! [`Event`] variant, emitted through `tracing` ([`emit`]): the binary prints it as a human
//! line by default and as one JSON object per line with `--events json`, and tests and tools
//! match the variants, never the wording. The human text is each variant's `Display`.
//!
//! Without a subscriber (library tests, the simulator) emitting costs a relaxed load.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The `tracing` target FT events go to; the JSON form is in the field [`JSON_FIELD`].
pub const TARGET: &str = "ftvm::event";
/// The field holding an event's JSON (the message holds its human text).
pub const JSON_FIELD: &str = "ftvm_event";

/// One step of an FT role, as its operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    // The primary's life.
    /// A primary listens for a backup started from the same boot or snapshot.
    WaitingForBackup { at: String },
    /// A backup connected; the pair runs as `generation`.
    BackupConnected { generation: u64 },
    /// The VM runs without a backup (FT off) as `generation`.
    RunningAlone { generation: u64, spares: bool },
    /// The primary stopped hearing its backup.
    BackupLost { why: String },
    /// The VM starts a live clone to `to`: a new backup, or (`migrate`) a new primary.
    CloneStarted { to: String, migrate: bool },
    /// The clone to `to` stopped; the VM runs on as it was.
    CloneFailed {
        to: String,
        why: String,
        paired: bool,
    },
    /// The new backup at `to` is in lockstep from `icount`, as `generation`.
    BackupInLockstep {
        to: String,
        icount: u64,
        generation: u64,
        summary: CloneSummary,
    },
    /// The VM moved to the primary at `to`; this side stops.
    MovedAway {
        to: String,
        icount: u64,
        summary: CloneSummary,
    },

    // Any side whose peer is gone.
    /// A test-and-set of `generation` on the tie-breaker `on`.
    Claiming { generation: u64, on: String },
    /// The tie-breaker cannot be reached; the claim waits and retries.
    TieBreakerUnreachable { error: String },
    /// This side won `generation` and runs on as `next_generation`, outputs without acks.
    ClaimWon {
        generation: u64,
        next_generation: u64,
    },
    /// `winner` holds `generation`: this side halts without another output.
    ClaimLost { generation: u64, winner: String },

    // The backup's life.
    /// A backup reached its primary.
    ConnectedToPrimary { addr: String },
    /// A spare waits for a primary to clone itself here.
    WaitingForClone { at: String },
    /// A live clone arrives.
    ReceivingClone {
        from: String,
        mib: u64,
        generation: u64,
    },
    /// Clone pages received so far.
    ClonePages { pages: u64 },
    /// The cloned machine is rebuilt at `icount` and its state hash checked.
    CloneReceived { icount: u64, secs: f64 },
    /// A connection to this side's channel port failed the handshake (no key, a key not
    /// pinned, not this protocol) and was closed before anything of the VM was sent.
    PeerRefused { peer: String, why: String },
    /// A clone broke off half-way; the spare waits again.
    CloneReceiveFailed { from: String, why: String },
    /// The backup replays the log of `generation` in lockstep.
    Replaying { generation: u64 },
    /// The primary ended (powered off) and every output and checkpoint matched.
    PrimaryFinished {
        icount: u64,
        checkpoints: u64,
        secs: f64,
    },
    /// The primary moved to `to`; the backup reconnects there.
    PrimaryMoved { to: String, icount: u64 },
    /// The moved primary cannot be reached.
    MovedPrimaryUnreachable { to: String, error: String },
    /// The primary counts as lost (at `at_ms`, Unix ms; last heard at `last_heard_ms`); every
    /// record received is replayed.
    PrimaryLost {
        why: String,
        at_ms: u64,
        #[serde(default)]
        last_heard_ms: u64,
        icount: u64,
    },
    /// The guest had powered off where the log ends: no go-live.
    PoweredOffNoGoLive,
    /// A newer backup replaced this one: it stops.
    Retired { icount: u64 },
    /// A migration arrived: this side is the primary from `icount`.
    TakingOver { icount: u64, backup_follows: bool },
    /// The moving primary's backup reconnected here; the pair goes on as `generation`.
    BackupReconnected { generation: u64 },
    /// The moving primary's backup did not come.
    BackupDidNotReconnect { generation: u64 },
    /// The VM runs here now as `generation`, with its devices attached.
    Live {
        generation: u64,
        icount: u64,
        disks: usize,
        net: Option<String>,
        reissued: usize,
        announced: Option<[u8; 4]>,
    },
    /// The first output (console, disk or network) of a VM gone live here: the end of a
    /// failover as its clients see it.
    FirstOutput { generation: u64, icount: u64 },
    /// The VM's run on this side ended (`end`: how), with the log it sent.
    RunEnded {
        end: String,
        icount: u64,
        log_bytes: u64,
        secs: f64,
        stalled_secs: f64,
        /// Whether the backup (if any) acknowledged the log's end.
        log_end_delivered: bool,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Event::*;
        match self {
            WaitingForBackup { at } => write!(f, "waiting for a backup on {at}"),
            BackupConnected { generation } => {
                write!(f, "backup connected; generation {generation}; running")
            }
            RunningAlone { generation, spares } => write!(
                f,
                "running alone as generation {generation} (FT off until `ftvm ctl \
                 add-backup`{})",
                if *spares { " or a spare" } else { "" }
            ),
            BackupLost { why } => write!(f, "lost the backup: {why}"),
            CloneStarted { to, migrate: true } => {
                write!(f, "moving this VM to a new primary at {to}")
            }
            CloneStarted { to, .. } => write!(f, "cloning this VM into a new backup at {to}"),
            CloneFailed { to, why, paired } => write!(
                f,
                "the clone to {to} failed: {why}; the VM runs on {}",
                if *paired { "with its backup" } else { "alone" }
            ),
            BackupInLockstep {
                to,
                icount,
                generation,
                summary,
            } => write!(
                f,
                "new backup at {to} in lockstep from instruction {icount} as generation \
                 {generation}: {summary}"
            ),
            MovedAway {
                to,
                icount,
                summary,
            } => write!(
                f,
                "moved to {to} at instruction {icount}: {summary}; this VM stops here"
            ),
            Claiming { generation, on } => {
                write!(f, "test-and-set of generation {generation} on {on}")
            }
            TieBreakerUnreachable { error } => {
                write!(f, "shared storage unreachable ({error}); waiting")
            }
            ClaimWon {
                generation,
                next_generation,
            } => write!(
                f,
                "won generation {generation}; continuing alone as generation \
                 {next_generation}, outputs flow without acks"
            ),
            ClaimLost { generation, winner } => write!(
                f,
                "{winner} won generation {generation}; this side halts without another output"
            ),
            ConnectedToPrimary { addr } => write!(f, "connected to {addr}"),
            WaitingForClone { at } => {
                write!(f, "waiting for a primary to clone itself here, on {at}")
            }
            ReceivingClone {
                from,
                mib,
                generation,
            } => write!(
                f,
                "receiving a live clone of {mib} MiB from {from} (generation {generation})"
            ),
            ClonePages { pages } => write!(
                f,
                "{pages} pages received ({:.0} MiB)",
                (*pages * 4096) as f64 / (1 << 20) as f64
            ),
            CloneReceived { icount, secs } => write!(
                f,
                "clone complete in {secs:.2} s: machine rebuilt at instruction {icount}, state \
                 hash checked"
            ),
            PeerRefused { peer, why } => {
                write!(f, "refused a connection from {peer}: {why}")
            }
            CloneReceiveFailed { from, why } => write!(
                f,
                "the clone from {from} failed: {why}; waiting for a primary again"
            ),
            Replaying { generation } => {
                write!(f, "generation {generation}; replaying in lockstep")
            }
            PrimaryFinished {
                icount,
                checkpoints,
                secs,
            } => write!(
                f,
                "the primary finished at instruction {icount}; every output and {checkpoints} \
                 checkpoints matched ({secs:.1} s); the backup stops with it"
            ),
            PrimaryMoved { to, icount } => write!(
                f,
                "the primary moved to {to} at instruction {icount}; reconnecting"
            ),
            MovedPrimaryUnreachable { to, error } => {
                write!(f, "cannot reach the moved primary at {to}: {error}")
            }
            FirstOutput { generation, icount } => write!(
                f,
                "first output as generation {generation} at instruction {icount}"
            ),
            PrimaryLost { why, icount, .. } => write!(
                f,
                "lost the primary: {why}; replayed every record received, up to instruction \
                 {icount}"
            ),
            PoweredOffNoGoLive => {
                write!(
                    f,
                    "the guest had powered off there; the backup does not go live"
                )
            }
            Retired { icount } => write!(
                f,
                "a new backup replaced this one at instruction {icount}; this one stops"
            ),
            TakingOver {
                icount,
                backup_follows,
            } => write!(
                f,
                "taking over as the primary at instruction {icount}{}",
                if *backup_follows {
                    "; waiting for the backup to reconnect"
                } else {
                    ""
                }
            ),
            BackupReconnected { generation } => {
                write!(f, "the backup reconnected; generation {generation}")
            }
            BackupDidNotReconnect { generation } => write!(
                f,
                "the backup did not reconnect; the test-and-set of generation {generation} \
                 decides"
            ),
            Live {
                generation,
                icount,
                disks,
                net,
                reissued,
                announced,
            } => write!(
                f,
                "live as generation {generation} at instruction {icount}: clock on host time, \
                 {disks} disk(s) and {} attached, {reissued} pending I/O reissued, announced {}",
                net.as_deref().unwrap_or("no network"),
                match announced {
                    Some([a, b, c, d]) => format!("{a}.{b}.{c}.{d} (RARP + gratuitous ARP)"),
                    None => "the MAC (RARP)".into(),
                }
            ),
            RunEnded {
                end,
                icount,
                log_bytes,
                secs,
                stalled_secs,
                log_end_delivered,
            } => write!(
                f,
                "{end} at instruction {icount}; {log_bytes} log bytes in {secs:.2} s ({:.3} \
                 Mbit/s), stalled {stalled_secs:.3} s on a full buffer{}",
                *log_bytes as f64 * 8.0 / secs.max(1e-9) / 1e6,
                if *log_end_delivered {
                    ""
                } else {
                    "; the backup may not have the log's end"
                }
            ),
        }
    }
}

/// A clone's figures, once it ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CloneSummary {
    /// Pre-copy rounds, the last (with the VM paused) included.
    pub rounds: u64,
    /// Page records copied out of the VM (pages written again are sent again).
    pub pages: u64,
    /// Compressed MiB sent.
    pub sent_mib: f64,
    /// How long the VM was paused for the switch, in ms.
    pub paused_ms: f64,
}

impl fmt::Display for CloneSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rounds, {} pages copied ({:.1} MiB compressed), paused {:.1} ms",
            self.rounds, self.pages, self.sent_mib, self.paused_ms
        )
    }
}

/// One line of `--events json`, as a reader parses it back (other lines on the stream, such
/// as errors, are not FT events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// When it was printed, Unix ms.
    pub t_ms: u64,
    /// `primary` or `backup`: the command that printed it.
    pub process: String,
    pub event: Event,
}

impl Line {
    /// The FT events among `text`'s lines, in order.
    pub fn parse_all(text: &str) -> Vec<Line> {
        text.lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Emits `event` to whatever subscriber the process installed.
pub fn emit(event: Event) {
    tracing::info!(
        target: TARGET,
        ftvm_event = %Json(&event),
        "{event}"
    );
}

/// An event's JSON, written only if a subscriber records it.
struct Json<'a>(&'a Event);

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string(self.0).map_err(|_| fmt::Error)?;
        f.write_str(&json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_round_trips_through_its_json_and_names_its_variant() {
        let e = Event::Live {
            generation: 2,
            icount: 7,
            disks: 1,
            net: Some("switch:/s".into()),
            reissued: 0,
            announced: Some([10, 0, 2, 15]),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(
            json.starts_with(r#"{"event":"live","generation":2"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
        assert!(e.to_string().contains("live as generation 2"));
        assert!(e.to_string().contains("10.0.2.15"));
    }
}
