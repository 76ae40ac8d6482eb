//! `ftvm bench metrics`: what watching an FT pair costs it. The same redis guest (from one
//! snapshot taken at its ready line) runs as an FT pair twice per repetition: once plain,
//! once with `--metrics` on both sides and a scraper reading `/metrics` and `/status.json`
//! of both every second, as Prometheus and an open status page would. redis-benchmark's
//! SET and GET rates are compared, with the scrapes' latency and size.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::spread;
use crate::ft_pair::{Pair, PairSpec, free_port, http_get, save_ready_snapshot};

#[derive(Debug, clap::Args)]
pub struct MetricsBench {
    /// Repetitions (each runs the pair with and without metrics).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// redis-benchmark requests per test.
    #[arg(long, default_value_t = 20000)]
    requests: u32,
    /// redis-benchmark parallel clients.
    #[arg(long, default_value_t = 10)]
    clients: u32,
    /// Scrapes a second (of both sides' metrics and page data).
    #[arg(long, default_value_t = 1.0)]
    scrape_hz: f64,
}

struct Run {
    metrics: bool,
    set: f64,
    get: f64,
    scrape_ms: Vec<f64>,
    scrape_bytes: usize,
}

pub fn run(args: MetricsBench) -> Result<()> {
    if !(args.scrape_hz > 0.0 && args.scrape_hz <= 100.0) {
        bail!("--scrape-hz must be above 0 and at most 100");
    }
    let guest = crate::image::redis_guest(false)?;
    let dir = tempfile::Builder::new()
        .prefix("ftvm-bench-metrics-")
        .tempdir()?;
    eprintln!("bench metrics: booting the redis guest once to its ready line");
    let ready = save_ready_snapshot(&std::env::current_exe()?, &guest, dir.path())?;
    let mut runs = Vec::new();
    for rep in 0..args.reps.max(1) {
        // Alternating which goes first keeps a warming host from favouring one side.
        let order = if rep % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for metrics in order {
            let r = one(&guest, &ready, metrics, &args, dir.path())
                .with_context(|| format!("rep {}, metrics {metrics}", rep + 1))?;
            eprintln!(
                "bench metrics: rep {} {}: SET {:.0}/s GET {:.0}/s",
                rep + 1,
                if metrics { "scraped" } else { "plain" },
                r.set,
                r.get
            );
            runs.push(r);
        }
    }
    let pick = |m: bool, f: &dyn Fn(&Run) -> f64| {
        spread(
            &runs
                .iter()
                .filter(|r| r.metrics == m)
                .map(f)
                .collect::<Vec<_>>(),
        )
    };
    println!(
        "FT pair of the redis guest with and without --metrics on both sides, scraped {} \
         times a second (/metrics and /status.json of each); {} repetitions, median (min..max); \
         redis-benchmark -c {} -n {}:",
        args.scrape_hz, args.reps, args.clients, args.requests
    );
    println!();
    println!("| redis-benchmark | FT | FT + metrics scraped | ratio |");
    println!("|---|---|---|---|");
    for (name, f) in [
        ("SET/s", &(|r: &Run| r.set) as &dyn Fn(&Run) -> f64),
        ("GET/s", &|r: &Run| r.get),
    ] {
        let (a, b) = (pick(false, f), pick(true, f));
        println!(
            "| {name} | {:.0} ({:.0}..{:.0}) | {:.0} ({:.0}..{:.0}) | {:.3} |",
            a.0,
            a.1,
            a.2,
            b.0,
            b.1,
            b.2,
            b.0 / a.0
        );
    }
    let mut all: Vec<f64> = runs.iter().flat_map(|r| r.scrape_ms.clone()).collect();
    all.sort_by(f64::total_cmp);
    if let (Some(max), false) = (all.last(), all.is_empty()) {
        println!();
        println!(
            "Scrapes: {} answered, p50 {:.2} ms, max {:.2} ms; a scrape of both sides reads {} \
             bytes of answers.",
            all.len(),
            all[all.len() / 2],
            max,
            runs.iter().map(|r| r.scrape_bytes).max().unwrap_or(0)
        );
    }
    Ok(())
}

fn one(
    guest: &ftvm_image::RedisGuest,
    ready: &(PathBuf, PathBuf),
    metrics: bool,
    args: &MetricsBench,
    scratch: &Path,
) -> Result<Run> {
    let dir = tempfile::Builder::new()
        .prefix("pair-")
        .tempdir_in(scratch)?;
    let mut spec = PairSpec::new(
        std::env::current_exe()?,
        guest.clone(),
        dir.path().to_path_buf(),
    );
    spec.snapshot = Some(ready.clone());
    let ends = [
        format!("127.0.0.1:{}", free_port()?),
        format!("127.0.0.1:{}", free_port()?),
    ];
    if metrics {
        spec.primary_args = vec!["--metrics".into(), ends[0].clone()];
        spec.backup_args = vec!["--metrics".into(), ends[1].clone()];
    }
    let pair = Pair::start(&spec)?;
    pair.wait_ready(Duration::from_secs(300), |_, _| {})?;
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = metrics.then(|| {
        let (stop, ends) = (stop.clone(), ends.clone());
        let every = Duration::from_secs_f64(1.0 / args.scrape_hz);
        std::thread::spawn(move || scrape_until(&stop, &ends, every))
    });
    let (set, get) =
        crate::bench_redis::redis_benchmark(pair.forward_port, args.requests, args.clients)?;
    stop.store(true, Ordering::Relaxed);
    let (scrape_ms, scrape_bytes) = match scraper {
        Some(t) => t
            .join()
            .map_err(|_| anyhow::anyhow!("the scraper panicked"))??,
        None => (Vec::new(), 0),
    };
    Ok(Run {
        metrics,
        set,
        get,
        scrape_ms,
        scrape_bytes,
    })
}

/// Scrapes every side each `every` until `stop`; each round's time and body bytes.
fn scrape_until(stop: &AtomicBool, ends: &[String], every: Duration) -> Result<(Vec<f64>, usize)> {
    let (mut times, mut bytes) = (Vec::new(), 0);
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let mut round = 0;
        for end in ends {
            for path in ["/metrics", "/status.json"] {
                round += http_get(end, path)?.len();
            }
        }
        times.push(start.elapsed().as_secs_f64() * 1e3);
        bytes = bytes.max(round);
        std::thread::sleep(every.saturating_sub(start.elapsed()));
    }
    Ok((times, bytes))
}
