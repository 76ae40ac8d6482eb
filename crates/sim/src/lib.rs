//! ftvm's deterministic FT simulator.
//!
//! Job: run the FT protocol thousands of ways on one thread, each way reproducible from a
//! seed. A seed builds a world: a primary and a backup (each a real [`ftvm_machine::Machine`]
//! running a small key-value guest of ours, `guest/kv.S`), spares, clients that write and read
//! back, a tie-breaker and the network between them all; then a schedule of faults (crashes,
//! freezes, cuts, slow links, an unreachable or lossy tie-breaker, a power-off) strikes and
//! heals while the clients work. The primary records with the real `Recorder`, the backup
//! replays with the real `Replayer`, and every protocol decision (what the Output Rule lets go,
//! when a peer counts as lost, the claim, the backup's phases, a clone's generation) is made by
//! `ftvm-ft`'s own rules: the simulator supplies only time, transport and faults.
//!
//! Checked after every event: the Output Rule (no output before the backup holds its log,
//! unless its host won its claim); at most one host alone per generation; the Output
//! Requirement (every answer a client got agrees with the writes it saw acknowledged); the
//! backup's replay never diverges (outputs and state hashes at checkpoints); no go-live after a
//! power-off. At the end: liveness (every client answered, redundancy back once a spare is
//! there).
//!
//! Invariant: a run is a pure function of its seed and options: one thread, simulated time,
//! ordered maps, our own PRNG.

mod chaos;
mod clients;
mod disk;
pub mod faults;
mod guest;
mod hosts;
mod net;
mod rng;
mod roles;
mod world;

use std::time::Duration;

pub use faults::{Fault, FaultKind};
pub use ftvm_ft::Bugs;
pub use guest::KV_ELF;

use crate::rng::Rng;
use crate::world::World;

/// What a run is made of.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts: a primary, a backup and spares.
    pub hosts: usize,
    pub clients: u8,
    /// The faults a schedule may pick from.
    pub faults: Vec<FaultKind>,
    /// Deliberate protocol bugs (none, except to show the simulator finds them).
    pub bugs: Bugs,
    /// Faults strike before this; then clients read everything back.
    pub load: Duration,
    /// Everything must be answered and redundant again by this.
    pub deadline: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hosts: 4,
            clients: 3,
            faults: FaultKind::ALL.to_vec(),
            bugs: Bugs::default(),
            load: Duration::from_millis(2000),
            deadline: Duration::from_millis(6000),
        }
    }
}

/// What a seed's run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub outputs: u64,
    pub failovers: u64,
    pub clones: u64,
    /// Backups moved to a spare by the operator.
    pub moves: u64,
    /// Primaries moved to a spare by the operator, the backup following.
    pub migrations: u64,
    pub claims: u64,
    pub backups_lost: u64,
    pub primaries_lost: u64,
    pub writes_acked: u64,
    pub reads_checked: u64,
    pub retransmits: u64,
    /// The shared disk's work: reads, writes, and requests that failed (the guest retries).
    pub disk_reads: u64,
    pub disk_writes: u64,
    pub disk_errors: u64,
    /// Faults injected, by [`FaultKind`] (its index in [`FaultKind::ALL`]).
    pub faults: [u64; FaultKind::ALL.len()],
    /// Crashes not made because they would have destroyed the VM's last copy.
    pub skipped: u64,
    pub powered_off: bool,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.events += o.events;
        self.outputs += o.outputs;
        self.failovers += o.failovers;
        self.clones += o.clones;
        self.moves += o.moves;
        self.migrations += o.migrations;
        self.claims += o.claims;
        self.backups_lost += o.backups_lost;
        self.primaries_lost += o.primaries_lost;
        self.writes_acked += o.writes_acked;
        self.reads_checked += o.reads_checked;
        self.retransmits += o.retransmits;
        self.disk_reads += o.disk_reads;
        self.disk_writes += o.disk_writes;
        self.disk_errors += o.disk_errors;
        for (a, b) in self.faults.iter_mut().zip(o.faults) {
            *a += b;
        }
        self.powered_off |= o.powered_off;
        self.skipped += o.skipped;
    }
}

/// A seed that broke a check: everything needed to see why and to run it again.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub at: Duration,
    pub what: String,
    pub schedule: Vec<Fault>,
    pub hosts: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} failed at {} ms: {}",
            self.seed,
            self.at.as_millis(),
            self.what
        )?;
        writeln!(f, "  faults:")?;
        for fault in &self.schedule {
            writeln!(f, "    {fault}")?;
        }
        writeln!(f, "  hosts then:")?;
        for h in &self.hosts {
            writeln!(f, "    {h}")?;
        }
        write!(f, "  again: ftvm sim --seed {}", self.seed)
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64, opts: &Options) -> Result<Stats, Box<Failure>> {
    let mut rng = Rng::new(seed);
    let schedule = faults::schedule(
        &mut rng,
        &opts.faults,
        opts.load - Duration::from_millis(300),
    );
    let mut world = World::new(opts, schedule.clone(), rng);
    world.run_until(opts.load);
    world.clients.stop();
    let mut t = opts.load;
    while world.broken.is_none() && t < opts.deadline {
        t += Duration::from_millis(10);
        world.run_until(t);
        if world.powered_off || (world.clients.all_done() && world.redundant()) {
            break;
        }
    }
    if world.broken.is_none() && !world.powered_off {
        liveness(&mut world);
    }
    let mut stats = world.stats.clone();
    let seen = &world.clients.seen;
    stats.writes_acked = seen.writes_acked;
    stats.reads_checked = seen.reads_checked;
    stats.retransmits = seen.retransmits;
    let disk = world.disk.stats();
    (stats.disk_reads, stats.disk_writes, stats.disk_errors) =
        (disk.disk_reads, disk.disk_writes, disk.disk_errors);
    stats.powered_off = world.powered_off;
    match world.broken.take() {
        None => Ok(stats),
        Some(b) => Err(Box::new(Failure {
            seed,
            at: b.at,
            what: b.what,
            schedule,
            hosts: world.describe_hosts(),
        })),
    }
}

/// Once every fault healed: the clients all got their answers, and a backup is back.
fn liveness(world: &mut World) {
    if !world.running() {
        world.fail_now("liveness: no host runs the VM".into());
    } else if let Some((client, since)) = world.clients.oldest_pending() {
        world.fail_now(format!(
            "liveness: client {client}'s request of {} ms is still unanswered",
            since.as_millis()
        ));
    } else if !world.clients.all_done() {
        world.fail_now("liveness: the clients did not finish reading back".into());
    } else if !world.redundant() && world.has_spare() {
        world.fail_now("liveness: no backup protects the VM although a spare is there".into());
    }
}

/// Runs seeds `first..first + count` on `jobs` threads (each seed alone on one: a run never
/// depends on another); the totals and every failure, in seed order.
pub fn run_seeds(first: u64, count: u64, jobs: usize, opts: &Options) -> (Stats, Vec<Failure>) {
    let next = std::sync::atomic::AtomicU64::new(first);
    let end = first + count;
    let results = std::sync::Mutex::new((Stats::default(), Vec::new()));
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let r = run_seed(seed, opts);
                    let mut g = results.lock().unwrap_or_else(|e| e.into_inner());
                    match r {
                        Ok(stats) => g.0.add(&stats),
                        Err(f) => g.1.push(*f),
                    }
                }
            });
        }
    });
    let (stats, mut failures) = results.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort_by_key(|f: &Failure| f.seed);
    (stats, failures)
}

/// The first of seeds `first..first + count` that fails (the search for a deliberate bug).
pub fn first_failure(first: u64, count: u64, opts: &Options) -> Option<Failure> {
    (first..first + count).find_map(|seed| run_seed(seed, opts).err().map(|f| *f))
}
