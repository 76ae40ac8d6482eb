//! The operator's handle on a running FT VM: a Unix socket answering `status` and `poweroff`.
//!
//! One line in, one line out. Status is JSON so scripts and `ftvm ctl status` read the same.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::role::BackupPhase;
use crate::rule::PrimaryPhase;

/// What a side of a pair is doing, as `ftvm ctl status` shows it (its text) and `--json`
/// gives it (a tagged enum, for scripts and tests to match on).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Not yet anything: the process is starting.
    #[default]
    Starting,
    /// A VM run without FT (`ftvm run --control`).
    Solo,
    /// A primary whose backup runs in lockstep.
    Primary,
    /// A primary without a backup: FT off, or it won against a lost backup.
    PrimaryAlone,
    /// A primary waiting for a backup to connect (its first, or a migrated primary's own).
    PrimaryWaitingForBackup,
    /// A backup replaying the primary's log.
    Backup,
    /// A backup that lost its primary, claiming the generation.
    BackupClaiming,
    /// A spare host waiting for a primary to clone itself here.
    Spare,
    /// A spare receiving a clone.
    SpareReceiving,
    /// Lost a claim: halted without another output.
    Halted,
    /// Stopped without going live (the VM powered off, or a newer backup replaced this one).
    Stopped,
    /// This primary moved to the host at `to`; its run ended here.
    MovedTo { to: String },
}

impl Role {
    /// A primary in any state: only a primary clones or migrates.
    pub fn is_primary(&self) -> bool {
        matches!(
            self,
            Role::Primary | Role::PrimaryAlone | Role::PrimaryWaitingForBackup
        )
    }
}

impl Role {
    /// The role's name for metrics labels and scripts: snake case, no spaces.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Solo => "solo",
            Role::Primary => "primary",
            Role::PrimaryAlone => "primary_alone",
            Role::PrimaryWaitingForBackup => "primary_waiting_for_backup",
            Role::Backup => "backup",
            Role::BackupClaiming => "backup_claiming",
            Role::Spare => "spare",
            Role::SpareReceiving => "spare_receiving",
            Role::Halted => "halted",
            Role::Stopped => "stopped",
            Role::MovedTo { .. } => "moved",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Role::Starting => "starting",
            Role::Solo => "solo (no FT)",
            Role::Primary => "primary",
            Role::PrimaryAlone => "primary (alone)",
            Role::PrimaryWaitingForBackup => "primary (waiting for a backup)",
            Role::Backup => "backup",
            Role::BackupClaiming => "backup (claiming)",
            Role::Spare => "backup (waiting for a primary)",
            Role::SpareReceiving => "backup (receiving a clone)",
            Role::Halted => "halted",
            Role::Stopped => "stopped",
            Role::MovedTo { to } => return write!(f, "moved to {to}"),
        };
        f.write_str(text)
    }
}

/// The latest live clone a side sent (`To`) or received (`From`), and where it stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloneStatus {
    /// No clone yet.
    #[default]
    None,
    /// This VM is cloning itself to the host at `to`.
    To { to: String, state: CloneState },
    /// This host is receiving a clone from `from`.
    From { from: String, state: CloneState },
}

/// A clone's progress or end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloneState {
    Starting,
    /// Pre-copy rounds on the running VM (the sender's view).
    Copying {
        round: u32,
        pages_copied: u64,
        pages_held: u64,
        mib_sent: f64,
        seconds: f64,
    },
    /// Pages in so far (the receiver's view).
    Receiving {
        pages: u64,
    },
    /// The machine is sent (the VM paused at `icount`); the new backup has yet to confirm it
    /// rebuilt it, hash checked. Only its confirmation makes the clone done.
    Confirming {
        icount: u64,
    },
    /// The new backup runs in lockstep from `icount`.
    Done {
        icount: u64,
        rounds: u32,
        paused_ms: f64,
    },
    /// The primary moved there at `icount`.
    Moved {
        icount: u64,
    },
    /// The receiver holds the whole machine, its state hash checked.
    Complete,
    Failed {
        why: String,
    },
}

impl CloneStatus {
    /// A clone this VM sends to `to`.
    pub fn sending(to: &str, state: CloneState) -> CloneStatus {
        CloneStatus::To {
            to: to.to_string(),
            state,
        }
    }

    /// A clone this host receives from `from`.
    pub fn receiving(from: &str, state: CloneState) -> CloneStatus {
        CloneStatus::From {
            from: from.to_string(),
            state,
        }
    }

    /// A clone to `to` that failed: why.
    pub fn failure_to(&self, target: &str) -> Option<&str> {
        match self {
            CloneStatus::To {
                to,
                state: CloneState::Failed { why },
            } if to == target => Some(why),
            _ => None,
        }
    }

    pub fn failed(&self) -> bool {
        matches!(
            self,
            CloneStatus::To {
                state: CloneState::Failed { .. },
                ..
            } | CloneStatus::From {
                state: CloneState::Failed { .. },
                ..
            }
        )
    }
}

impl std::fmt::Display for CloneStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (direction, peer, state) = match self {
            CloneStatus::None => return Ok(()),
            CloneStatus::To { to, state } => ("to", to, state),
            CloneStatus::From { from, state } => ("from", from, state),
        };
        write!(f, "{direction} {peer}: ")?;
        match state {
            CloneState::Starting => write!(f, "starting"),
            CloneState::Confirming { icount } => write!(
                f,
                "sent at instruction {icount}; waiting for the new backup to confirm it holds \
                 the machine"
            ),
            CloneState::Copying {
                round,
                pages_copied,
                pages_held,
                mib_sent,
                seconds,
            } => write!(
                f,
                "round {}, {pages_copied} pages copied, {pages_held} held there, {mib_sent:.1} \
                 MiB sent, {seconds:.1} s",
                round + 1
            ),
            CloneState::Receiving { pages } => write!(f, "{pages} pages received"),
            CloneState::Done {
                icount,
                rounds,
                paused_ms,
            } => write!(
                f,
                "done at instruction {icount}, {rounds} rounds, paused {paused_ms:.1} ms"
            ),
            CloneState::Moved { icount } => write!(f, "moved at instruction {icount}"),
            CloneState::Complete => write!(f, "complete"),
            CloneState::Failed { why } => write!(f, "failed: {why}"),
        }
    }
}

/// The other side of the pair as this side last heard it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    /// No peer: alone, or not yet paired.
    #[default]
    None,
    /// On a primary: its backup replayed up to `replayed` instructions.
    Backup { replayed: u64 },
    /// On a backup: `received` log bytes held from the primary.
    Primary { received: u64 },
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::None => f.write_str("none"),
            Peer::Backup { replayed } => write!(f, "backup replayed to instruction {replayed}"),
            Peer::Primary { received } => {
                write!(f, "received {received} log bytes from the primary")
            }
        }
    }
}

/// Where the side stands in its role's state machine (`ftvm_ft::rule` and `ftvm_ft::role`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Not in an FT role (starting, a spare, a VM without FT).
    #[default]
    None,
    Primary(PrimaryPhase),
    Backup(BackupPhase),
}

/// What `ftvm ctl status` shows for one side of a pair.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// What this side is doing.
    pub role: Role,
    /// The FT generation (bumped by every failover).
    pub generation: u64,
    /// Guest instructions executed (replayed, on a backup).
    pub icount: u64,
    /// Its role's phase, as the protocol's state machines have it.
    #[serde(default)]
    pub phase: Phase,
    /// The other side's progress as last heard.
    #[serde(default)]
    pub peer: Peer,
    /// How far the backup's execution trails the primary's, in milliseconds.
    pub lag_ms: f64,
    /// Log bytes sent (primary) or received (backup).
    pub log_bytes: u64,
    /// Mean logging bandwidth since the start, Mbit/s.
    pub log_mbit_s: f64,
    /// Outputs waiting for the backup's ack (primary).
    pub held_outputs: usize,
    /// The primary's self-slowing to let a lagging backup catch up: percent of time paused.
    pub throttle_pct: f64,
    /// How long outputs waited for the backup's ack (the Output Rule's added latency), p50
    /// and p99, in milliseconds.
    pub output_delay_ms: [f64; 2],
    /// Outputs (barriers) released after an ack.
    pub outputs_released: u64,
    /// The latest live clone, sent or received: its progress, or how it ended.
    #[serde(default)]
    pub clone: CloneStatus,
    /// Live clones that completed (each one a new backup).
    #[serde(default)]
    pub clones_done: u64,
    /// Logging-channel messages sent (primary) or received (backup).
    #[serde(default)]
    pub log_messages: u64,
    /// Log bytes the backup acknowledged holding (primary).
    #[serde(default)]
    pub log_acked_bytes: u64,
    /// The Output Rule's added latency as a histogram (primary).
    #[serde(default)]
    pub output_delay: DelayHistogram,
    /// The VM's device I/O on this host (a backup counts once it is live).
    #[serde(default)]
    pub io: IoCounts,
}

/// A latency histogram in Prometheus' shape: counts of observations at or below each bound.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DelayHistogram {
    /// Upper bounds in milliseconds, rising; observations above the last are in `count` only.
    pub le_ms: Vec<f64>,
    /// Cumulative counts, one per bound.
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_ms: f64,
}

/// Device I/O counts of the VM on this host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoCounts {
    pub disk_reads: u64,
    pub disk_writes: u64,
    pub disk_flushes: u64,
    pub disk_errors: u64,
    pub disk_read_bytes: u64,
    pub disk_written_bytes: u64,
    pub net_frames_sent: u64,
    pub net_frames_received: u64,
    pub net_frames_dropped: u64,
}

impl From<&ftvm_host::IoStats> for IoCounts {
    fn from(s: &ftvm_host::IoStats) -> IoCounts {
        IoCounts {
            disk_reads: s.disk_reads,
            disk_writes: s.disk_writes,
            disk_flushes: s.disk_flushes,
            disk_errors: s.disk_errors,
            disk_read_bytes: s.bytes_read,
            disk_written_bytes: s.bytes_written,
            net_frames_sent: s.frames_sent,
            net_frames_received: s.frames_received,
            net_frames_dropped: s.frames_dropped,
        }
    }
}

/// State shared between a VM's run loop and its control socket.
#[derive(Default)]
pub struct Control {
    pub status: Mutex<Status>,
    /// An operator asked for the VM (and its pair) to power off.
    pub power_off: AtomicBool,
    /// Testing aid (`ack-delay MS` on a backup's socket): hold every ack back this long, to
    /// show the Output Rule holding the primary's outputs.
    pub ack_delay_ms: std::sync::atomic::AtomicU64,
    /// `add-backup HOST:PORT`: clone this VM into a new backup waiting there.
    pub add_backup: Mutex<Option<String>>,
    /// `migrate HOST:PORT`: move this VM (the primary) to the host waiting there.
    pub migrate: Mutex<Option<String>>,
    /// A clone is running: another `add-backup` or `migrate` is refused until it ends.
    pub cloning: AtomicBool,
}

impl Control {
    pub fn new(role: Role, generation: u64) -> Arc<Control> {
        let c = Control::default();
        {
            let mut s = c.status.lock().expect("fresh");
            s.role = role;
            s.generation = generation;
        }
        Arc::new(c)
    }

    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s)
        }
    }

    /// A backup enters `phase`: its role and phase shown as the state machine has them.
    pub fn enter_backup_phase(&self, phase: &BackupPhase) {
        self.update(|s| {
            s.role = phase.role();
            s.phase = Phase::Backup(phase.clone());
        });
    }

    /// A primary enters `phase` (of its generation).
    pub fn enter_primary_phase(&self, phase: &PrimaryPhase) {
        self.update(|s| {
            s.phase = Phase::Primary(phase.clone());
            match phase {
                PrimaryPhase::Paired { generation } => {
                    s.role = Role::Primary;
                    s.generation = *generation;
                }
                // The role stays a primary's while the claim is out.
                PrimaryPhase::Claiming { .. } => {}
                PrimaryPhase::Alone { generation } => {
                    s.role = Role::PrimaryAlone;
                    s.generation = *generation;
                    s.peer = Peer::None;
                    s.lag_ms = 0.0;
                }
                PrimaryPhase::Fenced { .. } => s.role = Role::Halted,
            }
        });
    }

    /// Where a VM without a backup stands: its instruction count and held outputs.
    pub fn show_progress(&self, icount: u64, held: usize) {
        self.update(|s| {
            s.icount = icount;
            s.held_outputs = held;
        });
    }

    pub fn power_off_requested(&self) -> bool {
        self.power_off.load(Ordering::Relaxed)
    }

    /// A pending `migrate` request, taken.
    pub fn take_migrate(&self) -> Option<String> {
        self.migrate.lock().ok()?.take()
    }

    /// A pending `add-backup` request, taken.
    pub fn take_add_backup(&self) -> Option<String> {
        self.add_backup.lock().ok()?.take()
    }
}

/// Serves `control` on a Unix socket at `path` (replacing a stale one) in a thread of its own.
/// The socket file is removed when the returned guard drops.
pub fn serve(path: &Path, control: Arc<Control>) -> std::io::Result<SocketGuard> {
    let listener = bind_owner_only(path)?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = answer(conn, &control);
            }
        })?;
    Ok(SocketGuard(path.to_path_buf()))
}

/// Binds the control socket at `path` so that only this user can ever connect: it poweroffs
/// and clones the VM. The socket is made (mode 0600) in a fresh 0700 directory beside `path`
/// and renamed into place, so no other user can reach it even for an instant; a missing
/// parent directory is created 0700.
fn bind_owner_only(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&parent)?;
    let private = parent.join(format!(".ftvm-control-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let made = private.join("socket");
    let bound = UnixListener::bind(&made).and_then(|l| {
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o600))?;
        let _ = std::fs::remove_file(path);
        std::fs::rename(&made, path)?;
        Ok(l)
    });
    let _ = std::fs::remove_dir_all(&private);
    bound
}

pub struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn answer(conn: UnixStream, control: &Control) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    read_line_bounded(BufReader::new(&conn), &mut line)?;
    let reply = match line.trim() {
        "status" => {
            let s = control.status.lock().map(|s| s.clone()).unwrap_or_default();
            serde_json::to_string(&s).unwrap_or_default()
        }
        "poweroff" => {
            control.power_off.store(true, Ordering::Relaxed);
            "ok".into()
        }
        cmd if cmd.starts_with("add-backup ") || cmd.starts_with("migrate ") => {
            let (verb, target) = cmd.split_once(' ').unwrap_or_default();
            let target = target.trim();
            let role = control
                .status
                .lock()
                .map(|s| s.role.clone())
                .unwrap_or_default();
            if !role.is_primary() {
                format!("error: this VM is a {role}; ask the primary")
            } else if target.is_empty() || target.contains(char::is_whitespace) {
                format!("error: {verb} takes HOST:PORT")
            } else if control.cloning.load(Ordering::Relaxed)
                || control.add_backup.lock().is_ok_and(|a| a.is_some())
                || control.migrate.lock().is_ok_and(|a| a.is_some())
            {
                "error: a clone is in progress (see `ftvm ctl status`); try again when it ends"
                    .into()
            } else {
                let (slot, what) = if verb == "migrate" {
                    (&control.migrate, "moving the primary")
                } else {
                    (&control.add_backup, "cloning into a new backup")
                };
                if let Ok(mut a) = slot.lock() {
                    *a = Some(target.to_string());
                }
                format!("ok: {what} at {target}")
            }
        }
        cmd if cmd.starts_with("ack-delay ") => match cmd[10..].trim().parse::<u64>() {
            Ok(ms) if ms <= 60_000 => {
                control.ack_delay_ms.store(ms, Ordering::Relaxed);
                "ok".into()
            }
            _ => "error: ack-delay takes milliseconds, at most 60000".into(),
        },
        other => format!(
            "error: unknown command {other:?} (status, poweroff, add-backup HOST:PORT, migrate HOST:PORT)"
        ),
    };
    (&conn).write_all(format!("{reply}\n").as_bytes())
}

/// One line of at most 1 KiB: a client cannot make the server buffer without bound.
fn read_line_bounded(r: impl BufRead, line: &mut String) -> std::io::Result<usize> {
    r.take(1024).read_line(line)
}

/// Sends one command to the control socket at `path`; the reply line.
pub fn request(path: &Path, command: &str) -> std::io::Result<String> {
    let conn = UnixStream::connect(path)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    (&conn).write_all(format!("{command}\n").as_bytes())?;
    let mut line = String::new();
    read_line_bounded(BufReader::new(&conn), &mut line)?;
    Ok(line.trim().to_string())
}

/// The observer of a VM running without a backup (a backup that went live, or a primary that
/// won against its lost backup and handed over): no log, outputs flow at once, and the control
/// socket still answers.
pub struct Alone {
    pub control: Arc<Control>,
    /// The device counters as the runner last gave them, published with the progress.
    pub io: IoCounts,
}

impl Alone {
    pub fn new(control: Arc<Control>) -> Alone {
        Alone {
            control,
            io: IoCounts::default(),
        }
    }
}

impl ftvm_host::Observer for Alone {
    fn input(&mut self, _: u64, _: &ftvm_machine::InputEvent) {}
    fn effect(&mut self, _: &ftvm_machine::Effect) {}
    fn gate(&mut self, icount: u64, held: usize, _wait: Duration) -> ftvm_host::Gate {
        let io = self.io;
        self.control.update(|s| {
            s.icount = icount;
            s.held_outputs = held;
            s.io = io;
        });
        ftvm_host::Gate::Release(u64::MAX)
    }
    fn io_stats(&mut self, stats: &ftvm_host::IoStats) {
        self.io = IoCounts::from(stats);
    }
    fn stop_requested(&self) -> bool {
        self.control.power_off_requested()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_socket_is_the_owners_only_and_a_missing_directory_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/ftvm/vm.ctl");
        let _guard = serve(&path, Control::new(Role::Primary, 1)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert!(request(&path, "status").unwrap().starts_with('{'));
        // Nothing of the private directory it was made in is left behind.
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("vm.ctl")]);
    }

    #[test]
    fn status_and_poweroff_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.ctl");
        let control = Control::new(Role::Primary, 3);
        control.update(|s| s.held_outputs = 2);
        let guard = serve(&path, control.clone()).unwrap();
        let s: Status = serde_json::from_str(&request(&path, "status").unwrap()).unwrap();
        assert_eq!(
            (s.role, s.generation, s.held_outputs),
            (Role::Primary, 3, 2)
        );
        assert!(!control.power_off_requested());
        assert_eq!(request(&path, "poweroff").unwrap(), "ok");
        assert!(control.power_off_requested());
        assert!(request(&path, "reboot").unwrap().starts_with("error"));
        // One clone at a time; only a primary clones.
        assert!(
            request(&path, "add-backup host:1")
                .unwrap()
                .starts_with("ok")
        );
        assert!(
            request(&path, "migrate host:2")
                .unwrap()
                .contains("in progress")
        );
        assert_eq!(control.take_add_backup().as_deref(), Some("host:1"));
        control.cloning.store(true, Ordering::Relaxed);
        assert!(
            request(&path, "add-backup host:3")
                .unwrap()
                .contains("in progress")
        );
        control.cloning.store(false, Ordering::Relaxed);
        assert!(request(&path, "add-backup").unwrap().starts_with("error"));
        control.update(|s| s.role = Role::Backup);
        assert!(
            request(&path, "add-backup host:4")
                .unwrap()
                .starts_with("error")
        );
        drop(guard);
        assert!(!path.exists());
    }
}
