//! `ftvm bench lab`: FT on the lab of hosts (root; docs/lab.md), measured as a client on K
//! sees it: failover times over many kills and freezes of the primary on A, with the backup's
//! lag at each; then redis-benchmark from K against the guest without FT, under FT with the
//! channel sealed, and in the clear: throughput, the Output Rule's added delay, the log's
//! bandwidth, and the CPU the primary's and the backup's processes spend per request.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::ft_load::{Load, failover_on};
use crate::ft_pair::{Pair, Side};
use crate::lab::{GUEST_IP, Lab, LabPair, guest_redis, lab_snapshot, start_solo};

#[derive(Debug, clap::Args)]
pub struct LabBench {
    /// Failovers to measure, alternately SIGKILL and SIGSTOP of the primary.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Seconds of client load before each failure.
    #[arg(long, default_value_t = 2.0)]
    load_secs: f64,
    /// redis-benchmark requests per throughput row.
    #[arg(long, default_value_t = 20000)]
    requests: u32,
    /// Give the clients on K this minimum TCP retransmission timeout (ms) on the LAN route
    /// (Linux's default is 200 ms): how much of a failover the client's own retransmission
    /// timer is.
    #[arg(long)]
    client_rto_min_ms: Option<u32>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Kill {
    freeze: bool,
    /// From the failure to K's next reply.
    reply_ms: f64,
    /// From the failure to the backup's decision that the primary is lost.
    detect_ms: f64,
    /// The backup's execution lag just before the failure.
    lag_ms: f64,
}

#[derive(Debug, Serialize, Default)]
struct Throughput {
    config: String,
    set: f64,
    get: f64,
    output_delay_p50_ms: f64,
    output_delay_p99_ms: f64,
    log_mbit: f64,
    /// CPU time per request of the VM's process on A, and of the backup's on B, in µs.
    cpu_a_us: f64,
    cpu_b_us: f64,
}

/// The guest's disk throughput (dd, 32 MiB, fsync) with its disk over NBD and as a file.
#[derive(Debug, Serialize, Default)]
struct Disk {
    nbd_mb_s: f64,
    file_mb_s: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    kills: Vec<Kill>,
    throughput: Vec<Throughput>,
    disk: Disk,
}

const DISK_JOB: &str = "dd if=/dev/zero of=/root/lab.bin bs=1M count=32 conv=fsync 2>/dev/null";

/// Runs `cmd` on `vm`'s console (its input piped); what it printed.
fn console_command(vm: &mut Side, cmd: &str, patience: Duration) -> Result<String> {
    use std::io::Write;
    let from = vm.console.text().len();
    let stdin = vm
        .child
        .stdin
        .as_mut()
        .context("the console input is not open")?;
    stdin.write_all(format!("{cmd}; echo LAB-''STEP-DONE\n").as_bytes())?;
    stdin.flush()?;
    let start = Instant::now();
    loop {
        let t = vm.console.text();
        if let Some(i) = t.get(from..).and_then(|s| s.find("LAB-STEP-DONE")) {
            return Ok(t[from..from + i].to_string());
        }
        anyhow::ensure!(
            start.elapsed() < patience,
            "`{cmd}` did not finish in {patience:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// dd in the guest, in MB/s.
fn dd(vm: &mut Side) -> Result<f64> {
    let out = console_command(
        vm,
        &crate::bench_guest::timed(DISK_JOB),
        Duration::from_secs(600),
    )?;
    let secs =
        crate::bench_guest::timed_seconds(&out).with_context(|| format!("no timing in {out}"))?;
    console_command(vm, "rm /root/lab.bin", Duration::from_secs(60))?;
    Ok(32.0 * 1024.0 * 1024.0 / secs / 1e6)
}

/// User plus system CPU time of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis: utime and stime are the 12th and
    // 13th of them.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf(3) reads a constant of the system; it has no side effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / hz)
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return 0.0;
    }
    s[((s.len() - 1) as f64 * q).round() as usize]
}

fn one_failover(
    exe: &Path,
    lab: &Lab,
    dir: &Path,
    snapshot: &(PathBuf, PathBuf),
    freeze: bool,
    load: Duration,
) -> Result<Kill> {
    let pair = LabPair::start(exe, lab, dir, snapshot, &[])?;
    pair.wait_paired(Duration::from_secs(120))?;
    let (pid, control) = (pair.primary.child.id(), pair.primary.control.clone());
    let mut lag_ms = 0.0;
    let f = lab.in_host("K", || {
        let redis = guest_redis(Duration::from_secs(30))?;
        failover_on(
            redis,
            Load::Sets,
            load,
            50,
            &mut || {
                lag_ms = ftvm_ft::control::request(&control, "status")
                    .ok()
                    .and_then(|r| serde_json::from_str::<ftvm_ft::Status>(&r).ok())
                    .map(|s| s.lag_ms)
                    .unwrap_or(0.0);
                let sig = if freeze { libc::SIGSTOP } else { libc::SIGKILL };
                // SAFETY: kill(2) on the primary's pid, a child of this process not yet waited
                // for (`ip netns exec` became the ftvm process itself).
                anyhow::ensure!(unsafe { libc::kill(pid as i32, sig) } == 0, "kill failed");
                Ok(())
            },
            &mut |_| {},
        )
    })??;
    let lost = pair
        .backup
        .log
        .primary_lost_at()
        .context("the backup never declared its primary lost")?;
    Ok(Kill {
        freeze,
        reply_ms: f.first_reply.as_secs_f64() * 1e3,
        detect_ms: lost.saturating_sub(f.failed_at_ms) as f64,
        lag_ms,
    })
}

/// redis-benchmark from K against the guest; the figures of `vm` (and `backup`) around it.
fn measure(
    lab: &Lab,
    config: &str,
    requests: u32,
    vm: &Side,
    backup: Option<&Side>,
) -> Result<Throughput> {
    let before = Pair::status(vm).context("the VM's control socket does not answer")?;
    let (a0, b0) = (
        cpu_time(vm.child.id()),
        backup.map(|b| cpu_time(b.child.id())),
    );
    let started = Instant::now();
    let (set, get) = lab.in_host("K", || {
        crate::bench_redis::redis_benchmark_at(GUEST_IP, 6379, requests, 10, 1)
    })??;
    let secs = started.elapsed().as_secs_f64();
    let after = Pair::status(vm).context("the VM's control socket does not answer")?;
    let per_request = |d: Duration| d.as_secs_f64() * 1e6 / (2.0 * requests as f64);
    Ok(Throughput {
        config: config.into(),
        set,
        get,
        output_delay_p50_ms: after.output_delay_ms[0],
        output_delay_p99_ms: after.output_delay_ms[1],
        log_mbit: (after.log_bytes - before.log_bytes) as f64 * 8.0 / secs / 1e6,
        cpu_a_us: per_request(cpu_time(vm.child.id()) - a0),
        cpu_b_us: match (backup, b0) {
            (Some(b), Some(b0)) => per_request(cpu_time(b.child.id()) - b0),
            _ => 0.0,
        },
    })
}

pub fn run(args: LabBench) -> Result<()> {
    let exe = std::env::current_exe()?;
    let guest = crate::image::redis_guest(false)?;
    let dir = tempfile::Builder::new()
        .prefix("ftvm-bench-lab-")
        .tempdir()?;
    let lab = Lab::up("ftvm-bench")?;
    if let Some(ms) = args.client_rto_min_ms {
        let route = format!(
            "ip route replace 10.77.0.0/24 dev eth0 proto kernel scope link src {} rto_min {ms}ms",
            crate::lab::addr("K")
        );
        let ok = lab.on("K", "sh").args(["-c", &route]).status()?.success();
        anyhow::ensure!(ok, "cannot set the clients' rto_min on K");
    }
    let snapshot = lab_snapshot(&exe, &guest, &dir.path().join("snap"))?;
    let mut kills = Vec::new();
    for i in 0..args.kills {
        let freeze = i % 2 == 1;
        let d = dir.path().join(format!("failover-{i}"));
        let k = one_failover(
            &exe,
            &lab,
            &d,
            &snapshot,
            freeze,
            Duration::from_secs_f64(args.load_secs),
        )
        .with_context(|| format!("failover {i}"))?;
        eprintln!(
            "ftvm bench lab: {} {i}: next reply at K after {:.1} ms (detected {:.0} ms, lag \
             {:.1} ms)",
            if freeze { "freeze" } else { "kill" },
            k.reply_ms,
            k.detect_ms,
            k.lag_ms
        );
        kills.push(k);
        let _ = std::fs::remove_dir_all(&d);
    }
    let mut throughput = Vec::new();
    let mut disk = Disk::default();
    {
        let (vm, _storage) = start_solo(&exe, &lab, &dir.path().join("solo"), &snapshot)?;
        // Its redis answers on the LAN before it is measured.
        lab.in_host("K", || guest_redis(Duration::from_secs(60)))??;
        throughput.push(measure(&lab, "no FT", args.requests, &vm, None)?);
        let mut vm = vm;
        disk.nbd_mb_s = dd(&mut vm)?;
        let _ = vm.child.kill();
        let _ = vm.child.wait();
    }
    {
        // The same guest with its disk a file on A's own filesystem.
        let d = dir.path().join("local");
        std::fs::create_dir_all(&d)?;
        let image = d.join("redis.img");
        ftvm_image::copy_sparse(&snapshot.1, &image)?;
        let mut vm = lab.on("A", &exe);
        vm.args(["run", "--guest", "redis", "--snapshot"])
            .arg(&snapshot.0)
            .arg("--disk")
            .arg(&image)
            .args(["--net", "tap:vm0", "--control"])
            .arg(d.join("a.ctl"));
        let mut vm = crate::ft_pair::spawn_side(vm, false, d.join("a.ctl"), true)?;
        disk.file_mb_s = dd(&mut vm)?;
        let _ = vm.child.kill();
        let _ = vm.child.wait();
    }
    for (config, extra) in [
        ("FT, sealed", vec![]),
        ("FT, --insecure", vec!["--insecure".to_string()]),
    ] {
        let pair = LabPair::start(
            &exe,
            &lab,
            &dir.path().join(config.replace([',', ' '], "")),
            &snapshot,
            &extra,
        )?;
        pair.wait_paired(Duration::from_secs(120))?;
        throughput.push(measure(
            &lab,
            config,
            args.requests,
            &pair.primary,
            Some(&pair.backup),
        )?);
    }
    print(&kills, &throughput, &args);
    println!();
    println!(
        "guest dd (32 MiB, fsync), no FT: disk over NBD from S {:.1} MB/s, disk a file on A {:.1} MB/s",
        disk.nbd_mb_s, disk.file_mb_s
    );
    if let Some(path) = &args.json {
        let report = Report {
            kills,
            throughput,
            disk,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

fn print(kills: &[Kill], throughput: &[Throughput], args: &LabBench) {
    println!(
        "FT on the lab (docs/lab.md): primary on A, backup on B, disk over NBD and etcd on S, \
         the client on K; links undelayed where the kernel has no netem; {} failures under \
         one-at-a-time SETs after {:.1} s of load; the clients' minimum TCP retransmission \
         timeout {}",
        kills.len(),
        args.load_secs,
        match args.client_rto_min_ms {
            Some(ms) => format!("{ms} ms"),
            None => "Linux's 200 ms".into(),
        }
    );
    println!();
    println!(
        "| failure | n | next reply at K p50 / p99 ms | detected p50 ms | lag at failure p50 / max ms |"
    );
    println!("|---|---|---|---|---|");
    for (name, freeze) in [("SIGKILL", false), ("SIGSTOP", true)] {
        let of: Vec<&Kill> = kills.iter().filter(|k| k.freeze == freeze).collect();
        if of.is_empty() {
            continue;
        }
        let pick = |f: fn(&Kill) -> f64| of.iter().map(|k| f(k)).collect::<Vec<_>>();
        let (reply, detect, lag) = (
            pick(|k| k.reply_ms),
            pick(|k| k.detect_ms),
            pick(|k| k.lag_ms),
        );
        println!(
            "| {name} | {} | {:.1} / {:.1} | {:.0} | {:.1} / {:.1} |",
            of.len(),
            quantile(&reply, 0.5),
            quantile(&reply, 0.99),
            quantile(&detect, 0.5),
            quantile(&lag, 0.5),
            quantile(&lag, 1.0)
        );
    }
    println!();
    println!(
        "redis-benchmark -h {GUEST_IP} -c 10 -n {} from K:",
        args.requests
    );
    println!();
    println!(
        "| config | SET/s | GET/s | Output Rule delay p50 / p99 ms | log Mbit/s | CPU µs/request A / B |"
    );
    println!("|---|---|---|---|---|---|");
    for t in throughput {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} / {:.2} | {:.2} | {:.0} / {:.0} |",
            t.config,
            t.set,
            t.get,
            t.output_delay_p50_ms,
            t.output_delay_p99_ms,
            t.log_mbit,
            t.cpu_a_us,
            t.cpu_b_us
        );
    }
}
