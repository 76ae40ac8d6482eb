//! `ftvm primary` and `ftvm backup`: a VM and its backup in lockstep over the logging channel.
//!
//! First slice of the FT protocol (docs/ft-design.md): the primary records to the channel as it
//! runs; the backup replays every record as it arrives, checking each output and checkpoint.
//! Acks, the Output Rule, failure detection and go-live come next.

use std::io::BufReader;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ftvm_host::ClockMode;
use ftvm_log::{Reader, Writer};
use ftvm_replay::{Recorder, ReplayEnd, Replayer};

use crate::guest::GuestArgs;

#[derive(clap::Args)]
pub struct PrimaryArgs {
    /// Where the backup connects (`HOST:PORT`; port 0 picks one and prints it).
    #[arg(long)]
    listen: String,
    #[command(flatten)]
    guest: GuestArgs,
    /// How guest time follows host time.
    #[arg(long, value_enum, default_value = "realtime")]
    clock: ClockMode,
    /// Instructions between state-hash checkpoints in the log (0: none).
    #[arg(long, default_value_t = 100_000_000)]
    checkpoint_interval: u64,
}

#[derive(clap::Args)]
pub struct BackupArgs {
    /// The primary's logging-channel address.
    #[arg(long)]
    connect: String,
    /// Seconds to keep trying to reach the primary.
    #[arg(long, default_value_t = 30)]
    patience: u64,
    /// Show the guest's console as the backup replays it.
    #[arg(long)]
    show_console: bool,
}

/// Exit status of a backup that lost its primary (it does not go live yet).
pub const LOST_PRIMARY: i32 = 3;

pub fn primary(args: PrimaryArgs) -> Result<i32> {
    let (machine, header, io) = crate::record::prepare(&args.guest, None)?;
    let (listener, at) = ftvm_ft::bind_primary(&args.listen)?;
    eprintln!("ftvm primary: waiting for a backup on {at}");
    let channel = ftvm_ft::accept_backup(&listener)?;
    eprintln!("ftvm primary: backup connected; running");
    let writer = Writer::new(channel, &header).context("cannot start the log on the channel")?;
    let recorder = Recorder::new(writer).with_checkpoint_interval(args.checkpoint_interval);
    crate::record::run_recorded("primary", machine, io, args.clock, None, recorder)
}

pub fn backup(args: BackupArgs) -> Result<i32> {
    let channel = ftvm_ft::connect_to_primary(&args.connect, Duration::from_secs(args.patience))?;
    let reader = Reader::new(BufReader::with_capacity(1 << 20, channel))
        .context("cannot read the log header from the primary")?;
    let machine = ftvm_replay::start_machine(reader.header())?;
    eprintln!(
        "ftvm backup: connected to {}; replaying in lockstep",
        args.connect
    );
    let mut replayer = Replayer::new(machine, reader);
    if args.show_console {
        replayer.on_console = Some(crate::record::stdout_sink());
    }
    let started = Instant::now();
    let end = replayer.run(None)?;
    let secs = started.elapsed().as_secs_f64();
    match end {
        ReplayEnd::Complete {
            icount,
            checkpoints,
        } => {
            eprintln!(
                "ftvm backup: the primary finished at instruction {icount}; every output and \
                 {checkpoints} checkpoints matched ({secs:.1} s); the backup stops with it"
            );
            Ok(0)
        }
        ReplayEnd::LogEndsEarly {
            icount,
            checkpoints,
        } => {
            eprintln!(
                "ftvm backup: lost the primary at instruction {icount} after {checkpoints} \
                 matched checkpoints ({secs:.1} s); going live is not implemented yet, the \
                 backup halts"
            );
            Ok(LOST_PRIMARY)
        }
        ReplayEnd::Until { icount } => {
            eprintln!("ftvm backup: stopped at instruction {icount}");
            Ok(0)
        }
    }
}
