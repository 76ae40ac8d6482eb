//! `ftvm demo`: the README's main job. Fault tolerance, shown end to end on one machine.
//!
//! A switch, a primary and a backup start as separate processes (standing for the network and
//! two hosts) running the redis guest on a shared disk. A client writes keys through the
//! switch's port forward on one TCP connection; the primary is killed with SIGKILL mid-stream;
//! the backup goes live; the client carries on over the same connection and every write that
//! was acknowledged is checked. Then redundancy comes back: the new primary clones itself into a
//! spare host (a live clone while it serves), and a second kill fails over again with nothing
//! lost. The timelines say how long each step took.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ftvm_ft::Event;

use crate::ft_load::{Fail, Load, Progress, failover_watched};
use crate::ft_pair::{Pair, PairSpec};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The machine alone instead: boot the default guest, type commands into its shell, power
    /// off.
    #[arg(long)]
    shell: bool,
    /// On a lab of hosts instead (root): network namespaces A (primary), B (backup), S (NBD
    /// disk and etcd) and K (the client) on a Linux bridge, each VM's NIC a TAP device.
    #[arg(long, conflicts_with = "shell")]
    lab: bool,
    /// Seconds the client writes before the primary is killed.
    #[arg(long, default_value_t = 3.0)]
    kill_after: f64,
    /// Keys written after the failover.
    #[arg(long, default_value_t = 1000)]
    keys_after: u64,
    /// Show the guest's console while it boots.
    #[arg(long)]
    console: bool,
    /// Keep the VM and its backup running after the demo (the status page stays served)
    /// until interrupted.
    #[arg(long)]
    hold: bool,
}

pub fn run(args: DemoArgs) -> Result<()> {
    if args.shell {
        return crate::demo_shell::run();
    }
    if args.lab {
        return run_lab(args.keys_after);
    }
    say("fault tolerance on one machine: a switch, a primary and a backup process");
    let dir = tempfile::Builder::new().prefix("ftvm-demo-").tempdir()?;
    let mut spec = PairSpec::new(
        std::env::current_exe()?,
        crate::image::redis_guest(false)?,
        dir.path().to_path_buf(),
    );
    spec.show_console = args.console;
    // The backup is told of a spare host: after a failover it clones itself there.
    let spare_at = format!("127.0.0.1:{}", crate::ft_pair::free_port()?);
    spec.backup_args = vec!["--spare".into(), spare_at.clone()];
    // Each side serves its metrics and the status page; the page shows all three.
    let metrics: Vec<String> = (0..3)
        .map(|_| crate::ft_pair::free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<_>>()?;
    spec.primary_args = vec!["--metrics".into(), metrics[0].clone()];
    spec.backup_args
        .extend(["--metrics".to_string(), metrics[1].clone()]);
    let mut pair = Pair::start(&spec)?;
    let (spare, _) = pair.start_spare_with(
        "spare",
        &spare_at,
        &["--metrics".into(), metrics[2].clone()],
    )?;
    say(&format!(
        "switch pid {} forwards 127.0.0.1:{} to the guest's redis; primary pid {}, backup pid {}, \
         spare pid {} waiting at {spare_at}",
        pair.switch.id(),
        pair.forward_port,
        pair.primary.child.id(),
        pair.backup().child.id(),
        spare.child.id()
    ));
    say(&format!(
        "the logging channel is sealed (Noise, keys pinned): every host holds {}, made by \
         `ftvm keygen`; a host without it is refused",
        dir.path().join("hosts.key").display()
    ));
    let sides: Vec<String> = metrics.iter().map(|m| format!("side={m}")).collect();
    say(&format!(
        "status page: http://{}/?{} (Prometheus metrics at /metrics on each side)",
        metrics[0],
        sides.join("&")
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
        "redis is up after {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let f = failover(&mut pair, args.kill_after, args.keys_after, "the backup")?;
    pair.promote_backup();
    if let Some(s) = Pair::status(&pair.primary) {
        say(&format!(
            "the backup is now the VM: role {}, generation {}",
            s.role, s.generation
        ));
    }
    say("restoring redundancy: the new primary clones itself into the spare while it serves");
    let live_at = pair
        .primary
        .log
        .time_of(|e| matches!(e, Event::Live { .. }));
    let started = Instant::now();
    let mut last = ftvm_ft::CloneStatus::None;
    loop {
        let s = Pair::status(&pair.primary).context("the new primary's status")?;
        if s.clone != last && s.clone != ftvm_ft::CloneStatus::None {
            say(&format!("  clone {}", s.clone));
            last = s.clone.clone();
        }
        if s.clones_done > 0 {
            break;
        }
        anyhow::ensure!(
            !s.clone.failed() && started.elapsed() < Duration::from_secs(120),
            "the clone into the spare did not complete: {}",
            s.clone
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pair.set_backup(spare);
    let in_sync = pair
        .primary
        .log
        .time_of(|e| matches!(e, Event::BackupInLockstep { .. }));
    if let (Some(live), Some(sync)) = (live_at, in_sync) {
        let paused = match &last {
            ftvm_ft::CloneStatus::To {
                state: ftvm_ft::CloneState::Done { paused_ms, .. },
                ..
            } => format!(" (paused {paused_ms:.1} ms)"),
            _ => String::new(),
        };
        say(&format!(
            "redundancy restored {} ms after the backup went live{paused}",
            sync.saturating_sub(live),
        ));
    }
    let g = failover(&mut pair, 2.0, args.keys_after, "the spare")?;
    let keys = f.acked.max(g.acked);
    let mut redis = crate::resp::Redis::connect(pair.forward_port, Duration::from_secs(30))?;
    let missing = crate::resp::check_keys(&mut redis, &(0..keys as u64).collect::<Vec<_>>())?;
    anyhow::ensure!(missing.is_empty(), "lost keys {missing:?}");
    say(&format!(
        "after two failovers all {keys} keys of both runs are present, redis run_id {}… throughout",
        &g.run_id[..8.min(g.run_id.len())]
    ));
    anyhow::ensure!(
        f.run_id == g.run_id,
        "redis restarted between the failovers"
    );
    pair.promote_backup();
    if args.hold {
        say(&format!(
            "--hold: the VM keeps running (redis at 127.0.0.1:{}), the status page stays at \
             http://{}/?{}; Ctrl-C ends it",
            pair.forward_port,
            metrics[2],
            sides.join("&")
        ));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    // Both stop without another failover.
    let _ = ftvm_ft::control::request(&pair.primary.control, "poweroff");
    let start = Instant::now();
    while pair.primary.child.try_wait()?.is_none() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    say("done: ftvm ctl poweroff stopped the VM");
    Ok(())
}

/// One client run with a kill of the primary after `kill_after` s; the timeline as the
/// backup (`who`) saw it.
fn failover(
    pair: &mut Pair,
    kill_after: f64,
    keys_after: u64,
    who: &str,
) -> Result<crate::ft_load::Failover> {
    say("one client connection writes SET key:i i");
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
        pair,
        Load::Sets,
        Duration::from_secs_f64(kill_after.max(0.0)),
        keys_after as usize,
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
    let detected = log.primary_lost_at();
    let live = log.time_of(|e| matches!(e, Event::Live { .. }));
    let first = killed + f.first_reply.as_millis();
    let rel = |t: Option<u128>| match t {
        Some(t) => format!("+{:>5} ms", t.saturating_sub(killed)),
        None => "    (not seen)".into(),
    };
    say(&format!("timeline ({who} takes over)"));
    say(&format!(
        "  primary killed            {}",
        rel(Some(killed))
    ));
    say(&format!("  failure detected          {}", rel(detected)));
    say(&format!("  {who:<10} live           {}", rel(live)));
    say(&format!("  first reply after kill    {}", rel(Some(first))));
    say(&format!(
        "  slowest reply of the run   {:>5} ms",
        f.slowest.as_millis()
    ));
    Ok(f)
}

/// `ftvm demo --lab`: the demo's failover on the lab, saying where each piece runs.
fn run_lab(keys_after: u64) -> Result<()> {
    use crate::lab::{CHANNEL_PORT, GUEST_IP, Lab, LabPair, addr, guest_redis, lab_snapshot};
    let exe = std::env::current_exe()?;
    let guest = crate::image::redis_guest(false)?;
    let dir = tempfile::Builder::new().prefix("ftvm-lab-").tempdir()?;
    say("a lab of hosts on this machine: network namespaces on a Linux bridge, 10.77.0.0/24");
    let lab = Lab::up("ftvm-demo")?;
    say("booting the redis guest once at its lab address, to start the pair from its snapshot");
    let snapshot = lab_snapshot(&exe, &guest, dir.path())?;
    let pair = LabPair::start(&exe, &lab, &dir.path().join("pair"), &snapshot, &[])?;
    say(&format!(
        "S {}: etcd (the tie-breaker) and qemu-nbd serving the shared disk as {}",
        addr("S"),
        pair.disk_url
    ));
    say(&format!(
        "A {}: the primary (pid {}), its NIC the TAP vm0 on A's bridge; B {}: the backup (pid \
         {}), replaying over the sealed channel to A:{CHANNEL_PORT}",
        addr("A"),
        pair.primary.child.id(),
        addr("B"),
        pair.backup.child.id()
    ));
    pair.wait_paired(Duration::from_secs(120))?;
    say(&format!(
        "K {}: a client connects to the guest's own address {GUEST_IP}:6379 (kernel TCP, \
         through the LAN bridge)",
        addr("K")
    ));
    let mut pair = pair;
    let primary = &mut pair.primary.child;
    let acked = lab.in_host("K", || -> Result<usize> {
        let mut w = crate::ft_load::Writer::on(guest_redis(Duration::from_secs(30))?)?;
        w.write(200)?;
        say("200 keys written and acknowledged; killing the primary on A (SIGKILL)");
        primary.kill()?;
        w.write(keys_after as usize)?;
        w.check()?;
        Ok(w.acked())
    })??;
    say(&format!(
        "the backup on B is live: {acked} keys acknowledged on one TCP connection, every one \
         present, the connection never reset; B's TAP has sent {} frames (the guest's MAC moved \
         to B's port on the LAN bridge)",
        lab.tap_frames("B")?
    ));
    Ok(())
}

pub(crate) fn say(s: &str) {
    println!("ftvm demo: {s}");
}
