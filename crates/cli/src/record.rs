//! `ftvm record` and `ftvm replay`.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ftvm_host::{ClockMode, RunEnd, Runner};
use ftvm_log::{LogHeader, Reader, StartState, Writer};
use ftvm_machine::Machine;
use ftvm_replay::{Recorder, ReplayEnd, Replayer};

use crate::guest::{self, GuestArgs};
use crate::terminal;

#[derive(clap::Args)]
pub struct RecordArgs {
    /// The event log to write.
    #[arg(long)]
    log: PathBuf,
    #[command(flatten)]
    guest: GuestArgs,
    /// Start from a snapshot instead of booting.
    #[arg(long, conflicts_with_all = ["kernel", "initrd"])]
    snapshot: Option<PathBuf>,
    /// How guest time follows host time.
    #[arg(long, value_enum, default_value = "realtime")]
    clock: ClockMode,
    /// Stop at exactly this instruction count.
    #[arg(long)]
    until: Option<u64>,
    /// Instructions between state-hash checkpoints in the log (0: none).
    #[arg(long, default_value_t = 100_000_000)]
    checkpoint_interval: u64,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The event log to replay.
    #[arg(long)]
    log: PathBuf,
    /// Stop at exactly this instruction count.
    #[arg(long)]
    until: Option<u64>,
    /// With --until: save a snapshot of the machine there.
    #[arg(long, requires = "until")]
    save_snapshot: Option<PathBuf>,
    /// Print the registers where the replay stops.
    #[arg(long)]
    dump_regs: bool,
    /// Do not echo the guest's console.
    #[arg(long)]
    quiet: bool,
    /// Testing aid: at instruction N flip bit B of the byte at physical address A (`N:A:B`, A in
    /// hex), to check that replay reports the divergence.
    #[arg(long, hide = true)]
    flip_bit: Option<String>,
}

/// The machine a recording starts from (a boot or a snapshot), its log header, and its
/// devices' host backends.
pub(crate) fn prepare(
    guest_args: &GuestArgs,
    snapshot: Option<&std::path::Path>,
) -> Result<(Machine, LogHeader, ftvm_host::IoBackends)> {
    let (mut machine, header, io) = match snapshot {
        Some(path) => {
            let mut m = Machine::load_snapshot(path)
                .with_context(|| format!("cannot restore snapshot {}", path.display()))?;
            let path = std::fs::canonicalize(path)?.display().to_string();
            let header = LogHeader {
                start: StartState::Snapshot { path },
                start_hash: m.state_hash().0,
                paths: vec![],
            };
            (m, header, guest::devices(guest_args)?.1)
        }
        None => {
            let (cfg, paths, io) = guest::resolve(guest_args, "")?;
            let mut m = Machine::new(&cfg)?;
            let header = ftvm_replay::boot_header(&cfg, paths, m.state_hash().0);
            (m, header, io)
        }
    };
    machine.take_effects();
    Ok((machine, header, io))
}

/// Runs `machine` with the console on this terminal, every input and output going to `log`;
/// prints a summary naming `what` and returns the exit status.
pub(crate) fn run_recorded<W: Write>(
    what: &str,
    machine: Machine,
    io: ftvm_host::IoBackends,
    clock: ClockMode,
    until: Option<u64>,
    recorder: Recorder<W>,
) -> Result<i32> {
    let mut recorder = recorder;
    let started = Instant::now();
    let (end, runner) = run_on_terminal(machine, io, clock, until, &mut recorder);
    let secs = started.elapsed().as_secs_f64();
    let (bytes, records) = (recorder.bytes(), recorder.records());
    recorder
        .finish()
        .with_context(|| format!("writing the log ({what})"))?;
    eprintln!(
        "ftvm {what}: {end:?} at instruction {}; {records} records, {bytes} bytes in {secs:.2} s \
         ({:.3} Mbit/s)",
        runner.machine.icount(),
        bytes as f64 * 8.0 / secs / 1e6
    );
    Ok(match end {
        RunEnd::PowerOff(code) => code.min(255) as i32,
        _ => 0,
    })
}

pub fn record(args: RecordArgs) -> Result<i32> {
    let (machine, header, io) = prepare(&args.guest, args.snapshot.as_deref())?;
    let file = std::fs::File::create(&args.log)
        .with_context(|| format!("cannot create log {}", args.log.display()))?;
    let writer = Writer::new(BufWriter::new(file), &header)?;
    let recorder = Recorder::new(writer).with_checkpoint_interval(args.checkpoint_interval);
    run_recorded("record", machine, io, args.clock, args.until, recorder)
}

/// Runs `machine` with its console on this terminal (raw mode while it runs, when stdin is
/// one), `obs` seeing everything, until it ends or reaches `until`.
pub(crate) fn run_on_terminal(
    machine: Machine,
    io: ftvm_host::IoBackends,
    clock: ClockMode,
    until: Option<u64>,
    obs: &mut dyn ftvm_host::Observer,
) -> (RunEnd, Runner) {
    let mut runner = Runner::new(machine, clock);
    runner.io = io;
    runner.stop_at = until;
    let end = {
        let _raw = std::io::stdin()
            .is_terminal()
            .then(terminal::RawMode::enter);
        runner.run_observed(&mut terminal::Terminal::new(), obs)
    };
    (end, runner)
}

/// Shows a replayed guest's console on stdout as it is produced.
pub(crate) fn stdout_sink() -> ftvm_replay::ConsoleSink {
    Box::new(|b| {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(b);
        let _ = out.flush();
    })
}

pub fn replay(args: ReplayArgs) -> Result<i32> {
    let file = std::fs::File::open(&args.log)
        .with_context(|| format!("cannot open log {}", args.log.display()))?;
    let reader =
        Reader::new(file).with_context(|| format!("cannot read log {}", args.log.display()))?;
    let machine = ftvm_replay::start_machine(reader.header())?;
    let mut replayer = Replayer::new(machine, reader);
    if !args.quiet {
        replayer.on_console = Some(stdout_sink());
    }
    if let Some(spec) = &args.flip_bit {
        let parts: Vec<&str> = spec.split(':').collect();
        let [n, a, b] = parts[..] else {
            bail!("--flip-bit takes N:ADDR:BIT")
        };
        let n: u64 = n.parse()?;
        let addr = u64::from_str_radix(a.trim_start_matches("0x"), 16)?;
        let bit: u8 = b.parse()?;
        replayer.at = Some((
            n,
            Box::new(move |m: &mut Machine| m.debug_flip_bit(addr, bit)),
        ));
    }
    let started = Instant::now();
    let result = replayer.run(args.until);
    let secs = started.elapsed().as_secs_f64();
    let icount = replayer.machine.icount();
    if args.dump_regs {
        eprintln!("{}", replayer.machine.describe_registers());
    }
    let end = result?;
    eprintln!(
        "ftvm replay: {end:?}; {icount} instructions in {secs:.2} s ({:.0} MIPS), state hash {}",
        icount as f64 / secs / 1e6,
        replayer.machine.state_hash()
    );
    if let (Some(path), ReplayEnd::Until { .. }) = (&args.save_snapshot, end) {
        replayer.machine.save_snapshot(path)?;
        eprintln!("ftvm replay: snapshot saved to {}", path.display());
    }
    Ok(0)
}
