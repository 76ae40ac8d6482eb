//! `ftvm bench cpu`: a CPU-bound guest job on ftvm and on QEMU, same kernel, initramfs,
//! firmware and memory, timed by the guest's own clock.
//!
//! The job is busybox on generated data: `seq` writes 4 MB of text, `gzip -6` compresses it,
//! `md5sum` hashes the result, and `sort` orders 200,000 lines: integer, branchy, memory-bound
//! user code, plus the kernel's pipe and scheduler paths.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::bench::{median, spread};
use crate::bench_guest::{Guest, timed, timed_seconds};

/// The job, run in the guest's shell.
const JOB: &str =
    "seq 1 500000 | gzip -6 | md5sum >/dev/null; seq 200000 -1 1 | sort -n | md5sum >/dev/null";

#[derive(Debug, clap::Args)]
pub struct CpuBench {
    /// Repetitions per system (each boots once and runs the job once).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Skip QEMU.
    #[arg(long)]
    no_qemu: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    system: String,
    seconds: Vec<f64>,
}

fn job_seconds(cmd: std::process::Command) -> Result<f64> {
    let mut guest = Guest::start(cmd)?;
    guest.wait_for(0, ftvm_image::BOOT_MARKER, Duration::from_secs(600))?;
    guest.wait_for(0, "# ", Duration::from_secs(60))?;
    let out = guest.command(&timed(JOB), Duration::from_secs(1200))?;
    guest.poweroff("poweroff -f");
    timed_seconds(&out).with_context(|| format!("no timing in the guest's output:\n{out}"))
}

pub fn run(args: CpuBench) -> Result<()> {
    let files = crate::image::default_guest(false)?;
    let mut rows = vec![Row {
        system: "ftvm, OpenSBI".into(),
        seconds: vec![],
    }];
    if !args.no_qemu {
        rows.push(Row {
            system: "QEMU TCG, OpenSBI".into(),
            seconds: vec![],
        });
    }
    for row in &mut rows {
        for rep in 0..args.reps.max(1) {
            let cmd = if row.system.starts_with("ftvm") {
                let mut c = std::process::Command::new(
                    std::env::current_exe().context("cannot find the ftvm binary")?,
                );
                c.arg("run");
                c
            } else {
                let mut c = crate::bench::qemu_command(&files);
                c.args(["-append", crate::guest::DEFAULT_APPEND]);
                c
            };
            let secs =
                job_seconds(cmd).with_context(|| format!("{}, rep {}", row.system, rep + 1))?;
            eprintln!("bench cpu: {}: rep {}: {secs:.2} s", row.system, rep + 1);
            row.seconds.push(secs);
        }
    }
    println!(
        "CPU-bound guest job (`{JOB}`), guest-clock seconds, {} repetitions:",
        args.reps
    );
    println!();
    println!("| system | median s | min..max s |");
    println!("|---|---|---|");
    for r in &rows {
        let (med, min, max) = spread(&r.seconds);
        println!("| {} | {med:.2} | {min:.2}..{max:.2} |", r.system);
    }
    if rows.len() == 2 {
        println!();
        println!(
            "ftvm / QEMU: {:.2}x the time",
            median(&rows[0].seconds) / median(&rows[1].seconds)
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
