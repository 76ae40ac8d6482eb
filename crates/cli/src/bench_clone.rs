//! `ftvm bench clone`: restoring redundancy. A running redis guest (with a dataset filling part
//! of its RAM) is cloned into a new backup while a client writes; measured are the time from
//! the request to the new backup being in lockstep, the primary's pause for the last piece, the
//! rounds and bytes sent, and the client's write rate before and during the clone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ftvm_ft::Event;
use serde::Serialize;

use crate::bench::spread;
use crate::ft_load::Writer;
use crate::ft_pair::{Pair, PairSpec};
use crate::resp::{Redis, Reply};

#[derive(Debug, clap::Args)]
pub struct CloneBench {
    /// Guest RAM sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "256M,1G", value_parser = crate::guest::parse_size)]
    memory: Vec<u64>,
    /// Repetitions per size.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Share of RAM the client fills with redis values before the clone, in percent.
    #[arg(long, default_value_t = 25)]
    fill_pct: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize)]
struct Run {
    memory_mib: u64,
    /// From the add-backup request to the new backup in lockstep.
    redundancy_s: f64,
    /// The primary stood still this long for the last pages and its CPU and device state.
    pause_ms: f64,
    rounds: u64,
    sent_mib: f64,
    /// The client's one-at-a-time SETs per second before and during the clone.
    sets_before: f64,
    sets_during: f64,
}

/// Writes `mib` MiB of 64 KiB values, pipelined, with the append-only file off. The values are pseudo-random hex, so the
/// clone's compression cannot make them vanish (hex compresses about 2:1, like real data).
fn fill(port: u16, mib: u64) -> Result<()> {
    let mut r = Redis::connect(port, Duration::from_secs(30))?;
    // The dataset is for RAM: the guest's small root disk could not hold its append-only file.
    let reply = r.command(&["CONFIG", "SET", "appendonly", "no"])?;
    ensure!(reply == Reply::Simple("OK".into()), "CONFIG SET: {reply:?}");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut value = || {
        (0..(64 << 10) / 16)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{x:016x}")
            })
            .collect::<String>()
    };
    let n = mib * 16;
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
        for i in chunk {
            r.send(&["SET", &format!("fill:{i}"), &value()])?;
        }
        for _ in chunk {
            let reply = r.reply()?;
            ensure!(reply == Reply::Simple("OK".into()), "fill: {reply:?}");
        }
    }
    Ok(())
}

/// SETs per second over about `secs` seconds, or until `until` says stop.
fn rate(w: &mut Writer, secs: f64, mut until: impl FnMut() -> Result<bool>) -> Result<f64> {
    let start = Instant::now();
    let before = w.acked();
    while start.elapsed().as_secs_f64() < secs && !until()? {
        w.write(10)?;
    }
    Ok((w.acked() - before) as f64 / start.elapsed().as_secs_f64())
}

fn one(memory: u64, fill_pct: u64) -> Result<Run> {
    let dir = tempfile::Builder::new()
        .prefix("ftvm-bench-clone-")
        .tempdir()?;
    let mut spec = PairSpec::new(
        std::env::current_exe()?,
        crate::image::redis_guest(false)?,
        dir.path().to_path_buf(),
    );
    spec.initial_backup = false;
    spec.primary_args = vec!["--memory".into(), format!("{}M", memory >> 20)];
    let mut pair = Pair::start(&spec)?;
    pair.wait_ready(Duration::from_secs(600), |_, _| {})?;
    fill(pair.forward_port, (memory >> 20) * fill_pct / 100)?;
    let mut w = Writer::connect(&pair)?;
    let sets_before = rate(&mut w, 3.0, || Ok(false))?;
    let (spare, at) = pair.start_spare("spare")?;
    let started = Instant::now();
    let before = pair.ask_clone("add-backup", &at)?;
    let mut done = false;
    let sets_during = rate(&mut w, 600.0, || {
        done = pair.clone_state(before, &at)? == crate::ft_pair::CloneState::Done;
        Ok(done)
    })?;
    let redundancy_s = started.elapsed().as_secs_f64();
    pair.wait_clone(before, &at, Duration::from_secs(600), || Ok(()))?;
    pair.set_backup(spare);
    w.write(100)?;
    w.check()?;
    let summary = pair
        .primary
        .log
        .first(|e| match e {
            Event::BackupInLockstep { summary, .. } => Some(*summary),
            _ => None,
        })
        .context("no clone summary in the primary's events")?;
    Ok(Run {
        memory_mib: memory >> 20,
        redundancy_s,
        pause_ms: summary.paused_ms,
        rounds: summary.rounds,
        sent_mib: summary.sent_mib,
        sets_before,
        sets_during,
    })
}

pub fn run(args: CloneBench) -> Result<()> {
    let mut runs = Vec::new();
    for &memory in &args.memory {
        for rep in 0..args.reps.max(1) {
            let r = one(memory, args.fill_pct)
                .with_context(|| format!("{} MiB, rep {}", memory >> 20, rep + 1))?;
            eprintln!("bench clone: {} MiB rep {}: {r:?}", memory >> 20, rep + 1);
            runs.push(r);
        }
    }
    println!(
        "Live clone of a running redis guest into a new backup (primary, spare and switch as \
         processes on this host, loopback), {}% of RAM filled with redis values, a client \
         writing one key at a time throughout; {} repetitions, median (min..max):",
        args.fill_pct, args.reps
    );
    println!();
    println!(
        "| guest RAM | redundancy restored (s) | primary paused (ms) | rounds | sent (MiB, zstd) \
         | SET/s before | SET/s during |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &memory in &args.memory {
        let of = |f: &dyn Fn(&Run) -> f64| {
            let v: Vec<f64> = runs
                .iter()
                .filter(|r| r.memory_mib == memory >> 20)
                .map(f)
                .collect();
            let (m, lo, hi) = spread(&v);
            (m, lo, hi)
        };
        let show = |(m, lo, hi): (f64, f64, f64), d: usize| format!("{m:.d$} ({lo:.d$}..{hi:.d$})");
        println!(
            "| {} MiB | {} | {} | {} | {} | {} | {} |",
            memory >> 20,
            show(of(&|r| r.redundancy_s), 2),
            show(of(&|r| r.pause_ms), 1),
            show(of(&|r| r.rounds as f64), 0),
            show(of(&|r| r.sent_mib), 0),
            show(of(&|r| r.sets_before), 0),
            show(of(&|r| r.sets_during), 0),
        );
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&runs)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
