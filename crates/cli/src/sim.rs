//! `ftvm sim`: the deterministic FT simulator (crates/sim) from the command line.

use std::time::Instant;

use anyhow::{Result, bail};
use ftvm_sim::{Bugs, FaultKind, Options, run_seed, run_seeds};

#[derive(clap::Args)]
pub struct SimArgs {
    /// How many seeds to run (from --first on).
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Run this one seed (again), with its fault schedule and result.
    #[arg(long, conflicts_with_all = ["seeds", "first"])]
    seed: Option<u64>,
    /// The fault kinds schedules pick from (comma-separated; default: all of them).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Turn on one deliberate protocol bug, to see the simulator find it.
    #[arg(long)]
    bug: Option<String>,
    /// Threads (each runs whole seeds; results do not depend on it).
    #[arg(long)]
    jobs: Option<usize>,
    /// Hosts in the world: a primary, a backup and spares.
    #[arg(long, default_value_t = 4)]
    hosts: usize,
}

pub fn run(args: SimArgs) -> Result<i32> {
    let mut opts = Options {
        hosts: args.hosts,
        ..Options::default()
    };
    if !args.faults.is_empty() {
        opts.faults = args
            .faults
            .iter()
            .map(|n| {
                FaultKind::named(n).ok_or_else(|| {
                    let all: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                    anyhow::anyhow!("no fault kind {n:?}; the kinds are {}", all.join(", "))
                })
            })
            .collect::<Result<_>>()?;
    }
    if let Some(name) = &args.bug {
        let Some(b) = Bugs::named(name) else {
            bail!("no bug {name:?}; the bugs are {}", Bugs::NAMES.join(", "));
        };
        opts.bugs = b;
    }
    if let Some(seed) = args.seed {
        return Ok(match run_seed(seed, &opts) {
            Ok(stats) => {
                println!("seed {seed} passed: {stats:?}");
                0
            }
            Err(f) => {
                println!("{f}");
                1
            }
        });
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let t = Instant::now();
    // In chunks, so a long run shows where it is (results do not depend on the chunking).
    const CHUNK: u64 = 2000;
    let (mut stats, mut failures) = (ftvm_sim::Stats::default(), Vec::new());
    let mut done = 0;
    while done < args.seeds {
        let n = CHUNK.min(args.seeds - done);
        let (s, f) = run_seeds(args.first + done, n, jobs, &opts);
        stats.add(&s);
        // Each failure as soon as its chunk ends: a long run stopped early still shows them.
        for failure in &f {
            println!("{failure}");
        }
        failures.extend(f);
        done += n;
        if args.seeds > CHUNK {
            eprintln!(
                "ftvm sim: {done} of {} seeds, {} failed, {:.1} seeds/s",
                args.seeds,
                failures.len(),
                done as f64 / t.elapsed().as_secs_f64().max(1e-9)
            );
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{} seeds ({}..{}) in {secs:.1} s on {jobs} threads: {:.1} seeds/s",
        args.seeds,
        args.first,
        args.first + args.seeds,
        args.seeds as f64 / secs.max(1e-9)
    );
    println!(
        "  failovers {}, clones {} ({} moving a backup), primaries moved {}, claims {}, backups \
         lost {}, primaries lost {}, power-offs seen {}",
        stats.failovers,
        stats.clones,
        stats.moves,
        stats.migrations,
        stats.claims,
        stats.backups_lost,
        stats.primaries_lost,
        stats.powered_off
    );
    println!(
        "  clients: {} writes acknowledged, {} reads checked, {} retransmissions; {} events",
        stats.writes_acked, stats.reads_checked, stats.retransmits, stats.events
    );
    println!(
        "  shared disk: {} reads, {} writes, {} failed requests (issued again)",
        stats.disk_reads, stats.disk_writes, stats.disk_errors
    );
    let faults: Vec<String> = FaultKind::ALL
        .iter()
        .zip(stats.faults)
        .map(|(k, n)| format!("{} {n}", k.name()))
        .collect();
    println!("  faults injected: {}", faults.join(", "));
    println!(
        "  crashes not made (they would have destroyed the VM's last copy): {}",
        stats.skipped
    );
    println!("{} of {} seeds failed", failures.len(), args.seeds);
    Ok(if failures.is_empty() { 0 } else { 1 })
}
