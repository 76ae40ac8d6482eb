//! `ftvm bench replay`: what recording costs and how fast replay runs, beside QEMU's own
//! record mode on the same boot.
//!
//! Every figure comes from real `ftvm record` / `ftvm replay` processes: the boot to the
//! initramfs marker (log size, bandwidth, replay speed), an idle guest at its shell, and the
//! redis guest under redis-benchmark (log bandwidth, and throughput with and without recording).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::bench_guest::{Guest, free_port};
use crate::bench_redis::redis_benchmark;

#[derive(Debug, clap::Args)]
pub struct ReplayBench {
    /// Seconds the idle guest sits at its shell while recording.
    #[arg(long, default_value_t = 20)]
    idle_secs: u64,
    /// redis-benchmark requests per test.
    #[arg(long, default_value_t = 5000)]
    requests: u32,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Skip QEMU's record mode.
    #[arg(long)]
    no_qemu: bool,
}

#[derive(Debug, Default, Serialize)]
struct Figures {
    boot_log_bytes: u64,
    boot_seconds: f64,
    boot_mbit_s: f64,
    boot_replay_mips: f64,
    qemu_rr_boot_log_bytes: Option<u64>,
    idle_mbit_s: f64,
    redis_log_mbit_s: f64,
    redis_set_recorded: f64,
    redis_get_recorded: f64,
    redis_set_plain: f64,
    redis_get_plain: f64,
    redis_replay_mips: f64,
}

fn ftvm() -> Result<Command> {
    Ok(Command::new(
        std::env::current_exe().context("cannot find the ftvm binary")?,
    ))
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn mbit_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs.max(1e-9) / 1e6
}

/// Replays `log`, returning the MIPS `ftvm replay` reports; fails unless it completed.
fn replay(log: &Path) -> Result<f64> {
    let out = ftvm()?
        .args(["replay", "--quiet", "--log"])
        .arg(log)
        .stdin(Stdio::null())
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !err.contains("Complete") {
        bail!("replay of {} failed:\n{err}", log.display());
    }
    // "... instructions in 9.12 s (406 MIPS), state hash ..."
    err.split(" MIPS)")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no MIPS figure in: {err}"))
}

/// QEMU's record mode on the same boot: the size of its event log at the marker.
fn qemu_record(dir: &Path) -> Result<u64> {
    let files = crate::image::default_guest(false)?;
    let rr = dir.join("qemu.rr");
    let mut cmd = crate::bench::qemu_command(&files);
    cmd.args([
        "-append",
        &format!("{} ftvm.init=poweroff", crate::guest::DEFAULT_APPEND),
    ])
    .arg("-icount")
    .arg(format!("shift=0,rr=record,rrfile={}", rr.display()));
    let mut guest = Guest::start(cmd)?;
    guest.wait_for(0, ftvm_image::BOOT_MARKER, Duration::from_secs(600))?;
    // The guest powers itself off right after the marker; QEMU then closes the log.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if guest.exited() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(size(&rr))
}

pub fn run(args: ReplayBench) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut f = Figures::default();

    // Boot to the marker, powering off there.
    let log = dir.path().join("boot.log");
    let started = Instant::now();
    let out = ftvm()?
        .args(["record", "--log"])
        .arg(&log)
        .args([
            "--append",
            &format!("{} ftvm.init=poweroff", crate::guest::DEFAULT_APPEND),
        ])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "ftvm record of the boot failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    f.boot_seconds = started.elapsed().as_secs_f64();
    f.boot_log_bytes = size(&log);
    f.boot_mbit_s = mbit_s(f.boot_log_bytes, f.boot_seconds);
    f.boot_replay_mips = replay(&log)?;
    eprintln!(
        "bench replay: boot: {} bytes in {:.1} s ({:.3} Mbit/s), replay {:.0} MIPS",
        f.boot_log_bytes, f.boot_seconds, f.boot_mbit_s, f.boot_replay_mips
    );
    if !args.no_qemu {
        f.qemu_rr_boot_log_bytes = Some(qemu_record(dir.path())?);
        eprintln!(
            "bench replay: QEMU record mode, same boot: {} bytes",
            f.qemu_rr_boot_log_bytes.unwrap_or(0)
        );
    }

    // Idle at the shell. The log is written through a buffer, so its size is read once the
    // recording has ended: (boot + idle + poweroff) minus (boot alone) is an upper bound on what
    // the idle period cost.
    let log = dir.path().join("idle.log");
    let mut cmd = ftvm()?;
    cmd.args(["record", "--log"]).arg(&log);
    let guest = Guest::start(cmd)?;
    guest.wait_for(0, ftvm_image::BOOT_MARKER, Duration::from_secs(600))?;
    guest.wait_for(0, "# ", Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(args.idle_secs));
    guest.poweroff("poweroff -f");
    let grown = size(&log).saturating_sub(f.boot_log_bytes);
    f.idle_mbit_s = mbit_s(grown, args.idle_secs as f64);
    eprintln!(
        "bench replay: idle: at most {grown} bytes in {} s ({:.5} Mbit/s)",
        args.idle_secs, f.idle_mbit_s
    );

    // redis-benchmark, recorded and not.
    let guest_files = crate::image::redis_guest(false)?;
    for recorded in [false, true] {
        let disk = dir.path().join(format!("redis-{recorded}.img"));
        ftvm_image::copy_root_disk(&guest_files, &disk)?;
        let log = dir.path().join("redis.log");
        let port = free_port()?;
        let mut cmd = ftvm()?;
        if recorded {
            cmd.args(["record", "--log"]).arg(&log);
        } else {
            cmd.arg("run");
        }
        cmd.args(["--guest", "redis", "--disk"])
            .arg(&disk)
            .arg("--forward")
            .arg(format!("tcp:127.0.0.1:{port}=10.0.2.15:6379"));
        let guest = Guest::start(cmd)?;
        guest.wait_for(0, ftvm_image::REDIS_MARKER, Duration::from_secs(600))?;
        guest.wait_for(0, "# ", Duration::from_secs(60))?;
        let before = size(&log);
        let t = Instant::now();
        let (set, get) = redis_benchmark(port, args.requests, 10)?;
        let secs = t.elapsed().as_secs_f64();
        let grown = size(&log).saturating_sub(before);
        guest.poweroff("poweroff");
        if recorded {
            f.redis_set_recorded = set;
            f.redis_get_recorded = get;
            f.redis_log_mbit_s = mbit_s(grown, secs);
            f.redis_replay_mips = replay(&log)?;
        } else {
            f.redis_set_plain = set;
            f.redis_get_plain = get;
        }
        eprintln!(
            "bench replay: redis {}: SET {set:.0}/s GET {get:.0}/s{}",
            if recorded { "recorded" } else { "not recorded" },
            if recorded {
                format!(", log {:.2} Mbit/s", f.redis_log_mbit_s)
            } else {
                String::new()
            }
        );
    }

    println!("Record and replay (ftvm record / ftvm replay), one run:");
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| boot to the marker: log | {} bytes in {:.1} s = {:.3} Mbit/s |",
        f.boot_log_bytes, f.boot_seconds, f.boot_mbit_s
    );
    if let Some(q) = f.qemu_rr_boot_log_bytes {
        println!("| boot to the marker: QEMU `-icount shift=0,rr=record` log | {q} bytes |");
    }
    println!("| boot: replay speed | {:.0} MIPS |", f.boot_replay_mips);
    println!(
        "| idle guest at its shell ({} s): log | at most {:.5} Mbit/s |",
        args.idle_secs, f.idle_mbit_s
    );
    println!(
        "| redis-benchmark (10 clients): log | {:.2} Mbit/s |",
        f.redis_log_mbit_s
    );
    println!(
        "| redis-benchmark SET / GET, not recorded | {:.0} / {:.0} ops/s |",
        f.redis_set_plain, f.redis_get_plain
    );
    println!(
        "| redis-benchmark SET / GET, recorded | {:.0} / {:.0} ops/s ({:+.1}% / {:+.1}%) |",
        f.redis_set_recorded,
        f.redis_get_recorded,
        (f.redis_set_recorded / f.redis_set_plain - 1.0) * 100.0,
        (f.redis_get_recorded / f.redis_get_plain - 1.0) * 100.0
    );
    println!(
        "| redis recording: replay speed | {:.0} MIPS |",
        f.redis_replay_mips
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&f)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
