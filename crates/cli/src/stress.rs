//! `ftvm stress`: failover after failover at pseudo-random moments and loads, each checked.
//!
//! Each round boots a fresh pair on a copy of the redis disk and kills the primary either
//! during the boot or under one of the client loads of the tests, at a moment drawn from a
//! seeded generator (so a failing round can be run again with the same seed).
//!
//! With `--chain`, one VM lives through every round instead: each round moves its backup or its
//! primary (at random), kills the primary, and clones the survivor into a new spare, while one
//! client connection writes throughout; every acknowledged write is checked at the end.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::ft_load::{LOADS, Writer, failover_during_boot, failover_under_load, kill_primary};
use crate::ft_pair::{Pair, PairSpec};

#[derive(clap::Args)]
pub struct StressArgs {
    /// Failovers to run.
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Seed of the kill moments and loads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One VM through all rounds: failovers with live clones and migrations between them.
    #[arg(long)]
    chain: bool,
}

/// xorshift64*: a few numbers, reproducible from the seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How long a clone may take under the client's writes before the round fails.
const CLONE_PATIENCE: Duration = Duration::from_secs(300);

fn chain(args: &StressArgs, guest: ftvm_image::RedisGuest, rng: &mut Rng) -> Result<i32> {
    let dir = tempfile::Builder::new().prefix("ftvm-stress-").tempdir()?;
    let spec = PairSpec::new(std::env::current_exe()?, guest, dir.path().into());
    let mut pair = Pair::start(&spec)?;
    pair.wait_ready(Duration::from_secs(600), |_, _| {})?;
    let mut w = Writer::connect(&pair)?;
    for round in 1..=args.rounds {
        let step = || format!("round {round} (seed {})", args.seed);
        w.write(50 + rng.below(300) as usize)?;
        let moved = match rng.below(3) {
            0 => {
                pair.clone_into_spare(&format!("b{round}"), "add-backup", CLONE_PATIENCE, || {
                    w.write(10)
                })
                .with_context(step)?;
                "moved the backup, "
            }
            1 => {
                pair.clone_into_spare(&format!("p{round}"), "migrate", CLONE_PATIENCE, || {
                    w.write(10)
                })
                .with_context(step)?;
                "moved the primary, "
            }
            _ => "",
        };
        w.write(rng.below(200) as usize)?;
        kill_primary(&mut pair, &mut w, 100)
            .with_context(|| format!("{}\n{}", step(), pair.all_logs()))?;
        pair.clone_into_spare(&format!("s{round}"), "add-backup", CLONE_PATIENCE, || {
            w.write(10)
        })
        .with_context(|| format!("{}\n{}", step(), pair.all_logs()))?;
        println!(
            "ftvm stress: round {round}/{}: {moved}failed over, cloned a new backup; {} writes \
             acknowledged so far",
            args.rounds,
            w.acked()
        );
    }
    w.check()?;
    println!(
        "ftvm stress: one VM through {} failovers, {} acknowledged writes all present",
        args.rounds,
        w.acked()
    );
    Ok(0)
}

pub fn run(args: StressArgs) -> Result<i32> {
    let guest = crate::image::redis_guest(false)?;
    let mut rng = Rng(args.seed.max(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    if args.chain {
        return chain(&args, guest, &mut rng);
    }
    for round in 1..=args.rounds {
        let dir = tempfile::Builder::new().prefix("ftvm-stress-").tempdir()?;
        let spec = PairSpec::new(std::env::current_exe()?, guest.clone(), dir.path().into());
        let mut pair = Pair::start(&spec)?;
        let what = if rng.below(5) == 0 {
            let after = Duration::from_millis(500 + rng.below(9500));
            failover_during_boot(&mut pair, after)
                .map(|()| format!("during the boot, {:.1} s in", after.as_secs_f64()))
        } else {
            let load = LOADS[rng.below(LOADS.len() as u64) as usize];
            let after = Duration::from_millis(rng.below(4000));
            pair.wait_ready(Duration::from_secs(600), |_, _| {})?;
            failover_under_load(&mut pair, load, after, 200).map(|n| {
                format!(
                    "{load:?} load, {:.1} s in, {n} acknowledged writes all present",
                    after.as_secs_f64()
                )
            })
        }
        .with_context(|| {
            format!(
                "round {round} (seed {}) failed\n{}",
                args.seed,
                pair.all_logs()
            )
        })?;
        println!(
            "ftvm stress: round {round}/{}: failover {what}",
            args.rounds
        );
    }
    println!("ftvm stress: {} failovers, nothing lost", args.rounds);
    Ok(0)
}
