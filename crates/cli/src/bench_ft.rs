//! `ftvm bench ft`: the same redis guest with and without fault tolerance, side by side.
//!
//! Each repetition boots a fresh pair (switch + primary + backup processes, or switch + one VM
//! without FT) on a copy of the redis disk and runs, in order: an idle spell, redis-benchmark
//! through the forwarder, the CPU job of `bench cpu` and a disk job (dd with fsync) on the
//! guest's console, and redis-benchmark again with pipelined requests (the client's and the
//! switch's work per request shrinks, which on a small host leaves the cores to the VMs). FT
//! repetitions end with a failover under a client's writes: the primary is killed (SIGKILL)
//! or frozen (SIGSTOP: a hung host that closes no connection, so only the heartbeat timeout
//! notices), and the time to the client's first reply is measured. Logging bandwidth comes
//! from the primary's own counters over each phase.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::bench::spread;
use crate::bench_guest::{timed, timed_seconds};
use crate::ft_load::{Fail, Load, failover_watched};
use crate::ft_pair::{Pair, PairSpec};

/// The CPU job of `bench cpu`.
const CPU_JOB: &str =
    "seq 1 200000 | gzip -6 | md5sum >/dev/null; seq 100000 -1 1 | sort -n | md5sum >/dev/null";
const DISK_JOB: &str = "dd if=/dev/zero of=/root/ft.bin bs=1M count=32 conv=fsync 2>/dev/null";

#[derive(Debug, clap::Args)]
pub struct FtBench {
    /// Repetitions per configuration (each boots once).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// redis-benchmark requests per test.
    #[arg(long, default_value_t = 5000)]
    requests: u32,
    /// redis-benchmark parallel clients.
    #[arg(long, default_value_t = 10)]
    clients: u32,
    /// Requests in flight per client in the pipelined run (redis-benchmark -P); it makes ten
    /// times the requests.
    #[arg(long, default_value_t = 16)]
    pipeline: u32,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Run the FT channel in the clear (`--insecure`) instead of sealed with Noise: what the
    /// encryption costs.
    #[arg(long)]
    insecure: bool,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Run {
    ft: bool,
    idle_log_mbit: f64,
    set: f64,
    get: f64,
    redis_log_mbit: f64,
    redis_mips: f64,
    set_pipelined: f64,
    get_pipelined: f64,
    pipelined_log_mbit: f64,
    cpu_s: f64,
    cpu_log_mbit: f64,
    dd_mb_s: f64,
    dd_log_mbit: f64,
    output_delay_p50_ms: f64,
    output_delay_p99_ms: f64,
    /// "kill" or "freeze", and ms from it to the first reply.
    failover: Option<(String, f64)>,
    detect_ms: Option<f64>,
}

/// Log bytes, instructions and time at one moment, from the primary's control socket.
struct Mark {
    bytes: u64,
    icount: u64,
    at: Instant,
}

fn mark(pair: &Pair) -> Result<Mark> {
    let s = Pair::status(&pair.primary).context("the VM's control socket does not answer")?;
    Ok(Mark {
        bytes: s.log_bytes,
        icount: s.icount,
        at: Instant::now(),
    })
}

fn mbit(a: &Mark, b: &Mark) -> f64 {
    (b.bytes - a.bytes) as f64 * 8.0 / (b.at - a.at).as_secs_f64() / 1e6
}

fn one(ft: bool, rep: usize, args: &FtBench) -> Result<Run> {
    let dir = tempfile::Builder::new()
        .prefix("ftvm-bench-ft-")
        .tempdir()?;
    let mut spec = PairSpec::new(
        std::env::current_exe()?,
        crate::image::redis_guest(false)?,
        dir.path().to_path_buf(),
    );
    spec.ft = ft;
    spec.console_input = true;
    if args.insecure {
        spec.ft_args.push("--insecure".into());
    }
    let mut pair = Pair::start(&spec)?;
    pair.wait_ready(Duration::from_secs(600), |_, _| {})?;
    let mut run = Run {
        ft,
        ..Run::default()
    };
    let m0 = mark(&pair)?;
    std::thread::sleep(Duration::from_secs(5));
    let m1 = mark(&pair)?;
    run.idle_log_mbit = mbit(&m0, &m1);
    let (set, get) =
        crate::bench_redis::redis_benchmark(pair.forward_port, args.requests, args.clients)?;
    let m2 = mark(&pair)?;
    (run.set, run.get) = (set, get);
    run.redis_log_mbit = mbit(&m1, &m2);
    run.redis_mips = (m2.icount - m1.icount) as f64 / (m2.at - m1.at).as_secs_f64() / 1e6;
    let limit = Duration::from_secs(900);
    settle(&pair);
    let m2 = mark(&pair)?;
    let out = pair.console_command(&timed(CPU_JOB), limit)?;
    let m3 = mark(&pair)?;
    run.cpu_s = timed_seconds(&out).with_context(|| format!("no timing in:\n{out}"))?;
    run.cpu_log_mbit = mbit(&m2, &m3);
    settle(&pair);
    let m3 = mark(&pair)?;
    let out = pair.console_command(&timed(DISK_JOB), limit)?;
    let m4 = mark(&pair)?;
    pair.console_command("rm /root/ft.bin", limit)?;
    let secs = timed_seconds(&out).with_context(|| format!("no timing in:\n{out}"))?;
    run.dd_mb_s = 32.0 * 1024.0 * 1024.0 / secs / 1e6;
    run.dd_log_mbit = mbit(&m3, &m4);
    settle(&pair);
    let m5 = mark(&pair)?;
    (run.set_pipelined, run.get_pipelined) = crate::bench_redis::redis_benchmark_pipelined(
        pair.forward_port,
        args.requests.saturating_mul(10),
        args.clients,
        args.pipeline,
    )?;
    run.pipelined_log_mbit = mbit(&m5, &mark(&pair)?);
    if let Some(s) = Pair::status(&pair.primary) {
        [run.output_delay_p50_ms, run.output_delay_p99_ms] = s.output_delay_ms;
    }
    if ft {
        let freeze = rep % 2 == 1;
        let (ms, detect) = failover(&mut pair, freeze)?;
        run.failover = Some((if freeze { "freeze" } else { "kill" }.into(), ms));
        run.detect_ms = detect;
    }
    Ok(run)
}

/// Lets a backup that fell behind in one workload catch up before the next is measured: the
/// primary slows itself while its backup lags (the paper's feedback loop), and a workload
/// should not pay for the one before it. No-op without FT.
fn settle(pair: &Pair) {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        match Pair::status(&pair.primary) {
            Some(s)
                if s.role == ftvm_ft::Role::Primary
                    && (s.lag_ms > 100.0 || s.throttle_pct > 0.0) =>
            {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => return,
        }
    }
}

/// Writes keys, fails the primary, and returns ms from the failure to the first reply (and to
/// the backup's detection), after checking every acknowledged key.
fn failover(pair: &mut Pair, freeze: bool) -> Result<(f64, Option<f64>)> {
    let how = if freeze { Fail::Freeze } else { Fail::Kill };
    let f = failover_watched(
        pair,
        Load::Sets,
        Duration::from_secs(1),
        100,
        how,
        &mut |_| {},
    )?;
    let detect = pair
        .backup()
        .log
        .primary_lost_at()
        .map(|t| t.saturating_sub(f.failed_at_ms) as f64);
    Ok((f.first_reply.as_secs_f64() * 1e3, detect))
}

/// A table line: name, the figure, its logging bandwidth, whether higher is better.
type Line<'a> = (
    &'a str,
    &'a dyn Fn(&Run) -> f64,
    Option<&'a dyn Fn(&Run) -> f64>,
    bool,
);

pub fn run(args: FtBench) -> Result<()> {
    let mut runs = Vec::new();
    for rep in 0..args.reps.max(1) {
        for ft in [false, true] {
            let r = one(ft, rep, &args)
                .with_context(|| format!("{}, rep {}", if ft { "FT" } else { "no FT" }, rep + 1))?;
            eprintln!(
                "bench ft: rep {} {}: {r:?}",
                rep + 1,
                if ft { "FT" } else { "no FT" }
            );
            runs.push(r);
        }
    }
    let pick = |ft: bool, f: &dyn Fn(&Run) -> f64| -> (f64, f64, f64) {
        spread(
            &runs
                .iter()
                .filter(|r| r.ft == ft)
                .map(f)
                .collect::<Vec<_>>(),
        )
    };
    let show = |(m, lo, hi): (f64, f64, f64), digits: usize| {
        format!("{m:.digits$} ({lo:.digits$}..{hi:.digits$})")
    };
    println!(
        "FT against no FT, redis guest, 256 MiB, primary and backup as processes on this host, \
         channel {}, {} repetitions, median (min..max); redis-benchmark -c {} -n {}, pipelined \
         -P {} -n {}:",
        if args.insecure {
            "in the clear (--insecure)"
        } else {
            "sealed (Noise, pinned keys)"
        },
        args.reps,
        args.clients,
        args.requests,
        args.pipeline,
        args.requests.saturating_mul(10)
    );
    println!();
    println!("| workload | no FT | FT | FT / no FT | FT log Mbit/s |");
    println!("|---|---|---|---|---|");
    let rows: [Line; 6] = [
        (
            "redis-benchmark SET/s",
            &|r| r.set,
            Some(&|r| r.redis_log_mbit),
            true,
        ),
        ("redis-benchmark GET/s", &|r| r.get, None, true),
        (
            "CPU job, s (guest clock)",
            &|r| r.cpu_s,
            Some(&|r| r.cpu_log_mbit),
            false,
        ),
        (
            "dd 32 MiB + fsync, MB/s",
            &|r| r.dd_mb_s,
            Some(&|r| r.dd_log_mbit),
            true,
        ),
        (
            "redis-benchmark pipelined SET/s",
            &|r| r.set_pipelined,
            Some(&|r| r.pipelined_log_mbit),
            true,
        ),
        (
            "redis-benchmark pipelined GET/s",
            &|r| r.get_pipelined,
            None,
            true,
        ),
    ];
    for (name, f, log, higher_better) in rows {
        let (a, b) = (pick(false, f), pick(true, f));
        let ratio = if higher_better { b.0 / a.0 } else { a.0 / b.0 };
        println!(
            "| {name} | {} | {} | {ratio:.3} | {} |",
            show(a, 1),
            show(b, 1),
            log.map(|l| show(pick(true, l), 3)).unwrap_or_default()
        );
    }
    println!(
        "| idle guest | | | | {} |",
        show(pick(true, &|r| r.idle_log_mbit), 4)
    );
    println!();
    println!(
        "Guest MIPS during redis-benchmark: no FT {}, FT {}.",
        show(pick(false, &|r| r.redis_mips), 0),
        show(pick(true, &|r| r.redis_mips), 0)
    );
    println!(
        "Output Rule: outputs held for the backup's ack, p50 {} ms, p99 {} ms (over each FT run).",
        show(pick(true, &|r| r.output_delay_p50_ms), 2),
        show(pick(true, &|r| r.output_delay_p99_ms), 2)
    );
    for kind in ["kill", "freeze"] {
        let times: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.failover.as_ref().filter(|(k, _)| k == kind).map(|f| f.1))
            .collect();
        let detect: Vec<f64> = runs
            .iter()
            .filter(|r| r.failover.as_ref().is_some_and(|(k, _)| k == kind))
            .filter_map(|r| r.detect_ms)
            .collect();
        if !times.is_empty() {
            println!(
                "Failover, primary {}: first client reply {} ms after it; detected after {} ms.",
                if kind == "kill" {
                    "killed (SIGKILL)"
                } else {
                    "frozen (SIGSTOP, no FIN: the heartbeat timeout)"
                },
                show(spread(&times), 0),
                if detect.is_empty() {
                    "?".into()
                } else {
                    show(spread(&detect), 0)
                }
            );
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&runs)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
