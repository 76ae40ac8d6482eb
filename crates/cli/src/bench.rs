//! `ftvm bench`: ftvm against QEMU on the same guest, in the same run.
//!
//! Every figure is the median of several repetitions with its spread (min..max). Results go to
//! stdout as a Markdown table and, with `--json`, to a JSON file. Nothing here is a test: timing
//! lives only in benchmarks.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ftvm_image::BOOT_MARKER;
use ftvm_machine::Machine;
use serde::Serialize;

use crate::guest::{self, GuestArgs};
use ftvm_host::{ClockMode, Host, Runner, Stop};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Boot the default kernel and initramfs to the init marker on ftvm and on QEMU TCG.
    Boot {
        /// Repetitions per configuration.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Skip QEMU (e.g. where qemu-system-riscv64 is not installed).
        #[arg(long)]
        no_qemu: bool,
    },
    /// The redis guest: redis-benchmark SET/GET from the host through ftvm's forwarder and
    /// through QEMU's user-mode network, and the guest's disk throughput (dd) on each.
    Redis(crate::bench_redis::RedisBench),
    /// Record and replay: log bandwidth (boot, idle, redis-benchmark), recording overhead,
    /// replay speed, and QEMU's record-mode log for the same boot.
    Replay(crate::bench_replay::ReplayBench),
    /// A CPU-bound guest job (busybox gzip, md5sum and sort on generated data) on ftvm and QEMU.
    Cpu(crate::bench_cpu::CpuBench),
    /// Fault tolerance against none on the redis guest: redis-benchmark, CPU and disk jobs,
    /// logging bandwidth, Output Rule delay, failover time.
    Ft(crate::bench_ft::FtBench),
    /// Restoring redundancy: a running redis guest cloned into a new backup (time to
    /// lockstep, the primary's pause, the client's write rate during the clone).
    Clone(crate::bench_clone::CloneBench),
    /// What watching costs: an FT redis pair with and without `--metrics` scraped every
    /// second (redis-benchmark rates, scrape latency).
    Metrics(crate::bench_metrics::MetricsBench),
    /// FT on the lab of hosts (root): failover times at K over many kills and freezes, and
    /// redis-benchmark from K without FT, sealed and in the clear (docs/lab.md).
    Lab(crate::bench_lab::LabBench),
}

#[derive(Debug, Serialize)]
struct Row {
    system: String,
    /// Seconds from start to the marker, one per repetition.
    seconds: Vec<f64>,
    /// Guest instructions to the marker (ftvm only).
    instructions: Option<u64>,
}

/// Median, minimum and maximum of repetitions.
pub(crate) fn spread(v: &[f64]) -> (f64, f64, f64) {
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    (median(v), min, max)
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

pub fn command(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Boot {
            reps,
            json,
            no_qemu,
        } => boot(reps.max(1), json, no_qemu),
        BenchCommand::Redis(args) => crate::bench_redis::run(args),
        BenchCommand::Replay(args) => crate::bench_replay::run(args),
        BenchCommand::Cpu(args) => crate::bench_cpu::run(args),
        BenchCommand::Ft(args) => crate::bench_ft::run(args),
        BenchCommand::Clone(args) => crate::bench_clone::run(args),
        BenchCommand::Metrics(args) => crate::bench_metrics::run(args),
        BenchCommand::Lab(args) => crate::bench_lab::run(args),
    }
}

/// Watches for the marker; stops the run there.
struct MarkerHost {
    started: Instant,
    seen: Vec<u8>,
    at: Option<Duration>,
}

impl Host for MarkerHost {
    fn output(&mut self, bytes: &[u8]) {
        self.seen.extend_from_slice(bytes);
        if self.at.is_none()
            && self
                .seen
                .windows(BOOT_MARKER.len())
                .any(|w| w == BOOT_MARKER.as_bytes())
        {
            self.at = Some(self.started.elapsed());
        }
    }
    fn input(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, Stop> {
        if self.at.is_some() || self.started.elapsed() > Duration::from_secs(300) {
            return Err(Stop);
        }
        std::thread::sleep(timeout);
        Ok(None)
    }
}

fn ftvm_boot(firmware: &str, clock: ClockMode) -> Result<(f64, u64)> {
    let started = Instant::now();
    let (cfg, _, io) = guest::resolve(
        &GuestArgs::default_guest(guest::DEFAULT_APPEND.into(), firmware),
        "ftvm.init=poweroff",
    )?;
    let mut runner = Runner::new(Machine::new(&cfg)?, clock);
    runner.io = io;
    let mut host = MarkerHost {
        started,
        seen: Vec::new(),
        at: None,
    };
    let end = runner.run(&mut host);
    match host.at {
        Some(t) => Ok((t.as_secs_f64(), runner.machine.icount())),
        None => bail!(
            "ftvm ({firmware}) did not reach the marker: {end:?}\n{}",
            String::from_utf8_lossy(&host.seen[host.seen.len().saturating_sub(2000)..])
        ),
    }
}

/// QEMU's virt board booting `guest` the way ftvm does: 256 MiB, one hart, OpenSBI, console on
/// stdio. The caller adds `-append` and devices.
pub(crate) fn qemu_command(guest: &ftvm_image::GuestFiles) -> Command {
    let mut cmd = Command::new("qemu-system-riscv64");
    cmd.args([
        "-M",
        "virt",
        "-m",
        "256M",
        "-smp",
        "1",
        "-nographic",
        "-bios",
    ])
    .arg(&guest.firmware)
    .arg("-kernel")
    .arg(&guest.kernel)
    .arg("-initrd")
    .arg(&guest.initrd);
    cmd
}

fn qemu_boot(files: &ftvm_image::GuestFiles) -> Result<f64> {
    let started = Instant::now();
    let mut child = qemu_command(files)
        .arg("-append")
        .arg(format!("{} ftvm.init=poweroff", guest::DEFAULT_APPEND))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start qemu-system-riscv64 (Debian package qemu-system-misc)")?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while reader
            .read_until(b'\n', &mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            if line
                .windows(BOOT_MARKER.len())
                .any(|w| w == BOOT_MARKER.as_bytes())
            {
                let _ = tx.send(started.elapsed());
            }
            line.clear();
        }
        let _ = reader.read_to_end(&mut line);
    });
    let result = rx.recv_timeout(Duration::from_secs(300));
    let _ = child.kill();
    let _ = child.wait();
    match result {
        Ok(t) => Ok(t.as_secs_f64()),
        Err(_) => bail!("QEMU did not print the marker within 300 s"),
    }
}

fn boot(reps: usize, json: Option<PathBuf>, no_qemu: bool) -> Result<()> {
    let files = crate::image::default_guest(false)?;
    let mut rows = Vec::new();
    for (name, firmware, clock) in [
        (
            "ftvm, OpenSBI, real-time clock",
            "opensbi",
            ClockMode::Realtime,
        ),
        (
            "ftvm, built-in SBI, real-time clock",
            "builtin",
            ClockMode::Realtime,
        ),
        (
            "ftvm, built-in SBI, virtual clock",
            "builtin",
            ClockMode::Virtual,
        ),
    ] {
        let mut row = Row {
            system: name.into(),
            seconds: vec![],
            instructions: None,
        };
        for rep in 0..reps {
            let (secs, icount) = ftvm_boot(firmware, clock)?;
            eprintln!(
                "bench boot: {name}: rep {} {secs:.2} s, {icount} instructions",
                rep + 1
            );
            row.seconds.push(secs);
            row.instructions = Some(icount);
        }
        rows.push(row);
    }
    if !no_qemu {
        let mut row = Row {
            system: "QEMU TCG, OpenSBI".into(),
            seconds: vec![],
            instructions: None,
        };
        for rep in 0..reps {
            let secs = qemu_boot(&files)?;
            eprintln!("bench boot: QEMU: rep {} {secs:.2} s", rep + 1);
            row.seconds.push(secs);
        }
        rows.push(row);
    }

    println!(
        "Boot of Debian's {} to the initramfs marker, {reps} repetitions, 256 MiB:",
        files.kernel_version
    );
    println!();
    println!("| system | median s | min..max s | guest instructions | MIPS |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let (med, min, max) = spread(&r.seconds);
        let (insns, mips) = match r.instructions {
            Some(n) => (n.to_string(), format!("{:.0}", n as f64 / med / 1e6)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {med:.2} | {min:.2}..{max:.2} | {insns} | {mips} |",
            r.system
        );
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
