//! A lab of hosts on this machine (root): `scripts/lab.sh` (embedded) builds network
//! namespaces A, B, C, S, K on a Linux bridge; this module puts the pieces of an FT pair on
//! them as on real hosts: etcd and an NBD server on S, the primary on A and its backup on B,
//! each VM's NIC a TAP device bridged to the LAN (no ftvm switch), the channel between A and B
//! over the LAN and sealed, and clients on K talking to the guest's own address. Used by
//! `ftvm demo --lab` and the lab tests (which include this file).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::ft_pair::{Side, channel_keys, spawn_qemu_nbd, spawn_side, wait_for};
use crate::resp::Redis;

/// `scripts/lab.sh`, carried in the binary so `ftvm demo --lab` needs no checkout.
pub const SCRIPT: &str = include_str!("../../../scripts/lab.sh");
/// The redis guest's address on the lab's LAN.
pub const GUEST_IP: &str = "10.77.0.100";
pub const CHANNEL_PORT: u16 = 7000;

/// The LAN address of a lab host.
pub fn addr(host: &str) -> &'static str {
    match host {
        "A" => "10.77.0.11",
        "B" => "10.77.0.12",
        "C" => "10.77.0.13",
        "S" => "10.77.0.20",
        _ => "10.77.0.30",
    }
}

/// The namespaces and bridges, removed on drop.
pub struct Lab {
    pub name: String,
}

impl Lab {
    /// Builds the lab `name` (namespaces `name-A` ...), replacing one of that name.
    pub fn up(name: &str) -> Result<Lab> {
        // SAFETY: geteuid(2) reads the calling process's effective user id; it cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the lab needs root: it makes network namespaces, bridges and TAP devices");
        }
        let lab = Lab { name: name.into() };
        lab.script(&["up"])?;
        Ok(lab)
    }

    /// Runs the lab script with `args`.
    pub fn script(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("bash")
            .arg("-c")
            .arg(SCRIPT)
            .arg("lab.sh")
            .args(args)
            .env("FTVM_LAB", &self.name)
            .stdin(Stdio::null())
            .output()
            .context("cannot run bash for the lab script")?;
        if !out.status.success() {
            bail!(
                "lab.sh {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // What the lab could not do (e.g. no netem in this kernel) is the operator's to know.
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    /// `program` to run on `host`.
    pub fn on(&self, host: &str, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-{host}", self.name)])
            .arg(program);
        c
    }

    /// Runs `f` in a thread whose sockets are `host`'s (its network namespace).
    pub fn in_host<T: Send>(&self, host: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = format!("/var/run/netns/{}-{host}", self.name);
        let ns = std::fs::File::open(&path).with_context(|| format!("no namespace {path}"))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                use std::os::fd::AsRawFd;
                // SAFETY: setns(2) on an open namespace file moves only this thread (a thread
                // of our own, ended when `f` returns) into that network namespace.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("cannot enter {path}: {}", std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("a thread in host {host} panicked"))?
        })
    }

    /// Frames the VM on `host` has put on its TAP device (the TAP's receive count: what the
    /// VM wrote into the host's kernel).
    pub fn tap_frames(&self, host: &str) -> Result<u64> {
        let out = self
            .on(host, "cat")
            .arg("/sys/class/net/vm0/statistics/rx_packets")
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| format!("no TAP counters on {host}"))
    }

    /// Cuts `hosts[0]` from everything, or only from `hosts[1]` (the tests' faults; the demo
    /// only kills).
    #[allow(dead_code)]
    pub fn cut(&self, hosts: &[&str]) -> Result<()> {
        self.script(&[&["cut"], hosts].concat())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.script(&["down"]);
    }
}

/// A process that is stopped when dropped.
pub struct Service(pub Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An FT pair of the redis guest in the lab: storage on S, primary on A, backup on B.
pub struct LabPair {
    pub primary: Side,
    pub backup: Side,
    pub disk_url: String,
    /// What every ftvm side of this pair is given: disk, NIC, tie-breaker, keys.
    pub common: Vec<String>,
    dir: PathBuf,
    _storage: Vec<Service>,
}

impl LabPair {
    /// Starts the storage services in `dir` on S, then the primary from `snapshot` (the redis
    /// guest at its ready line with the lab address, and its disk) on A and the backup on B.
    pub fn start(
        exe: &Path,
        lab: &Lab,
        dir: &Path,
        snapshot: &(PathBuf, PathBuf),
        extra: &[String],
    ) -> Result<Self> {
        let (disk_url, etcd_addr, storage) = start_storage(lab, dir, snapshot)?;
        let mut common: Vec<String> = [
            "--disk", &disk_url, "--net", "tap:vm0", "--etcd", &etcd_addr,
        ]
        .map(String::from)
        .to_vec();
        if !extra.iter().any(|a| a == "--insecure") {
            common.extend(channel_keys(dir)?);
        }
        common.extend(extra.iter().cloned());
        let listen = format!("{}:{CHANNEL_PORT}", addr("A"));
        let mut primary = lab.on("A", exe);
        primary
            .args([
                "primary",
                "--listen",
                &listen,
                "--guest",
                "redis",
                "--snapshot",
            ])
            .arg(&snapshot.0)
            .args(&common)
            .arg("--control")
            .arg(dir.join("a.ctl"));
        let primary = spawn_side(primary, false, dir.join("a.ctl"), false)?;
        let mut backup = lab.on("B", exe);
        backup
            .args(["backup", "--connect", &listen, "--patience", "60"])
            .args(&common)
            .arg("--control")
            .arg(dir.join("b.ctl"));
        let backup = spawn_side(backup, false, dir.join("b.ctl"), false)?;
        Ok(LabPair {
            primary,
            backup,
            disk_url,
            common,
            dir: dir.to_path_buf(),
            _storage: storage,
        })
    }

    /// Waits until the backup on B has joined the primary.
    pub fn wait_paired(&self, patience: Duration) -> Result<()> {
        wait_for("the backup on B", patience, || {
            self.primary
                .log
                .has(|e| matches!(e, ftvm_ft::Event::BackupConnected { .. }))
        })
    }

    /// A spare on `host` (`ftvm backup --listen`) waiting for a clone, answering on
    /// `host.ctl`; its address.
    #[allow(dead_code)]
    pub fn start_spare(&self, exe: &Path, lab: &Lab, host: &str) -> Result<(Side, String)> {
        let at = format!("{}:{CHANNEL_PORT}", addr(host));
        let control = self.dir.join(format!("{host}.ctl"));
        let mut spare = lab.on(host, exe);
        spare
            .args(["backup", "--listen", &at])
            .args(&self.common)
            .arg("--control")
            .arg(&control);
        Ok((spawn_side(spare, false, control, false)?, at))
    }
}

impl Drop for LabPair {
    fn drop(&mut self) {
        for c in [&mut self.primary.child, &mut self.backup.child] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// etcd and the NBD server (a copy of the snapshot's disk in `dir`) on S: the disk's URL,
/// etcd's address, and the services.
fn start_storage(
    lab: &Lab,
    dir: &Path,
    snapshot: &(PathBuf, PathBuf),
) -> Result<(String, String, Vec<Service>)> {
    std::fs::create_dir_all(dir)?;
    let disk = dir.join("redis.img");
    ftvm_image::copy_sparse(&snapshot.1, &disk)?;
    let s = addr("S");
    let etcd_url = format!("http://{s}:2379");
    let etcd = lab
        .on("S", "etcd")
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &etcd_url,
            "--advertise-client-urls",
            &etcd_url,
        ])
        .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run etcd on S (Debian's etcd-server)")?;
    let etcd = Service(etcd);
    let nbd = spawn_qemu_nbd(lab.on("S", "qemu-nbd"), s, 10809, &disk)?;
    let nbd = Service(nbd);
    for port in [2379u16, 10809] {
        lab.in_host("K", || {
            wait_for("storage on S", Duration::from_secs(20), || {
                std::net::TcpStream::connect((s, port)).is_ok()
            })
        })??;
    }
    Ok((
        format!("nbd://{s}:10809/redis"),
        format!("{s}:2379"),
        vec![nbd, etcd],
    ))
}

/// The same guest without FT (`ftvm run`) on A, its disk over NBD from S: what FT is
/// measured against. The VM's side and the storage services.
#[allow(dead_code)]
pub fn start_solo(
    exe: &Path,
    lab: &Lab,
    dir: &Path,
    snapshot: &(PathBuf, PathBuf),
) -> Result<(Side, Vec<Service>)> {
    let (disk_url, _, storage) = start_storage(lab, dir, snapshot)?;
    let control = dir.join("a.ctl");
    let mut vm = lab.on("A", exe);
    vm.args(["run", "--guest", "redis", "--snapshot"])
        .arg(&snapshot.0)
        .args(["--disk", &disk_url, "--net", "tap:vm0", "--control"])
        .arg(&control);
    Ok((spawn_side(vm, false, control, true)?, storage))
}

/// A connection to the guest's redis at its lab address, from the calling thread's network
/// namespace (K's, inside [`Lab::in_host`]), tried again while the guest does not answer yet,
/// for up to `patience`.
pub fn guest_redis(patience: Duration) -> std::io::Result<Redis> {
    let at = format!("{GUEST_IP}:{}", ftvm_image::REDIS_PORT);
    let deadline = std::time::Instant::now() + patience;
    loop {
        match Redis::connect_to(&at, Duration::from_secs(30)) {
            Ok(r) => return Ok(r),
            Err(e) if std::time::Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The redis guest at its ready line with the lab's address, saved once in `dir`.
pub fn lab_snapshot(
    exe: &Path,
    guest: &ftvm_image::RedisGuest,
    dir: &Path,
) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    crate::ft_pair::save_ready_snapshot_with(
        exe,
        guest,
        dir,
        &["--guest-ip", &format!("{GUEST_IP}/24")],
    )
}
