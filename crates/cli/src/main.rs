//! `ftvm`: fault-tolerant virtual machines by deterministic replay.
//!
//! The command-line front end: it resolves guests, drives machines through the runner, and reports.
//! Errors are `anyhow` here and `thiserror` in the libraries below.

mod bench;
mod bench_clone;
mod bench_cpu;
mod bench_ft;
mod bench_guest;
mod bench_lab;
mod bench_metrics;
mod bench_redis;
mod bench_replay;
mod demo;
mod demo_shell;
mod events;
mod ft;
mod ft_load;
mod ft_pair;
mod guest;
mod image;
mod lab;
mod log_stats;
mod record;
mod resp;
mod sim;
mod stress;
mod switch;
mod terminal;
mod watch;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ftvm_machine::Machine;

use crate::guest::GuestArgs;
use ftvm_host::{ClockMode, RunEnd, Runner};

#[derive(Parser)]
#[command(
    name = "ftvm",
    version,
    about = "Fault-tolerant virtual machines by deterministic replay"
)]
struct Cli {
    /// How FT roles print their events: human lines, or one JSON object per line (also
    /// `FTVM_EVENTS=json`).
    #[arg(long, global = true, value_enum)]
    events: Option<events::Format>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a guest with its console on this terminal (Ctrl-A x quits).
    Run(RunArgs),
    /// The main demonstration: a primary and a backup running redis, the primary killed
    /// mid-stream, the backup going live with every acknowledged write.
    Demo(demo::DemoArgs),
    /// Run a guest like `run`, writing every non-deterministic input to an event log.
    Record(record::RecordArgs),
    /// Re-execute an event log with no host input, checking every output and checkpoint.
    Replay(record::ReplayArgs),
    /// What an event log is made of: records and bytes by kind.
    LogStats(log_stats::LogStatsArgs),
    /// Manage the cached guest image.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Run a guest as an FT primary: its event log streams to a backup over TCP (or it runs
    /// alone until a backup is added by a live clone).
    Primary(ft::PrimaryArgs),
    /// Run an FT backup: replay the primary's log in lockstep as it arrives, checking every
    /// output and checkpoint (or, with --listen, wait as a spare for a live clone).
    Backup(ft::BackupArgs),
    /// Talk to a running primary or backup: `status`, `poweroff` (both sides stop, no
    /// failover), `add-backup` (a live clone into a spare) or `migrate` (move the primary).
    Ctl(ft::CtlArgs),
    /// Make this host's key for the FT channel (`--key`), and its public half for the other
    /// hosts (`--peer-key`).
    Keygen(ft::KeygenArgs),
    /// Failover after failover of the redis guest at seeded random moments and loads, every
    /// acknowledged write checked each time.
    Stress(stress::StressArgs),
    /// The virtual network: a learning switch VMs join, with a gateway forwarding host ports.
    Switch(switch::SwitchArgs),
    /// The deterministic FT simulator: seeds of faults against the real protocol rules and
    /// real machines, every step checked (`--seed S` runs one again).
    Sim(sim::SimArgs),
    /// Measure ftvm against QEMU on the same guest.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    guest: GuestArgs,
    /// How guest time follows host time.
    #[arg(long, value_enum, default_value = "realtime")]
    clock: ClockMode,
    /// Resume from a snapshot file instead of booting.
    #[arg(long, conflicts_with_all = ["kernel", "initrd"])]
    snapshot: Option<PathBuf>,
    /// Stop at exactly this instruction count.
    #[arg(long)]
    until: Option<u64>,
    /// Stop once the guest's console has printed this text (e.g. a service's ready line).
    #[arg(long)]
    until_console: Option<String>,
    /// With --until or --until-console: save a snapshot where the run stopped.
    #[arg(long)]
    save_snapshot: Option<PathBuf>,
    /// A Unix socket answering `ftvm ctl status` and `ftvm ctl poweroff`.
    #[arg(long)]
    control: Option<PathBuf>,
    /// Serve Prometheus metrics and a status page for this VM at `HOST:PORT`.
    #[arg(long)]
    metrics: Option<String>,
    /// Print the state hash and instruction count when the run ends.
    #[arg(long)]
    print_hash: bool,
}

fn main() {
    let cli = Cli::parse();
    let format = events::Format::chosen(cli.events);
    match &cli.command {
        Command::Primary(_) => events::install("primary", format),
        Command::Backup(_) => events::install("backup", format),
        _ => {}
    }
    let code = match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ftvm: error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn dispatch(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Run(args) => run(args),
        Command::Demo(args) => demo::run(args).map(|()| 0),
        Command::Record(args) => record::record(args),
        Command::Replay(args) => record::replay(args),
        Command::LogStats(args) => log_stats::run(args),
        Command::Image(cmd) => image::command(cmd).map(|()| 0),
        Command::Bench(cmd) => bench::command(cmd).map(|()| 0),
        Command::Switch(args) => switch::run(args).map(|()| 0),
        Command::Primary(args) => ft::primary(args),
        Command::Backup(args) => ft::backup(args),
        Command::Ctl(args) => ft::ctl(args),
        Command::Keygen(args) => ft::keygen(args),
        Command::Stress(args) => stress::run(args),
        Command::Sim(args) => sim::run(args),
    }
}

fn run(args: RunArgs) -> Result<i32> {
    if args.save_snapshot.is_some() && args.until.is_none() && args.until_console.is_none() {
        anyhow::bail!("--save-snapshot needs --until or --until-console to say where");
    }
    let (machine, io) = match &args.snapshot {
        // The snapshot holds the devices; the disks named again on the command line serve them.
        Some(path) => (
            Machine::load_snapshot(path)
                .with_context(|| format!("cannot restore snapshot {}", path.display()))?,
            guest::devices(&args.guest)?.1,
        ),
        None => {
            let (cfg, _, io) = guest::resolve(&args.guest, "")?;
            (Machine::new(&cfg)?, io)
        }
    };
    let mut runner = Runner::new(machine, args.clock);
    runner.io = io;
    runner.stop_at = args.until;
    let control = ftvm_ft::Control::new(ftvm_ft::Role::Solo, 0);
    let _socket = ft::serve_control(args.control.as_deref(), &control)?;
    let _metrics = ft::serve_metrics(
        args.metrics.as_deref(),
        "run",
        ftvm_metrics::Source::Vm(control.clone()),
    )?;
    let interactive = std::io::stdin().is_terminal();
    let mut host =
        terminal::UntilConsole::new(terminal::Terminal::new(), args.until_console.clone());
    let end = {
        let _raw = interactive.then(terminal::RawMode::enter);
        runner.run_observed(&mut host, &mut ftvm_ft::Alone::new(control))
    };
    let stopped_at_text = host.seen();
    #[cfg(feature = "cpu-stats")]
    eprintln!("{}", runner.machine.cpu_stats());
    if args.print_hash {
        let hash = runner.machine.state_hash();
        eprintln!("icount {} state-hash {hash}", runner.machine.icount());
    }
    match end {
        RunEnd::Stopped if stopped_at_text => save_snapshot(&mut runner, &args),
        RunEnd::PowerOff(0) | RunEnd::Stopped | RunEnd::Fenced => Ok(0),
        RunEnd::PowerOff(code) => {
            eprintln!("ftvm: guest powered off with failure code {code}");
            Ok(code.clamp(1, 255) as i32)
        }
        RunEnd::Reset => {
            eprintln!("ftvm: guest asked for a reset; ftvm does not reboot guests yet");
            Ok(0)
        }
        RunEnd::ReachedLimit => save_snapshot(&mut runner, &args),
    }
}

fn save_snapshot(runner: &mut Runner, args: &RunArgs) -> Result<i32> {
    if let Some(path) = &args.save_snapshot {
        runner
            .machine
            .save_snapshot(path)
            .with_context(|| format!("cannot write snapshot {}", path.display()))?;
        eprintln!(
            "ftvm: snapshot at instruction {} saved to {}",
            runner.machine.icount(),
            path.display()
        );
    }
    Ok(0)
}
