//! `ftvm bench redis`: the redis guest on ftvm (its switch's forwarder) and on QEMU (user-mode
//! network with hostfwd), same kernel, initramfs, root disk, memory and firmware, in one run.
//!
//! Each repetition boots a fresh copy of the pristine disk, waits for redis, runs the host's
//! `redis-benchmark` against it, then measures the guest's own disk throughput with dd (write
//! with fsync, then read with the page cache dropped) and powers the guest off.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::bench::spread;
use crate::bench_guest::{Guest, free_port, timed, timed_seconds};

#[derive(Debug, clap::Args)]
pub struct RedisBench {
    /// Repetitions per system.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// redis-benchmark requests per test.
    #[arg(long, default_value_t = 5000)]
    requests: u32,
    /// redis-benchmark parallel clients. QEMU's user-mode network stalls with many clients,
    /// hence a modest default.
    #[arg(long, default_value_t = 10)]
    clients: u32,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Skip QEMU.
    #[arg(long)]
    no_qemu: bool,
}

#[derive(Debug, Default, Serialize)]
struct Row {
    system: String,
    set_ops: Vec<f64>,
    get_ops: Vec<f64>,
    dd_write_mb_s: Vec<f64>,
    dd_read_mb_s: Vec<f64>,
    boot_to_redis_s: Vec<f64>,
}

fn ftvm_command(disk: &Path, port: u16) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe().context("cannot find the ftvm binary")?);
    cmd.args(["run", "--guest", "redis", "--disk"])
        .arg(disk)
        .arg("--forward")
        .arg(format!("tcp:127.0.0.1:{port}=10.0.2.15:6379"));
    Ok(cmd)
}

fn qemu_command(guest: &ftvm_image::RedisGuest, disk: &Path, port: u16) -> Command {
    let mut cmd = crate::bench::qemu_command(&guest.base);
    cmd.args(["-append", ftvm_image::REDIS_APPEND])
        .arg("-drive")
        .arg(format!("file={},if=none,id=d,format=raw", disk.display()))
        .args(["-device", "virtio-blk-device,drive=d"])
        .arg("-netdev")
        .arg(format!(
            "user,id=n,hostfwd=tcp:127.0.0.1:{port}-10.0.2.15:6379"
        ))
        .args(["-device", "virtio-net-device,netdev=n"])
        .args(["-device", "virtio-rng-device"]);
    cmd
}

/// SET and GET requests per second from `redis-benchmark --csv`.
pub(crate) fn redis_benchmark(port: u16, requests: u32, clients: u32) -> Result<(f64, f64)> {
    redis_benchmark_pipelined(port, requests, clients, 1)
}

/// [`redis_benchmark`] with `pipeline` requests in flight per client (`-P`).
pub(crate) fn redis_benchmark_pipelined(
    port: u16,
    requests: u32,
    clients: u32,
    pipeline: u32,
) -> Result<(f64, f64)> {
    redis_benchmark_at("127.0.0.1", port, requests, clients, pipeline)
}

/// [`redis_benchmark_pipelined`] against redis at `host` (run from the calling thread's
/// network namespace).
pub(crate) fn redis_benchmark_at(
    host: &str,
    port: u16,
    requests: u32,
    clients: u32,
    pipeline: u32,
) -> Result<(f64, f64)> {
    let mut child = Command::new("redis-benchmark")
        .args([
            "-h",
            host,
            "-p",
            &port.to_string(),
            "-t",
            "set,get",
            "--csv",
        ])
        .args(["-n", &requests.to_string(), "-c", &clients.to_string()])
        .args(["-P", &pipeline.max(1).to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run redis-benchmark (Debian package redis-tools)")?;
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            bail!("redis-benchmark did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output()?;
    parse_csv(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| "redis-benchmark printed no SET and GET results".to_string())
}

fn parse_csv(text: &str) -> Option<(f64, f64)> {
    let rps = |test: &str| {
        text.lines().find_map(|l| {
            let mut f = l.split(',').map(|x| x.trim_matches('"'));
            (f.next()? == test).then(|| f.next()?.parse::<f64>().ok())?
        })
    };
    Some((rps("SET")?, rps("GET")?))
}

/// Bytes each dd moves.
const DD_BYTES: f64 = 32.0 * 1024.0 * 1024.0;

/// MB/s of a 32 MiB dd from what [`timed`] printed.
fn parse_dd(text: &str) -> Option<f64> {
    Some(DD_BYTES / timed_seconds(text)? / 1e6)
}

/// One repetition on one system: (boot-to-redis s, SET, GET, dd write, dd read).
fn one(cmd: Command, port: u16, args: &RedisBench) -> Result<(f64, f64, f64, f64, f64)> {
    let started = Instant::now();
    let mut guest = Guest::start(cmd)?;
    guest.wait_for(0, ftvm_image::REDIS_MARKER, Duration::from_secs(600))?;
    let boot = started.elapsed().as_secs_f64();
    guest.wait_for(0, "# ", Duration::from_secs(60))?;
    let (set, get) = redis_benchmark(port, args.requests, args.clients)?;
    let limit = Duration::from_secs(300);
    let w = guest.command(
        &timed("dd if=/dev/zero of=/root/dd.bin bs=1M count=32 conv=fsync 2>/dev/null"),
        limit,
    )?;
    guest.command("sync; echo 3 > /proc/sys/vm/drop_caches", limit)?;
    let r = guest.command(
        &timed("dd if=/root/dd.bin of=/dev/null bs=1M 2>/dev/null"),
        limit,
    )?;
    let parse =
        |out: &str| parse_dd(out).with_context(|| format!("cannot read dd's rate in:\n{out}"));
    let (w, r) = (parse(&w)?, parse(&r)?);
    guest.poweroff("poweroff");
    Ok((boot, set, get, w, r))
}

pub fn run(args: RedisBench) -> Result<()> {
    let guest = crate::image::redis_guest(false)?;
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let mut systems = vec!["ftvm (switch forwarder), OpenSBI"];
    if !args.no_qemu {
        systems.push("QEMU TCG (user-mode network), OpenSBI");
    }
    let mut rows = Vec::new();
    for (i, name) in systems.iter().enumerate() {
        let mut row = Row {
            system: name.to_string(),
            ..Row::default()
        };
        for rep in 0..args.reps.max(1) {
            let disk = scratch.path().join(format!("disk-{i}-{rep}.img"));
            ftvm_image::copy_root_disk(&guest, &disk)?;
            let port = free_port()?;
            let cmd = if i == 0 {
                ftvm_command(&disk, port)?
            } else {
                qemu_command(&guest, &disk, port)
            };
            let (boot, set, get, w, r) =
                one(cmd, port, &args).with_context(|| format!("{name}, repetition {}", rep + 1))?;
            eprintln!(
                "bench redis: {name}: rep {}: SET {set:.0}/s GET {get:.0}/s, dd write {w:.1} MB/s read {r:.1} MB/s, redis up after {boot:.1} s",
                rep + 1
            );
            row.boot_to_redis_s.push(boot);
            row.set_ops.push(set);
            row.get_ops.push(get);
            row.dd_write_mb_s.push(w);
            row.dd_read_mb_s.push(r);
            let _ = std::fs::remove_file(&disk);
        }
        rows.push(row);
    }

    println!(
        "redis guest (redis-benchmark from the host: {} clients, {} requests per test; guest dd of 32 MiB, write with fsync, read cold), {} repetitions, 256 MiB, median (min..max):",
        args.clients, args.requests, args.reps
    );
    println!();
    println!("| system | SET ops/s | GET ops/s | dd write MB/s | dd read MB/s | boot to redis s |");
    println!("|---|---|---|---|---|---|");
    let cell = |v: &[f64], digits: usize| {
        let (med, min, max) = spread(v);
        format!("{med:.digits$} ({min:.digits$}..{max:.digits$})")
    };
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.system,
            cell(&r.set_ops, 0),
            cell(&r.get_ops, 0),
            cell(&r.dd_write_mb_s, 1),
            cell(&r.dd_read_mb_s, 1),
            cell(&r.boot_to_redis_s, 1)
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_dd_rates_parse() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\"SET\",\"1860.12\",\"5.1\"\n\"GET\",\"2193.22\",\"4.2\"\n";
        assert_eq!(parse_csv(csv), Some((1860.12, 2193.22)));
        assert_eq!(parse_csv("\"SET\",\"1\"\n"), None);
        let mb_s = parse_dd("echo ...\nDD-CS 100\n").unwrap();
        assert!((mb_s - 33.554432).abs() < 1e-9, "{mb_s}");
        assert!(parse_dd("DD-CS 0").unwrap().is_finite());
        assert_eq!(parse_dd("no rate"), None);
    }
}
