//! `ftvm log-stats`: what an event log is made of, by record kind (what takes the bandwidth).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ftvm_log::{Reader, Record};
use ftvm_machine::{EffectKind, InputEvent};

#[derive(clap::Args)]
pub struct LogStatsArgs {
    /// The event log.
    #[arg(long)]
    log: PathBuf,
}

fn kind(r: &Record) -> &'static str {
    match r {
        Record::Input { event, .. } => match event {
            InputEvent::ClockAnchor { .. } => "input: clock anchor",
            InputEvent::ConsoleInput(_) => "input: console",
            InputEvent::BlockDone { .. } => "input: disk completion",
            InputEvent::NetRx { .. } => "input: frame received",
            InputEvent::Entropy { .. } => "input: entropy",
        },
        Record::Output { effect, .. } => match effect {
            EffectKind::Console(_) => "output: console",
            _ => "output: power",
        },
        Record::IoOutput { .. } => "output: device request",
        Record::Checkpoint { .. } => "checkpoint",
        Record::End { .. } => "end",
    }
}

pub fn run(args: LogStatsArgs) -> Result<i32> {
    let file = std::fs::File::open(&args.log)
        .with_context(|| format!("cannot open log {}", args.log.display()))?;
    let mut reader = Reader::new(std::io::BufReader::new(file))?;
    let mut stats: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut last = reader.offset();
    let mut icount = 0;
    let mut problem = None;
    while let Some(r) = reader.next() {
        match r {
            Ok(r) => {
                icount = r.icount();
                let e = stats.entry(kind(&r)).or_default();
                e.0 += 1;
                e.1 += reader.offset() - last;
                last = reader.offset();
            }
            Err(e) => {
                problem = Some(e);
                break;
            }
        }
    }
    println!("{:<26} {:>10} {:>12}", "record kind", "records", "bytes");
    for (k, (n, b)) in &stats {
        println!("{k:<26} {n:>10} {b:>12}");
    }
    println!("last instruction {icount}");
    if let Some(e) = problem {
        println!("the log ends with an error: {e}");
    }
    Ok(0)
}
