//! `ftvm primary`, `ftvm backup` and `ftvm ctl`: a VM and its backup in virtual lockstep.
//!
//! The protocol lives in `ftvm-ft` (docs/ft-design.md); this module wires it to the guest's
//! files, devices, terminal and control socket, and says what happened in operator's terms.
//! Event lines carry `[t=<unix ms>]` so a timeline can be built from both processes' output.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ftvm_ft::{
    BackupEnd, BackupHost, BackupLink, CloneState, CloneStatus, Control, Etcd, Event, FollowError,
    FtPrimary, FtVm, Joined, LockFile, Pass, PrimaryConfig, Role, Security, TakeOver, TieBreaker,
    Timing, emit,
};
use ftvm_host::{ClockMode, IoBackends, RunEnd};
use ftvm_log::Reader;
use ftvm_machine::Machine;
use ftvm_replay::Replayer;

use crate::guest::GuestArgs;
use crate::record::run_on_terminal;

/// The NBD server and export of a `--disk nbd://...`, if it is one.
fn nbd_target(disk: &Path) -> Option<ftvm_host::NbdTarget> {
    ftvm_host::NbdTarget::parse(disk.to_str()?).ok()
}

/// Exit status of a side that lost the test-and-set and halted itself.
pub const HALTED: i32 = 4;

#[derive(clap::Args)]
pub struct FtArgs {
    /// A Unix socket answering `ftvm ctl status` and `ftvm ctl poweroff`.
    #[arg(long)]
    control: Option<PathBuf>,
    /// The shared storage directory holding the tie-breaker's lock records (default: the
    /// directory of the first --disk).
    #[arg(long, conflicts_with = "etcd")]
    shared_dir: Option<PathBuf>,
    /// Keep the tie-breaker's records in etcd (`HOST:PORT` of a client URL) instead of beside
    /// the shared disk: for hosts that share no directory.
    #[arg(long)]
    etcd: Option<String>,
    /// Silence (no log, ack or heartbeat) after which the peer counts as failed, in ms.
    #[arg(long, default_value_t = 300)]
    timeout_ms: u64,
    /// Heartbeat period of an idle channel, in ms.
    #[arg(long, default_value_t = 50)]
    heartbeat_ms: u64,
    /// A spare host (`HOST:PORT` of an `ftvm backup --listen`) to clone a new backup into
    /// whenever this VM runs alone (after a failover); repeat for more, tried in order.
    #[arg(long = "spare")]
    spares: Vec<String>,
    /// Execution lag of the backup beyond which the primary slows down, in ms.
    #[arg(long, default_value_t = 1000)]
    max_lag_ms: u64,
    /// Log buffered for the backup before the primary stalls, e.g. 64M.
    #[arg(long, default_value = "64M", value_parser = crate::guest::parse_size)]
    log_buffer: u64,
    /// Instructions between state-hash checkpoints in the log (0: none).
    #[arg(long, default_value_t = 100_000_000)]
    checkpoint_interval: u64,
    /// Serve Prometheus metrics (`/metrics`), a live status page (`/`) and its data
    /// (`/status.json`) at `HOST:PORT` (port 0 picks one and prints it).
    #[arg(long)]
    metrics: Option<String>,
    /// This host's private key for the logging and clone channel (`ftvm keygen`).
    #[arg(long, requires = "peer_keys", conflicts_with = "insecure")]
    key: Option<PathBuf>,
    /// A file of public keys (`.pub` from `ftvm keygen`) of the hosts this one accepts as
    /// its peers; repeat for more. Any other host is refused before it gets a byte of the VM.
    #[arg(long = "peer-key", requires = "key")]
    peer_keys: Vec<PathBuf>,
    /// Run the channel unauthenticated and in the clear: anyone who reaches the port can
    /// take the backup's place and read the VM's inputs. Only on a network nobody else
    /// reaches.
    #[arg(long)]
    insecure: bool,
}

impl FtArgs {
    /// How the channel is sealed: pinned keys, or in the clear if the operator said so.
    fn security(&self) -> Result<Security> {
        match (&self.key, self.insecure) {
            (Some(key), _) => Ok(Security::Pinned(Arc::new(ftvm_ft::Keys::load(
                key,
                &self.peer_keys,
            )?))),
            (None, true) => Ok(Security::Insecure),
            (None, false) => bail!(
                "FT needs keys for its logging channel, so no other host can join it: run \
                 `ftvm keygen --out HOST.key` on each host, then give --key HOST.key and \
                 --peer-key with the other hosts' .pub files (or --insecure on a network \
                 nobody else reaches)"
            ),
        }
    }

    fn timing(&self) -> Result<Timing> {
        if self.heartbeat_ms == 0 || self.timeout_ms <= self.heartbeat_ms {
            bail!("--timeout-ms must be longer than --heartbeat-ms (and both above 0)");
        }
        Ok(Timing {
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }

    /// The name of the VM's lock records: its shared disk's file (or NBD export) name.
    fn lock_name(disks: &[PathBuf]) -> String {
        match disks.first() {
            Some(d) => match nbd_target(d) {
                Some(t) => t.name().to_string(),
                None => d
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "ftvm".into()),
            },
            None => "ftvm".into(),
        }
    }

    /// The directory of the lock records: beside the shared disk.
    fn shared_dir(&self, disks: &[PathBuf]) -> Result<PathBuf> {
        Ok(match (&self.shared_dir, disks.first()) {
            (Some(d), _) => d.clone(),
            (None, Some(disk)) if nbd_target(disk).is_some() => bail!(
                "{} is on an NBD server, which has no test-and-set for FT's tie-breaker: give \
                 --etcd HOST:PORT (or --shared-dir DIR on storage both hosts share)",
                disk.display()
            ),
            (None, Some(disk)) => std::fs::canonicalize(disk)
                .with_context(|| format!("cannot find the shared disk {}", disk.display()))?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/")),
            (None, None) => bail!(
                "FT needs shared storage for its tie-breaker: give the shared --disk, \
                 --shared-dir DIR, or --etcd HOST:PORT"
            ),
        })
    }

    /// The tie-breaker for the records named `name`: etcd if asked for, else lock files in the
    /// shared directory.
    fn tiebreaker(&self, disks: &[PathBuf], name: &str) -> Result<Arc<dyn TieBreaker>> {
        Ok(match &self.etcd {
            Some(addr) => Arc::new(Etcd::new(addr, name)),
            None => Arc::new(LockFile::new(&self.shared_dir(disks)?, name)),
        })
    }

    /// The protocol's settings for a VM of `generation` whose lock records are named `lock`,
    /// its channels sealed by `security` (loaded once, at start).
    fn config(
        &self,
        generation: u64,
        lock: String,
        role: &str,
        security: Security,
    ) -> Result<PrimaryConfig> {
        Ok(PrimaryConfig {
            security,
            generation,
            lock,
            who: who(role),
            timing: self.timing()?,
            buffer: self.log_buffer as usize,
            max_lag: Duration::from_millis(self.max_lag_ms),
            checkpoint_interval: self.checkpoint_interval,
            clock: ftvm_ft::SystemClock::shared(),
        })
    }

    fn serve_control(
        &self,
        control: &Arc<Control>,
    ) -> Result<Option<ftvm_ft::control::SocketGuard>> {
        serve_control(self.control.as_deref(), control)
    }

    /// Serves this side's metrics and status page, if `--metrics` asks for them.
    fn serve_metrics(
        &self,
        process: &'static str,
        control: &Arc<Control>,
    ) -> Result<Option<ftvm_metrics::Endpoint>> {
        serve_metrics(
            self.metrics.as_deref(),
            process,
            ftvm_metrics::Source::Vm(control.clone()),
        )
    }
}

/// Serves metrics for `source` at `listen`, if given, and says where.
pub(crate) fn serve_metrics(
    listen: Option<&str>,
    process: &'static str,
    source: ftvm_metrics::Source,
) -> Result<Option<ftvm_metrics::Endpoint>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let e = ftvm_metrics::Endpoint::start(listen, process, source)
        .with_context(|| format!("cannot serve metrics at {listen}"))?;
    eprintln!(
        "ftvm {process}: metrics at http://{0}/metrics, status page at http://{0}/",
        e.addr()
    );
    Ok(Some(e))
}

/// Serves `control` on the socket at `path`, if one is asked for; removed when the guard drops.
pub(crate) fn serve_control(
    path: Option<&Path>,
    control: &Arc<Control>,
) -> Result<Option<ftvm_ft::control::SocketGuard>> {
    path.map(|p| {
        ftvm_ft::control::serve(p, control.clone())
            .with_context(|| format!("cannot open the control socket {}", p.display()))
    })
    .transpose()
}

fn who(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{role} pid {} on {}", std::process::id(), host.trim())
}

#[derive(clap::Args)]
pub struct PrimaryArgs {
    /// Where a backup started from the same boot or snapshot connects (`HOST:PORT`; port 0
    /// picks one and prints it). Without it the VM starts alone, FT off, until
    /// `ftvm ctl add-backup` (or a --spare) clones it into a backup.
    #[arg(long)]
    listen: Option<String>,
    #[command(flatten)]
    guest: GuestArgs,
    /// Start from a snapshot instead of booting (the backup loads the same file).
    #[arg(long, conflicts_with_all = ["kernel", "initrd"])]
    snapshot: Option<PathBuf>,
    /// How guest time follows host time.
    #[arg(long, value_enum, default_value = "realtime")]
    clock: ClockMode,
    #[command(flatten)]
    ft: FtArgs,
}

pub fn primary(args: PrimaryArgs) -> Result<i32> {
    if args.guest.guest == crate::guest::GuestKind::Redis && args.guest.net.is_none() {
        bail!(
            "an FT redis guest needs a network outside both VMs: start `ftvm switch` and pass \
             --net switch:SOCKET, or bridge a TAP device (--net tap:NAME)"
        );
    }
    // Keys are loaded before the guest is prepared: a wrong path fails at once.
    let security = args.ft.security()?;
    let (machine, header, io) = crate::record::prepare(&args.guest, args.snapshot.as_deref())?;
    let lock = FtArgs::lock_name(&args.guest.disk);
    let tb = args.ft.tiebreaker(&args.guest.disk, &lock)?;
    let generation = tb
        .next_generation()
        .with_context(|| format!("cannot read the tie-breaker's records ({})", tb.describe()))?;
    let cfg = args.ft.config(generation, lock, "primary", security)?;
    let control = Control::new(Role::PrimaryWaitingForBackup, generation);
    let _socket = args.ft.serve_control(&control)?;
    let _metrics = args.ft.serve_metrics("primary", &control)?;
    let vm = FtVm::alone(
        cfg.clone(),
        tb.clone(),
        control.clone(),
        args.ft.spares.clone(),
    );
    let mut obs = match &args.listen {
        Some(listen) => {
            control.update(|s| s.role = Role::PrimaryWaitingForBackup);
            let (listener, at) = ftvm_ft::bind_primary(listen)?;
            emit(Event::WaitingForBackup { at: at.to_string() });
            let channel = ftvm_ft::accept_backup(&listener, &cfg.security)?;
            control.update(|s| s.role = Role::Primary);
            emit(Event::BackupConnected { generation });
            let pair = FtPrimary::start(channel, &header, cfg, tb, control.clone())
                .context("cannot start the log on the channel")?;
            vm.paired(pair)
        }
        None => {
            emit(Event::RunningAlone {
                generation,
                spares: !args.ft.spares.is_empty(),
            });
            vm
        }
    };
    let started = Instant::now();
    let (end, runner) = run_on_terminal(machine, io, args.clock, None, &mut obs);
    let secs = started.elapsed().as_secs_f64();
    let (bytes, stalled) = (obs.log_bytes(), obs.stalled());
    let moved = obs.moved_to().map(str::to_string);
    let delivered = obs.finish(Duration::from_secs(2));
    if moved.is_some() {
        // `ftvm ctl migrate` reads the outcome from this side's status: keep answering a
        // moment.
        std::thread::sleep(Duration::from_millis(500));
    }
    emit(Event::RunEnded {
        end: format!("{end:?}"),
        icount: runner.machine.icount(),
        log_bytes: bytes,
        secs,
        stalled_secs: stalled.as_secs_f64(),
        log_end_delivered: delivered,
    });
    Ok(exit_status(end))
}

fn exit_status(end: RunEnd) -> i32 {
    match end {
        RunEnd::PowerOff(code) => code.min(255) as i32,
        RunEnd::Fenced => HALTED,
        _ => 0,
    }
}

#[derive(clap::Args)]
pub struct BackupArgs {
    /// The logging-channel address of a primary started from the same boot or snapshot.
    #[arg(long, required_unless_present = "listen", conflicts_with = "listen")]
    connect: Option<String>,
    /// Wait at `HOST:PORT` for a running primary to clone itself into this backup
    /// (`ftvm ctl add-backup --to`, or a primary's --spare). A clone cut off half-way is
    /// dropped and the backup waits again.
    #[arg(long)]
    listen: Option<String>,
    /// Seconds to keep trying to reach the primary.
    #[arg(long, default_value_t = 30)]
    patience: u64,
    /// The shared disk images, as the primary has them (attached when the backup goes live).
    #[arg(long)]
    disk: Vec<PathBuf>,
    /// The NIC's link once the backup goes live: `switch:SOCKET` (an `ftvm switch`) or
    /// `tap:NAME` (a TAP device on this host's bridge).
    #[arg(long)]
    net: Option<String>,
    /// Do not serve the guest's entropy device once live (give it if the primary had it).
    #[arg(long)]
    no_rng: bool,
    /// The NIC's MAC address (as the primary's).
    #[arg(long, default_value = "52:54:00:12:34:56", value_parser = crate::guest::parse_mac)]
    mac: [u8; 6],
    /// Show the guest's console as the backup replays it (it is shown once live either way).
    #[arg(long)]
    show_console: bool,
    #[command(flatten)]
    ft: FtArgs,
}

pub fn backup(args: BackupArgs) -> Result<i32> {
    let timing = args.ft.timing()?;
    let security = args.ft.security()?;
    if args.ft.etcd.is_none() {
        // A wrong shared directory fails now, not when the primary is lost.
        args.ft.shared_dir(&args.disk)?;
    }
    // The disks open now so a wrong path fails before the backup is needed, not at failover.
    let mut io = IoBackends::default();
    for (slot, path) in args.disk.iter().enumerate() {
        let (disk, _) = ftvm_host::open_disk(path)?;
        io.disks.insert(slot as u8, disk);
    }
    io.entropy = !args.no_rng;
    let control = Control::new(Role::Backup, 0);
    let _socket = args.ft.serve_control(&control)?;
    let _metrics = args.ft.serve_metrics("backup", &control)?;
    let joined = match (&args.connect, &args.listen) {
        (Some(addr), _) => {
            let mut channel =
                ftvm_ft::connect_to_primary(addr, Duration::from_secs(args.patience), &security)?;
            let hello =
                ftvm_ft::read_hello(&mut *channel, timing).context("the primary's hello")?;
            emit(Event::ConnectedToPrimary { addr: addr.clone() });
            Joined {
                channel,
                hello,
                machine: None,
            }
        }
        (None, Some(listen)) => {
            let (listener, joined) = wait_for_clone(listen, timing, &security, &control)?;
            if joined.hello.takeover {
                return take_over(joined, listener, io, &args, control, security);
            }
            joined
        }
        (None, None) => bail!("give --connect PRIMARY or --listen ADDR"),
    };
    let mut host = ReplayHost {
        args: &args,
        control: control.clone(),
        security,
    };
    match ftvm_ft::follow(&mut host, joined, timing, &control, &who("backup"))? {
        BackupEnd::Stopped(_) => Ok(0),
        BackupEnd::Halted { .. } => Ok(HALTED),
        BackupEnd::Live(live) => {
            let cfg = args.ft.config(
                live.generation,
                live.lock,
                "primary (was backup)",
                host.security,
            )?;
            let vm =
                FtVm::alone(cfg, live.tiebreaker, control, args.ft.spares.clone()).after_failover();
            go_live(
                live.machine,
                io,
                &args,
                live.guest_ip,
                vm,
                &live.pending_console,
            )
        }
    }
}

/// The backup's host for `ftvm_ft::follow`: replays in a thread of its own and shows the
/// guest's console if asked.
struct ReplayHost<'a> {
    args: &'a BackupArgs,
    control: Arc<Control>,
    security: Security,
}

impl BackupHost for ReplayHost<'_> {
    fn replay(
        &mut self,
        link: &BackupLink,
        received: Option<Machine>,
    ) -> Result<Pass, FollowError> {
        let status = spawn_backup_status(link.clone(), self.control.clone());
        let started = Instant::now();
        let pass =
            replay(link, received, self.args.show_console).map_err(|e| FollowError::Host(e.into()));
        drop(status);
        let mut pass = pass?;
        pass.secs = started.elapsed().as_secs_f64();
        Ok(pass)
    }

    fn tiebreaker(&mut self, lock: &str) -> Result<Arc<dyn TieBreaker>, FollowError> {
        self.args
            .ft
            .tiebreaker(&self.args.disk, lock)
            .map_err(|e| FollowError::Host(e.into()))
    }

    fn clock(&self) -> Arc<dyn ftvm_ft::Clock> {
        ftvm_ft::SystemClock::shared()
    }

    fn security(&self) -> Security {
        self.security.clone()
    }
}

/// A migration: this host receives the primary (`ftvm_ft::take_over` decides how it runs).
fn take_over(
    joined: Joined,
    listener: std::net::TcpListener,
    io: IoBackends,
    args: &BackupArgs,
    control: Arc<Control>,
    security: Security,
) -> Result<i32> {
    let Joined { hello, machine, .. } = joined;
    let mut machine = machine.context("a migration without the machine")?;
    let tb = args.ft.tiebreaker(&args.disk, &hello.lock)?;
    let mut cfg = args.ft.config(
        hello.generation,
        hello.lock.clone(),
        "primary (moved here)",
        security,
    )?;
    let spares = args.ft.spares.clone();
    let vm = match ftvm_ft::take_over(&mut machine, listener, &hello, &cfg, tb.clone(), &control)? {
        TakeOver::Paired(pair) => FtVm::alone(cfg, tb, control, spares).paired(*pair),
        TakeOver::Alone { generation } => {
            cfg.generation = generation;
            FtVm::alone(cfg, tb, control, spares)
        }
        TakeOver::Halted { .. } => return Ok(HALTED),
    };
    go_live(machine, io, args, None, vm, &[])
}

/// Replays the channel's log in a thread of its own at a lower CPU priority: on a host it
/// shares, the backup's replay must yield to whatever serves the VM's clients (its own ack
/// threads among them; it may trail, and the primary's lag control bounds by how much).
fn replay(link: &BackupLink, received: Option<Machine>, show_console: bool) -> Result<Pass> {
    let (log, progress) = (link.log(), link.replayed.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("replay".into())
        .spawn(move || {
            // SAFETY: setpriority(2) on the calling thread (who = 0 names it on Linux, where
            // nice is per thread); it only lowers this thread's priority.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
            let _ = tx.send(replay_here(log, received, progress, show_console));
        })
        .context("cannot start the replay thread")?;
    rx.recv().context("the replay thread died")?
}

fn replay_here(
    log: ftvm_ft::InboxReader,
    received: Option<Machine>,
    progress: Arc<std::sync::atomic::AtomicU64>,
    show_console: bool,
) -> Result<Pass> {
    let reader = Reader::new(BufReader::with_capacity(1 << 20, log))
        .context("cannot read the log header from the primary")?;
    let machine = ftvm_replay::start_machine_from(reader.header(), received)?;
    let mut replayer = Replayer::new(machine, reader);
    replayer.progress = Some(progress);
    if show_console {
        replayer.on_console = Some(crate::record::stdout_sink());
    }
    let guest_ip = Arc::new(std::sync::Mutex::new(None));
    let ip = guest_ip.clone();
    replayer.on_request = Some(Box::new(move |_, request| {
        if let ftvm_virtio::Request::NetTx(frame) = request
            && let Some(a) = ftvm_ft::announce::source_ipv4(frame)
            && let Ok(mut ip) = ip.lock()
        {
            *ip = Some(a);
        }
    }));
    let result = replayer.run(None);
    let pending_console = replayer.unmatched_console().to_vec();
    let halted = replayer.halted();
    let guest_ip = *guest_ip.lock().unwrap_or_else(|e| e.into_inner());
    Ok(Pass {
        result,
        machine: replayer.into_machine(),
        pending_console,
        halted,
        guest_ip,
        secs: 0.0,
    })
}

/// Waits at `listen` for a primary to clone itself here; a clone that fails half-way is
/// dropped and the wait goes on. Returns the listener (a migration's backup reconnects to it)
/// and the channel, its hello and the machine received.
fn wait_for_clone(
    listen: &str,
    timing: Timing,
    security: &Security,
    control: &Control,
) -> Result<(std::net::TcpListener, Joined)> {
    let (listener, at) = ftvm_ft::bind_primary(listen)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("cannot listen for a primary")?;
    control.update(|s| s.role = Role::Spare);
    emit(Event::WaitingForClone { at: at.to_string() });
    loop {
        let mut channel = ftvm_ft::accept_backup(&listener, security)?;
        let from = channel.peer();
        let hello = match ftvm_ft::read_hello(&mut *channel, timing) {
            Ok(h) => h,
            Err(e) => {
                emit(Event::CloneReceiveFailed {
                    from,
                    why: e.to_string(),
                });
                continue;
            }
        };
        if hello.clone_ram == 0 {
            let joined = Joined {
                channel,
                hello,
                machine: None,
            };
            return Ok((listener, joined));
        }
        emit(Event::ReceivingClone {
            from: from.clone(),
            mib: hello.clone_ram >> 20,
            generation: hello.generation,
        });
        control.update(|s| s.role = Role::SpareReceiving);
        let started = Instant::now();
        let mut shown = Instant::now();
        let result = ftvm_ft::clone::receive_clone(&mut *channel, hello.clone_ram, |pages| {
            control.update(|s| {
                s.clone = CloneStatus::receiving(&from, CloneState::Receiving { pages })
            });
            if shown.elapsed() >= Duration::from_secs(1) {
                shown = Instant::now();
                emit(Event::ClonePages { pages });
            }
        });
        match result {
            Ok(machine) => {
                emit(Event::CloneReceived {
                    icount: machine.icount(),
                    secs: started.elapsed().as_secs_f64(),
                });
                control.update(|s| s.clone = CloneStatus::receiving(&from, CloneState::Complete));
                let joined = Joined {
                    channel,
                    hello,
                    machine: Some(machine),
                };
                return Ok((listener, joined));
            }
            Err(e) => {
                emit(Event::CloneReceiveFailed {
                    from: from.clone(),
                    why: e.to_string(),
                });
                control.update(|s| {
                    s.role = Role::Spare;
                    s.clone =
                        CloneStatus::receiving(&from, CloneState::Failed { why: e.to_string() });
                });
            }
        }
    }
}

/// Keeps the backup's status current while it replays; stops when dropped.
fn spawn_backup_status(link: BackupLink, control: Arc<Control>) -> StopOnDrop {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let started = Instant::now();
    std::thread::spawn(move || {
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            let (received, messages) = (link.received(), link.messages());
            let icount = link.replayed.load(std::sync::atomic::Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            control.update(|st| {
                st.icount = icount;
                st.log_bytes = received;
                st.log_messages = messages;
                st.log_mbit_s = received as f64 * 8.0 / secs / 1e6;
                st.peer = ftvm_ft::control::Peer::Primary { received };
            });
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    StopOnDrop(stop)
}

struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The VM runs here now: real time, the shared disk and the NIC attached (`ftvm_ft::go_live`
/// announces the VM and reissues what the dead primary left pending).
fn go_live(
    mut machine: Machine,
    mut io: IoBackends,
    args: &BackupArgs,
    ip: Option<[u8; 4]>,
    mut vm: FtVm,
    pending_console: &[u8],
) -> Result<i32> {
    let nic = match &args.net {
        Some(net) => Some(ftvm_ft::LiveNic {
            slot: args.disk.len() as u8,
            port: crate::guest::open_nic(net).context("going live: cannot attach the NIC")?,
            name: net.clone(),
            mac: args.mac,
        }),
        None => None,
    };
    ftvm_ft::go_live(&mut machine, &mut io, vm.generation(), nic, ip);
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(pending_console);
        let _ = out.flush();
    }
    let started = Instant::now();
    let (end, runner) = run_on_terminal(machine, io, ClockMode::Realtime, None, &mut vm);
    let (bytes, stalled) = (vm.log_bytes(), vm.stalled());
    let delivered = vm.finish(Duration::from_secs(2));
    emit(Event::RunEnded {
        end: format!("{end:?}"),
        icount: runner.machine.icount(),
        log_bytes: bytes,
        secs: started.elapsed().as_secs_f64(),
        stalled_secs: stalled.as_secs_f64(),
        log_end_delivered: delivered,
    });
    Ok(exit_status(end))
}

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Where this host's private key goes (owner-only; never over an existing file); the
    /// public key goes beside it with `.pub` added, for the other hosts' --peer-key.
    #[arg(long)]
    out: PathBuf,
}

/// `ftvm keygen`: a static key for the FT channel.
pub fn keygen(args: KeygenArgs) -> Result<i32> {
    let keys = ftvm_ft::Keys::generate()?;
    let public = keys.write(&args.out)?;
    println!(
        "wrote {} (private: keep it on this host) and {} (give it to the other hosts: \
         --peer-key {})\n{}",
        args.out.display(),
        public.display(),
        public.display(),
        keys.public_line()
    );
    Ok(0)
}

#[derive(clap::Args)]
pub struct CtlArgs {
    /// `status`, `poweroff`, `add-backup` (clone the running primary into a new backup, or
    /// move its backup there) or `migrate` (move the primary; its backup follows).
    #[arg(value_parser = ["status", "poweroff", "add-backup", "migrate"])]
    command: String,
    /// The control sockets of the VMs (`--control` of `ftvm primary` / `ftvm backup`); status
    /// takes several, one line each.
    #[arg(long = "socket", required = true)]
    sockets: Vec<PathBuf>,
    /// add-backup / migrate: where the new host waits (`ftvm backup --listen HOST:PORT`). A
    /// primary that has a backup moves it there (the old one stops once the new one is in
    /// lockstep).
    #[arg(long, required_if_eq_any([("command", "add-backup"), ("command", "migrate")]))]
    to: Option<String>,
    /// add-backup / migrate: return once the clone started instead of showing it to the end.
    #[arg(long)]
    no_wait: bool,
    /// status: one JSON object per socket (the role as a tagged enum) instead of the table.
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    /// status: redraw the figures every second (MIPS, lag, log bandwidth, Output Rule delay,
    /// sparklines of the last minute) until interrupted.
    #[arg(long)]
    watch: bool,
    /// status --watch: seconds between redraws.
    #[arg(long, default_value_t = 1.0, requires = "watch")]
    interval: f64,
    /// status --watch: stop after this many redraws (for scripts).
    #[arg(long, requires = "watch")]
    refreshes: Option<u64>,
}

/// `ftvm ctl add-backup` / `migrate`: asks the primary to clone itself and shows the clone's
/// progress until the new backup is in lockstep, or the primary moved (exit 0), or the clone
/// failed (exit 1).
fn clone_to(path: &Path, verb: &str, to: &str, wait: bool) -> Result<i32> {
    let status = |path: &Path| -> Result<ftvm_ft::Status> {
        let reply = ftvm_ft::control::request(path, "status")
            .with_context(|| format!("{}", path.display()))?;
        serde_json::from_str(&reply)
            .with_context(|| format!("{}: unexpected reply {reply:?}", path.display()))
    };
    let before = status(path)?.clones_done;
    let reply = ftvm_ft::control::request(path, &format!("{verb} {to}"))
        .with_context(|| format!("{}", path.display()))?;
    if !reply.starts_with("ok") {
        eprintln!("ftvm ctl: {}: {reply}", path.display());
        return Ok(1);
    }
    eprintln!("ftvm ctl: {reply}");
    if !wait {
        return Ok(0);
    }
    let started = Instant::now();
    let mut last = CloneStatus::None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let s = match status(path) {
            Ok(s) => s,
            // A moved primary stops once its backup has the log's end.
            Err(_)
                if verb == "migrate"
                    && matches!(
                        last,
                        CloneStatus::To {
                            state: CloneState::Moved { .. },
                            ..
                        }
                    ) =>
            {
                println!(
                    "the primary moved to {to} after {:.2} s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        if s.clone != last {
            eprintln!(
                "ftvm ctl: [{:6.2} s] clone {}",
                started.elapsed().as_secs_f64(),
                s.clone
            );
            last = s.clone.clone();
        }
        if s.clones_done > before && verb == "migrate" {
            println!(
                "the primary moved to {to} after {:.2} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(0);
        }
        if s.clones_done > before {
            println!(
                "new backup at {to} in lockstep after {:.2} s; generation {}",
                started.elapsed().as_secs_f64(),
                s.generation
            );
            return Ok(0);
        }
        if s.clone.failure_to(to).is_some() {
            return Ok(1);
        }
    }
}

pub fn ctl(args: CtlArgs) -> Result<i32> {
    if args.command == "add-backup" || args.command == "migrate" {
        let [path] = &args.sockets[..] else {
            bail!("{} talks to one primary: give one --socket", args.command);
        };
        let to = args.to.as_deref().unwrap_or_default();
        return clone_to(path, &args.command, to, !args.no_wait);
    }
    if args.watch {
        if args.command != "status" {
            bail!("--watch goes with status");
        }
        if !(args.interval > 0.0 && args.interval.is_finite()) {
            bail!("--interval must be a positive number of seconds");
        }
        return crate::watch::watch(
            &args.sockets,
            Duration::from_secs_f64(args.interval),
            args.refreshes,
        );
    }
    if args.command == "status" && !args.json {
        println!(
            "{:<30} {:>4} {:>14} {:>9} {:>12} {:>9} {:>5} {:>8}  peer",
            "role", "gen", "icount", "lag ms", "log bytes", "Mbit/s", "held", "throttle"
        );
    }
    let mut failed = false;
    for path in &args.sockets {
        let reply = match ftvm_ft::control::request(path, &args.command) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("ftvm ctl: {}: {e}", path.display());
                failed = true;
                continue;
            }
        };
        if args.command == "status" {
            let s: ftvm_ft::Status = serde_json::from_str(&reply)
                .with_context(|| format!("{}: unexpected reply {reply:?}", path.display()))?;
            if args.json {
                println!("{}", serde_json::to_string(&s)?);
                continue;
            }
            println!(
                "{:<30} {:>4} {:>14} {:>9.1} {:>12} {:>9.3} {:>5} {:>7.0}%  {}",
                s.role,
                s.generation,
                s.icount,
                s.lag_ms,
                s.log_bytes,
                s.log_mbit_s,
                s.held_outputs,
                s.throttle_pct,
                s.peer
            );
            if s.clone != CloneStatus::None {
                println!("{:<30} clone {}", "", s.clone);
            }
        } else if reply != "ok" {
            eprintln!("ftvm ctl: {}: {reply}", path.display());
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}
