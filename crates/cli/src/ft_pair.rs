//! A switch, an FT primary and its backup as separate processes on this host, standing for
//! three machines (the network, host A, host B), running the redis guest on a shared disk.
//! Used by `ftvm demo`, `ftvm bench ft` and the end-to-end FT tests (which include this file),
//! so it names the binary it starts instead of assuming it is that binary.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ftvm_ft::event::{Event, Line};

/// What a child printed, collected by a thread as it comes.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn collect(&self, mut from: impl Read + Send + 'static, echo: bool) {
        let sink = self.0.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if echo {
                    use std::io::Write;
                    let _ = std::io::stdout().write_all(&buf[..n]);
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// The FT events printed so far (the sides run with `FTVM_EVENTS=json`).
    pub fn events(&self) -> Vec<Line> {
        Line::parse_all(&self.text())
    }

    /// The first event `pick` accepts.
    pub fn first<T>(&self, pick: impl Fn(&Event) -> Option<T>) -> Option<T> {
        self.events().iter().find_map(|l| pick(&l.event))
    }

    /// Whether an event `is` was printed.
    pub fn has(&self, is: impl Fn(&Event) -> bool) -> bool {
        self.events().iter().any(|l| is(&l.event))
    }

    /// When (Unix ms) the first event `is` accepts was printed.
    pub fn time_of(&self, is: impl Fn(&Event) -> bool) -> Option<u128> {
        self.events()
            .iter()
            .find(|l| is(&l.event))
            .map(|l| u128::from(l.t_ms))
    }

    /// When the backup decided its primary was lost (Unix ms).
    pub fn primary_lost_at(&self) -> Option<u128> {
        self.first(|e| match e {
            Event::PrimaryLost { at_ms, .. } => Some(u128::from(*at_ms)),
            _ => None,
        })
    }
}

/// The redis guest booted once to its ready line by `exe` and saved with a copy of its disk
/// in `dir`: the snapshot and disk a [`PairSpec::snapshot`] starts from.
pub fn save_ready_snapshot(
    exe: &Path,
    guest: &ftvm_image::RedisGuest,
    dir: &Path,
) -> Result<(PathBuf, PathBuf)> {
    save_ready_snapshot_with(exe, guest, dir, &[])
}

/// [`save_ready_snapshot`] with more `ftvm run` arguments (e.g. the guest's address).
pub fn save_ready_snapshot_with(
    exe: &Path,
    guest: &ftvm_image::RedisGuest,
    dir: &Path,
    extra: &[&str],
) -> Result<(PathBuf, PathBuf)> {
    let (disk, snap) = (dir.join("redis.img"), dir.join("ready.snap"));
    ftvm_image::copy_root_disk(guest, &disk)?;
    let out = Command::new(exe)
        .args(["run", "--guest", "redis", "--firmware", "builtin", "--disk"])
        .arg(&disk)
        .args([
            "--forward",
            &format!("tcp:127.0.0.1:{}=10.0.2.15:6379", free_port()?),
            "--until-console",
            "FTVM-REDIS-READY",
            "--save-snapshot",
        ])
        .arg(&snap)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ftvm")?;
    if !out.status.success() {
        bail!(
            "booting the redis guest to its ready line failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((snap, disk))
}

/// The body of `GET path` from the HTTP server at `addr` (a side's `--metrics`), which must
/// answer 200.
pub fn http_get(addr: &str, path: &str) -> Result<String> {
    use std::io::Write;
    let mut c =
        std::net::TcpStream::connect(addr).with_context(|| format!("cannot reach {addr}"))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(c, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    c.read_to_string(&mut out)?;
    let Some((head, body)) = out.split_once("\r\n\r\n") else {
        bail!("{addr}{path}: not an HTTP answer: {out:?}");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{addr}{path}: {head}");
    }
    Ok(body.to_string())
}

pub fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Maps an address to another (see [`PairSpec::via`]).
pub type Via = Box<dyn Fn(&str) -> String>;

/// How to start a pair.
pub struct PairSpec {
    /// The `ftvm` binary.
    pub exe: PathBuf,
    /// The redis guest (its pristine disk is copied).
    pub guest: ftvm_image::RedisGuest,
    /// Scratch directory: the shared disk, the lock records, the sockets.
    pub dir: PathBuf,
    pub firmware: String,
    /// Echo the primary's console here as it runs.
    pub show_console: bool,
    /// Extra arguments for both the primary and the backup (e.g. timeouts).
    pub ft_args: Vec<String>,
    /// Extra arguments for the backup only.
    pub backup_args: Vec<String>,
    /// Extra arguments for the primary only (e.g. `--memory`).
    pub primary_args: Vec<String>,
    /// Maps the primary's channel address to the one the backup dials (a test's proxy).
    pub via: Option<Via>,
    /// False: the same VM without FT (`ftvm run`, no backup), to compare against.
    pub ft: bool,
    /// Start from this snapshot, with a copy of this disk (taken with it), instead of booting.
    pub snapshot: Option<(PathBuf, PathBuf)>,
    /// Keep the primary's console input open (`Pair::type_line`).
    pub console_input: bool,
    /// False: the primary starts alone (FT off) and gets a backup by a live clone
    /// (`Pair::add_backup`).
    pub initial_backup: bool,
    /// Serve the shared disk from a storage server (`qemu-nbd`) instead of a file both sides
    /// open: `--disk nbd://...` (the tie-breaker must then be etcd).
    pub nbd: bool,
}

impl PairSpec {
    pub fn new(exe: PathBuf, guest: ftvm_image::RedisGuest, dir: PathBuf) -> PairSpec {
        PairSpec {
            exe,
            guest,
            dir,
            firmware: "builtin".into(),
            show_console: false,
            ft_args: Vec::new(),
            backup_args: Vec::new(),
            primary_args: Vec::new(),
            via: None,
            ft: true,
            snapshot: None,
            console_input: false,
            initial_backup: true,
            nbd: false,
        }
    }
}

/// Where a live clone asked of the primary stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloneState {
    Running(String),
    Done,
    Failed(String),
}

pub struct Side {
    pub child: Child,
    pub console: Captured,
    pub log: Captured,
    pub control: PathBuf,
}

pub struct Pair {
    pub forward_port: u16,
    pub switch: Child,
    pub primary: Side,
    /// None without FT.
    pub backup: Option<Side>,
    /// Started from a snapshot (the ready line was printed before it was taken).
    from_snapshot: bool,
    stdin: Option<std::process::ChildStdin>,
    /// What a new host (`start_spare`) needs: the binary, scratch directory, shared disk,
    /// switch and FT arguments.
    exe: PathBuf,
    dir: PathBuf,
    disk: PathBuf,
    net: String,
    ft_args: Vec<String>,
    /// Sides that left the pair (failed over, retired, moved): still stopped on drop.
    pub former: Vec<Side>,
    /// The storage server of an NBD shared disk.
    pub storage: Option<Child>,
}

/// `--key` and `--peer-key` for every host of a pair in `dir`: one key all of them hold (made
/// once, kept for later pairs in the same directory).
pub fn channel_keys(dir: &Path) -> Result<Vec<String>> {
    let key = dir.join("hosts.key");
    let public = ftvm_ft::secure::public_path(&key);
    if !key.exists() || !public.exists() {
        let _ = std::fs::remove_file(&key);
        ftvm_ft::Keys::generate()?.write(&key)?;
    }
    Ok(vec![
        "--key".into(),
        key.display().to_string(),
        "--peer-key".into(),
        public.display().to_string(),
    ])
}

/// Serves `image` over NBD as a storage host would (`qemu-nbd`, several clients at once: the
/// primary, its backup, spares); the disk's URL and the server.
pub fn serve_nbd(image: &Path) -> Result<(String, Child)> {
    let port = free_port()?;
    let child = spawn_qemu_nbd(Command::new("qemu-nbd"), "127.0.0.1", port, image)?;
    wait_for("qemu-nbd", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })?;
    Ok((format!("nbd://127.0.0.1:{port}/redis"), child))
}

/// `qemu` (qemu-nbd, perhaps run on a lab host) exporting `image` as `redis` at `bind`:`port`
/// to up to 8 clients, staying up between them.
pub fn spawn_qemu_nbd(mut qemu: Command, bind: &str, port: u16, image: &Path) -> Result<Child> {
    qemu.args([
        "-f", "raw", "-x", "redis", "-b", bind, "-t", "-e", "8", "-p",
    ])
    .arg(port.to_string())
    .arg(image)
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .context("cannot run qemu-nbd (Debian's qemu-utils; scripts/test.sh installs it)")
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(exe: &Path, args: &[String], echo: bool, control: PathBuf, input: bool) -> Result<Side> {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    spawn_side(cmd, echo, control, input)
}

/// Starts `cmd` (an ftvm side, perhaps wrapped, e.g. in `ip netns exec`) printing JSON events,
/// its console and log captured.
pub fn spawn_side(mut cmd: Command, echo: bool, control: PathBuf, input: bool) -> Result<Side> {
    let mut child = cmd
        .stdin(if input { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("FTVM_EVENTS", "json")
        .spawn()
        .context("cannot start an ftvm process")?;
    let (console, log) = (Captured::default(), Captured::default());
    console.collect(child.stdout.take().expect("piped"), echo);
    log.collect(child.stderr.take().expect("piped"), false);
    Ok(Side {
        child,
        console,
        log,
        control,
    })
}

/// The address `side` (called `who`) listens at, once the event `pick` accepts says it.
fn announced(
    side: &Side,
    pick: impl Fn(&Event) -> Option<String>,
    who: &str,
    patience: Duration,
) -> Result<String> {
    let addr = || side.log.first(&pick);
    wait_for(&format!("{who}'s listening"), patience, || {
        addr().is_some() || side.log.text().contains("error")
    })?;
    addr().with_context(|| format!("{who} failed:\n{}", side.log.text()))
}

pub fn wait_for(what: &str, patience: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > patience {
            bail!("{what} did not happen within {patience:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Pair {
    /// Starts the switch (forwarding a free host port to the guest's redis), the primary on
    /// a fresh copy of the redis disk, and the backup connected to it.
    pub fn start(spec: &PairSpec) -> Result<Pair> {
        std::fs::create_dir_all(&spec.dir)?;
        let mut ft_args = spec.ft_args.clone();
        if !ft_args.iter().any(|a| a == "--insecure" || a == "--key") {
            ft_args.extend(channel_keys(&spec.dir)?);
        }
        let disk = spec.dir.join("redis.img");
        match &spec.snapshot {
            None => ftvm_image::copy_root_disk(&spec.guest, &disk)
                .context("cannot copy the redis disk")?,
            Some((_, from)) => ftvm_image::copy_sparse(from, &disk)
                .with_context(|| format!("cannot copy {}", from.display()))?,
        }
        let (disk, storage) = if spec.nbd {
            let (url, server) = serve_nbd(&disk)?;
            (PathBuf::from(url), Some(server))
        } else {
            (disk, None)
        };
        let socket = spec.dir.join("switch.sock");
        let _ = std::fs::remove_file(&socket);
        let forward_port = free_port()?;
        let forward = format!(
            "tcp:127.0.0.1:{forward_port}={}:{}",
            ftvm_image::REDIS_GUEST_IP,
            ftvm_image::REDIS_PORT
        );
        let switch = Command::new(&spec.exe)
            .args(["switch", "--socket"])
            .arg(&socket)
            .args(["--forward", &forward])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the switch")?;
        wait_for("the switch's socket", Duration::from_secs(10), || {
            socket.exists()
        })?;
        let s = |p: &Path| p.display().to_string();
        let net = format!("switch:{}", s(&socket));
        let control = spec.dir.join("primary.ctl");
        let mut primary_args: Vec<String> = match (spec.ft, spec.initial_backup) {
            (true, true) => ["primary", "--listen", "127.0.0.1:0"]
                .map(String::from)
                .to_vec(),
            (true, false) => vec!["primary".into()],
            (false, _) => vec!["run".into()],
        };
        primary_args.extend(
            [
                "--guest",
                "redis",
                "--disk",
                &s(&disk),
                "--net",
                &net,
                "--control",
                &s(&control),
            ]
            .map(String::from),
        );
        match &spec.snapshot {
            Some((snap, _)) => primary_args.extend(["--snapshot".into(), s(snap)]),
            None => primary_args.extend(["--firmware".into(), spec.firmware.clone()]),
        }
        if spec.ft {
            primary_args.extend(ft_args.iter().cloned());
        }
        primary_args.extend(spec.primary_args.iter().cloned());
        let mut primary = spawn(
            &spec.exe,
            &primary_args,
            spec.show_console,
            control,
            spec.console_input,
        )?;
        let stdin = primary.child.stdin.take();
        let mut pair = Pair {
            forward_port,
            switch,
            primary,
            backup: None,
            from_snapshot: spec.snapshot.is_some(),
            stdin,
            exe: spec.exe.clone(),
            dir: spec.dir.clone(),
            disk: disk.clone(),
            net: net.clone(),
            ft_args,
            former: Vec::new(),
            storage,
        };
        if !spec.ft || !spec.initial_backup {
            return Ok(pair);
        }
        let addr = announced(
            &pair.primary,
            |e| match e {
                Event::WaitingForBackup { at } => Some(at.clone()),
                _ => None,
            },
            "the primary",
            Duration::from_secs(120),
        )?;
        let addr = match &spec.via {
            Some(via) => via(&addr),
            None => addr,
        };
        let control = spec.dir.join("backup.ctl");
        let mut backup_args = pair.backup_args("--connect", &addr, &control);
        backup_args.extend(spec.backup_args.iter().cloned());
        pair.backup = Some(spawn(&spec.exe, &backup_args, false, control, false)?);
        Ok(pair)
    }

    /// `ftvm backup` for this pair's disk, switch and FT settings: `how` (`--connect` or
    /// `--listen`) at `addr`, answering on `control`.
    fn backup_args(&self, how: &str, addr: &str, control: &Path) -> Vec<String> {
        let s = |p: &Path| p.display().to_string();
        let mut args: Vec<String> = [
            "backup",
            how,
            addr,
            "--disk",
            &s(&self.disk),
            "--net",
            &self.net,
            "--control",
            &s(control),
        ]
        .map(String::from)
        .to_vec();
        args.extend(self.ft_args.iter().cloned());
        args
    }

    /// Starts a host waiting for a live clone (`ftvm backup --listen`, the spare of the
    /// paper's restored redundancy); its side and channel address.
    pub fn start_spare(&self, name: &str) -> Result<(Side, String)> {
        self.start_spare_at(name, "127.0.0.1:0")
    }

    /// [`Pair::start_spare`] listening at `listen`.
    pub fn start_spare_at(&self, name: &str, listen: &str) -> Result<(Side, String)> {
        self.start_spare_with(name, listen, &[])
    }

    /// [`Pair::start_spare_at`] with `extra` arguments (e.g. its own `--metrics`).
    pub fn start_spare_with(
        &self,
        name: &str,
        listen: &str,
        extra: &[String],
    ) -> Result<(Side, String)> {
        let control = self.dir.join(format!("{name}.ctl"));
        let mut args = self.backup_args("--listen", listen, &control);
        args.extend(extra.iter().cloned());
        let side = spawn(&self.exe, &args, false, control, false)?;
        let at = announced(
            &side,
            |e| match e {
                Event::WaitingForClone { at } => Some(at.clone()),
                _ => None,
            },
            "the spare",
            Duration::from_secs(30),
        )?;
        Ok((side, at))
    }

    /// Asks the primary to clone itself into `to` (`add-backup` or `migrate`); returns the
    /// count of clones it had finished before, for [`Pair::clone_state`].
    pub fn ask_clone(&self, verb: &str, to: &str) -> Result<u64> {
        let before = Pair::status(&self.primary)
            .context("the primary's status")?
            .clones_done;
        let reply = ftvm_ft::control::request(&self.primary.control, &format!("{verb} {to}"))?;
        anyhow::ensure!(reply.starts_with("ok"), "{verb}: {reply}");
        Ok(before)
    }

    /// How the clone to `to`, asked after `before` finished clones, is going.
    pub fn clone_state(&self, before: u64, to: &str) -> Result<CloneState> {
        let Some(s) = Pair::status(&self.primary) else {
            // A migrated primary stops soon after the switch.
            return Ok(
                if self
                    .primary
                    .log
                    .has(|e| matches!(e, Event::MovedAway { .. }))
                {
                    CloneState::Done
                } else {
                    CloneState::Failed("the primary stopped answering".into())
                },
            );
        };
        Ok(if s.clones_done > before {
            CloneState::Done
        } else if let Some(why) = s.clone.failure_to(to) {
            CloneState::Failed(why.to_string())
        } else {
            CloneState::Running(s.clone.to_string())
        })
    }

    /// Waits for the clone to `to` asked after `before` to end; `busy` runs in between (a
    /// client's writes).
    pub fn wait_clone(
        &self,
        before: u64,
        to: &str,
        patience: Duration,
        mut busy: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            match self.clone_state(before, to)? {
                CloneState::Done => return Ok(()),
                CloneState::Failed(why) => bail!("the clone failed: {why}"),
                CloneState::Running(_) if start.elapsed() > patience => {
                    bail!("the clone did not end within {patience:?}")
                }
                CloneState::Running(_) => busy()?,
            }
        }
    }

    /// Starts a spare `name` and clones the primary into it (`verb`: `add-backup`, or
    /// `migrate`), `busy` running meanwhile (a client's writes); the spare is then the pair's
    /// backup (or, migrated, its primary).
    pub fn clone_into_spare(
        &mut self,
        name: &str,
        verb: &str,
        patience: Duration,
        busy: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let (spare, at) = self.start_spare(name)?;
        let before = self.ask_clone(verb, &at)?;
        self.wait_clone(before, &at, patience, busy)?;
        if verb == "migrate" {
            self.set_primary(spare);
        } else {
            self.set_backup(spare);
        }
        Ok(())
    }

    /// Every side's log, the current ones first, for a failing test's report: which side
    /// went wrong is often the one the test no longer looks at.
    pub fn all_logs(&self) -> String {
        let mut out = format!("primary:\n{}", self.primary.log.text());
        if let Some(b) = &self.backup {
            out += &format!("\nbackup:\n{}", b.log.text());
        }
        for (i, side) in self.former.iter().enumerate().rev() {
            out += &format!("\nformer side {i}:\n{}", side.log.text());
        }
        out
    }

    /// After a failover: the backup is the primary now, and the pair has no backup.
    pub fn promote_backup(&mut self) {
        if let Some(b) = self.backup.take() {
            let old = std::mem::replace(&mut self.primary, b);
            self.former.push(old);
        }
    }

    /// `side` is the pair's backup now; the one it replaced (if any) joins the former sides.
    pub fn set_backup(&mut self, side: Side) {
        if let Some(old) = self.backup.replace(side) {
            self.former.push(old);
        }
    }

    /// `side` is the pair's primary now (a migration).
    pub fn set_primary(&mut self, side: Side) {
        let old = std::mem::replace(&mut self.primary, side);
        self.former.push(old);
    }

    /// Waits until the guest's redis answers through the forward; `note` hears both sides'
    /// status every few seconds meanwhile.
    pub fn wait_ready(
        &self,
        patience: Duration,
        mut note: impl FnMut(&ftvm_ft::Status, &ftvm_ft::Status),
    ) -> Result<()> {
        let started = Instant::now();
        let mut last_note = Instant::now();
        while !self.from_snapshot
            && !self
                .primary
                .console
                .text()
                .contains(ftvm_image::REDIS_MARKER)
        {
            if started.elapsed() > patience {
                bail!(
                    "the guest did not start redis within {patience:?}; primary:\n{}",
                    self.primary.log.text()
                );
            }
            if last_note.elapsed() >= Duration::from_secs(3) {
                last_note = Instant::now();
                if let (Some(p), Some(b)) = (
                    Pair::status(&self.primary),
                    self.backup.as_ref().and_then(Pair::status),
                ) {
                    note(&p, &b);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        crate::resp::wait_for_redis(self.forward_port, Duration::from_secs(60))?;
        Ok(())
    }

    /// The backup (panics for a pair started without FT).
    pub fn backup(&self) -> &Side {
        self.backup.as_ref().expect("an FT pair")
    }

    /// Types a line on the primary's console (`console_input` pairs).
    pub fn type_line(&mut self, line: &str) -> Result<()> {
        use std::io::Write;
        let stdin = self
            .stdin
            .as_mut()
            .context("the console input is not open")?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Runs a shell command on the primary's console; what it printed.
    pub fn console_command(&mut self, cmd: &str, patience: Duration) -> Result<String> {
        let from = self.primary.console.text().len();
        self.type_line(&format!("{cmd}; echo PAIR-''STEP-DONE"))?;
        let start = Instant::now();
        loop {
            let t = self.primary.console.text();
            if let Some(i) = t.get(from..).and_then(|s| s.find("PAIR-STEP-DONE")) {
                return Ok(t[from..from + i].to_string());
            }
            if start.elapsed() > patience {
                bail!("`{cmd}` did not finish within {patience:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One side's status, if its control socket answers.
    pub fn status(side: &Side) -> Option<ftvm_ft::Status> {
        let reply = ftvm_ft::control::request(&side.control, "status").ok()?;
        serde_json::from_str(&reply).ok()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let mut children = vec![&mut self.primary.child, &mut self.switch];
        if let Some(s) = &mut self.storage {
            children.push(s);
        }
        if let Some(b) = &mut self.backup {
            children.push(&mut b.child);
        }
        for f in &mut self.former {
            children.push(&mut f.child);
        }
        for c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
