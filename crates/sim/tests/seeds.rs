//! The simulator's bounded tier (the long one is `ftvm sim --seeds 100000`): a thousand seeds
//! with every fault kind and every check, each deliberate protocol bug found within a bounded
//! number of seeds, and seeds that replay bit-identically.

use ftvm_sim::{Bugs, FaultKind, Options, first_failure, run_seed, run_seeds};

/// Seeds the test suite runs (`FTVM_SIM_SEEDS` overrides).
fn tier() -> u64 {
    std::env::var("FTVM_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

fn jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn a_thousand_seeds_of_faults_break_no_check() {
    let seeds = tier();
    let t = std::time::Instant::now();
    let (stats, failures) = run_seeds(0, seeds, jobs(), &Options::default());
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{seeds} seeds in {secs:.1} s ({:.0}/s): {stats:?}",
        seeds as f64 / secs
    );
    let report: Vec<String> = failures.iter().map(|f| f.to_string()).collect();
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed:\n{}",
        failures.len(),
        report.join("\n")
    );
    // The run did what it is for: every kind of fault struck, the VM failed over and was
    // cloned back to redundancy, and the clients' answers were checked.
    for (kind, n) in FaultKind::ALL.iter().zip(stats.faults) {
        assert!(
            n > 0 || seeds < 200,
            "no {} fault in {seeds} seeds",
            kind.name()
        );
    }
    assert!(stats.failovers > seeds / 4, "{stats:?}");
    assert!(stats.clones > seeds / 4, "{stats:?}");
    assert!(stats.migrations > 0 || seeds < 200, "{stats:?}");
    assert!(stats.reads_checked > seeds * 100, "{stats:?}");
    // The guest keeps its values on the shared disk, which failed under it at times.
    assert!(stats.disk_writes > seeds * 100, "{stats:?}");
    assert!(stats.disk_errors > 0 || seeds < 200, "{stats:?}");
}

#[test]
fn every_deliberate_protocol_bug_is_found_within_two_hundred_seeds() {
    for name in Bugs::NAMES {
        let opts = Options {
            bugs: Bugs::named(name).expect("a known bug"),
            ..Options::default()
        };
        let found = first_failure(0, 200, &opts);
        let Some(f) = found else {
            panic!("the simulator did not find the bug {name} in 200 seeds");
        };
        eprintln!("{name}: seed {}: {}", f.seed, f.what);
    }
}

#[test]
fn a_seed_is_the_whole_story_and_runs_the_same_every_time() {
    let opts = Options::default();
    let first = run_seed(3, &opts).expect("seed 3 passes");
    assert_eq!(run_seed(3, &opts).expect("seed 3 passes"), first);
    assert!(first.events > 1000);
    // A failing seed fails the same way, at the same moment.
    let buggy = Options {
        bugs: Bugs::named("fenced-releases").expect("a known bug"),
        ..Options::default()
    };
    let f = first_failure(0, 200, &buggy).expect("the bug is found");
    let again = run_seed(f.seed, &buggy).expect_err("fails again");
    assert_eq!((again.at, &again.what), (f.at, &f.what));
}
