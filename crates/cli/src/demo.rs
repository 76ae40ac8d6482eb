//! `ftvm demo`: the README's main job. Fault tolerance, shown end to end on one machine.
//!
//! A switch, a primary and a backup start as separate processes (standing for the network and
//! two hosts) running the redis guest on a shared disk. A client writes keys through the
//! switch's port forward on one TCP connection; the primary is killed with SIGKILL mid-stream;
//! the backup goes live; the client carries on over the same connection and every write that
//! was acknowledged is checked. The timeline at the end says how long the failover took.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::ft_load::{Fail, Load, Progress, failover_watched};
use crate::ft_pair::{Pair, PairSpec};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The machine alone instead: boot the default guest, type commands into its shell, power
    /// off.
    #[arg(long)]
    shell: bool,
    /// Seconds the client writes before the primary is killed.
    #[arg(long, default_value_t = 3.0)]
    kill_after: f64,
    /// Keys written after the failover.
    #[arg(long, default_value_t = 1000)]
    keys_after: u64,
    /// Show the guest's console while it boots.
    #[arg(long)]
    console: bool,
}

pub fn run(args: DemoArgs) -> Result<()> {
    if args.shell {
        return crate::demo_shell::run();
    }
    say("fault tolerance on one machine: a switch, a primary and a backup process");
    let dir = tempfile::Builder::new().prefix("ftvm-demo-").tempdir()?;
    let mut spec = PairSpec::new(
        std::env::current_exe()?,
        crate::image::redis_guest(false)?,
        dir.path().to_path_buf(),
    );
    spec.show_console = args.console;
    let mut pair = Pair::start(&spec)?;
    say(&format!(
        "switch pid {} forwards 127.0.0.1:{} to the guest's redis; primary pid {}, backup pid {}",
        pair.switch.id(),
        pair.forward_port,
        pair.primary.child.id(),
        pair.backup().child.id()
    ));
    say("booting Debian's kernel and the redis disk on the primary; the backup replays it");
    let started = Instant::now();
    pair.wait_ready(Duration::from_secs(600), |p, b| {
        say(&format!(
            "  {:>4.0} s  primary at instruction {:>11}, backup at {:>11} ({:.0} ms behind), log \
             {:.3} Mbit/s",
            started.elapsed().as_secs_f64(),
            p.icount,
            b.icount,
            p.lag_ms,
            p.log_mbit_s
        ))
    })?;
    say(&format!(
        "redis is up after {:.1} s; one client connection writes SET key:i i",
        started.elapsed().as_secs_f64()
    ));
    let mut show = |p: Progress| match p {
        Progress::Failed(n) => say(&format!(
            "killed the primary (SIGKILL) after {n} acknowledged writes"
        )),
        Progress::FirstReply(k) => say(&format!(
            "first reply after the kill: SET key:{k} answered OK on the same connection"
        )),
        Progress::Acked(n) if n.is_multiple_of(500) => say(&format!("  {n} writes acknowledged")),
        Progress::Acked(_) => {}
    };
    let f = failover_watched(
        &mut pair,
        Load::Sets,
        Duration::from_secs_f64(args.kill_after.max(0.0)),
        args.keys_after as usize,
        Fail::Kill,
        &mut show,
    )
    .context("the failover lost the client's writes or its connection")?;
    say(&format!(
        "all {} acknowledged writes are present; same TCP connection, same redis process (run_id \
         {}…), the guest did not reboot",
        f.acked,
        &f.run_id[..8.min(f.run_id.len())]
    ));
    let killed = f.failed_at_ms;
    let log = &pair.backup().log;
    let detected = log.stamp_of("lost the primary");
    let live = log.stamp_of(" live as generation");
    let first = killed + f.first_reply.as_millis();
    let rel = |t: Option<u128>| match t {
        Some(t) => format!("+{:>5} ms", t.saturating_sub(killed)),
        None => "    (not seen)".into(),
    };
    say("timeline");
    say(&format!(
        "  primary killed            {}",
        rel(Some(killed))
    ));
    say(&format!("  failure detected          {}", rel(detected)));
    say(&format!("  backup live               {}", rel(live)));
    say(&format!("  first reply after kill    {}", rel(Some(first))));
    say(&format!(
        "  slowest reply of the run   {:>5} ms",
        f.slowest.as_millis()
    ));
    if let Some(s) = Pair::status(pair.backup()) {
        say(&format!(
            "the backup is now the VM: role {}, generation {}",
            s.role, s.generation
        ));
    }
    // Both stop without another failover.
    let _ = ftvm_ft::control::request(&pair.backup().control, "poweroff");
    let start = Instant::now();
    while pair.backup_mut().child.try_wait()?.is_none() && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    say("done: ftvm ctl poweroff stopped the VM");
    Ok(())
}

fn say(s: &str) {
    println!("ftvm demo: {s}");
}
