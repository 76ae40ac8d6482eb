//! `ftvm switch`: the virtual network's switch and gateway, as its own process.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ftvm_net::{Forward, Switch, SwitchConfig, SwitchStats};

#[derive(clap::Args)]
pub struct SwitchArgs {
    /// The Unix socket VMs connect to (`ftvm run --net switch:SOCKET`).
    #[arg(long, default_value = "ftvm-switch.sock")]
    pub socket: PathBuf,
    /// Forward a host port to a guest service through the built-in gateway (10.0.2.2), e.g.
    /// `tcp:127.0.0.1:6379=10.0.2.15:6379`. Repeatable.
    #[arg(long)]
    pub forward: Vec<Forward>,
    /// Connect the switch to the host's network through a TAP device: `tap:NAME` (put NAME in
    /// a bridge with a physical NIC to reach VMs on other hosts).
    #[arg(long)]
    pub uplink: Option<String>,
    /// Serve Prometheus metrics and a status page for the switch at `HOST:PORT`.
    #[arg(long)]
    pub metrics: Option<String>,
}

pub fn run(args: SwitchArgs) -> Result<()> {
    let mut cfg = SwitchConfig::new(args.socket.clone());
    cfg.forwards = args.forward.clone();
    if let Some(up) = &args.uplink {
        let Some(name) = up.strip_prefix("tap:") else {
            anyhow::bail!("--uplink {up}: expected tap:NAME");
        };
        cfg.uplink = Some(name.to_string());
    }
    let mut switch = Switch::bind(&cfg).context("cannot start the switch")?;
    eprintln!(
        "ftvm switch: serving {} (gateway 10.0.2.2, {}{})",
        args.socket.display(),
        match &cfg.uplink {
            Some(name) => format!("uplink TAP {name}, "),
            None => String::new(),
        },
        if args.forward.is_empty() {
            "no forwards".to_string()
        } else {
            args.forward
                .iter()
                .zip(switch.forward_addrs())
                .map(|(f, at)| format!("{at} -> {}", f.guest))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let shown = Arc::new(Mutex::new(SwitchStats::default()));
    let _metrics = crate::ft::serve_metrics(
        args.metrics.as_deref(),
        "switch",
        ftvm_metrics::Source::Switch(shown.clone()),
    )?;
    // Runs until killed: a stale socket file left behind is replaced by the next switch.
    let mut copied = Instant::now();
    loop {
        switch.turn(Duration::from_millis(100));
        // The counters go out a few times a second, never a lock per frame.
        if copied.elapsed() >= Duration::from_millis(200) {
            copied = Instant::now();
            *shown.lock().unwrap_or_else(|e| e.into_inner()) = switch.stats.clone();
        }
    }
}
