//! The operator's view of a running pair: `--metrics` scraped as Prometheus would, and the
//! status page loaded in headless Chromium, before and after a failover.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use super::*;

/// One scrape: every sample by its name and labels (`ftvm_role{role="primary"}`), and each
/// family's type.
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
    text: String,
}

impl Scrape {
    /// Parses the exposition format, checking what Prometheus would refuse: a sample of a
    /// family with no `# TYPE`, a value that is not a number, a counter not ending in
    /// `_total`.
    fn parse(text: &str) -> Scrape {
        let (mut samples, mut types) = (BTreeMap::new(), BTreeMap::new());
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (key, value) = line.rsplit_once(' ').expect("a sample is `name value`");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("not a number: {line}")),
            };
            let name = key.split('{').next().unwrap();
            let family = types
                .keys()
                .filter(|f| name.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .unwrap_or_else(|| panic!("{name} has no # TYPE"));
            if types[family] == "counter" {
                assert_eq!(name, format!("{family}_total"), "a counter named {name}");
            }
            samples.insert(key.to_string(), value);
        }
        Scrape {
            samples,
            types,
            text: text.to_string(),
        }
    }

    fn get(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in\n{}", self.text))
    }

    fn counters(&self) -> impl Iterator<Item = (&String, &f64)> {
        self.samples.iter().filter(|(k, _)| {
            let name = k.split('{').next().unwrap();
            name.strip_suffix("_total")
                .is_some_and(|f| self.types.get(f).is_some_and(|t| t == "counter"))
        })
    }

    /// The role this side reports (the one at 1).
    fn role(&self) -> String {
        self.samples
            .iter()
            .find_map(|(k, v)| {
                let role = k.strip_prefix("ftvm_role{role=\"")?.strip_suffix("\"}")?;
                (*v == 1.0).then(|| role.to_string())
            })
            .unwrap_or_else(|| panic!("no role at 1 in\n{}", self.text))
    }
}

fn scrape(addr: &str) -> Scrape {
    Scrape::parse(&ft_pair::http_get(addr, "/metrics").unwrap())
}

/// The page at `url` as headless Chromium builds it (after its scripts ran a few polls),
/// and a screenshot of it at `shot`. Chromium may resolve no host but this one.
fn chromium_dom(url: &str, shot: &Path) -> String {
    let base = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=5000",
            "--window-size=1280,1100",
        ]);
    };
    let mut dump = Command::new("chromium");
    base(&mut dump);
    let out = dump
        .args(["--dump-dom", url])
        .output()
        .expect("chromium (Debian's package; scripts/test.sh installs it)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut screenshot = Command::new("chromium");
    base(&mut screenshot);
    let _ = screenshot
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .output();
    text(&out.stdout)
}

/// The `<section class="side" ...>` tags of the page's DOM.
fn side_tags(dom: &str) -> Vec<String> {
    dom.match_indices("<section class=\"side")
        .map(|(i, _)| dom[i..].split('>').next().unwrap().to_string())
        .collect()
}

fn plots_drawn(dom: &str) -> Vec<u64> {
    dom.match_indices("data-points=\"")
        .map(|(i, m)| {
            dom[i + m.len()..]
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

#[test]
fn metrics_and_the_status_page_follow_the_pair_through_a_failover() {
    let _one = serial();
    let mut spec = spec_ready("metrics");
    let (pm, bm) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    spec.primary_args.extend(["--metrics".into(), pm.clone()]);
    spec.backup_args.extend(["--metrics".into(), bm.clone()]);
    let mut pair = start(&spec);
    let mut w = ft_load::Writer::connect(&pair).unwrap();
    w.write(100).unwrap();
    let first = scrape(&pm);
    // Clients that connect and never finish a request, and a flood of connections, cost the
    // server's workers for a while, never the VM: the writes go on meanwhile.
    let stalled: Vec<std::net::TcpStream> = (0..64)
        .filter_map(|_| std::net::TcpStream::connect(&pm).ok())
        .map(|mut c| {
            let _ = c.write_all(b"GET /metr");
            c
        })
        .collect();
    // (The writer gives up on a reply that takes longer than its read timeout.)
    w.write(100).unwrap();
    drop(stalled);
    std::thread::sleep(Duration::from_millis(1500));
    let second = scrape(&pm);
    for (key, before) in first.counters() {
        let now = second.get(key);
        assert!(now >= *before, "{key} went from {before} to {now}");
    }
    assert_eq!(second.role(), "primary");
    let generation = second.get("ftvm_generation");
    second.get("ftvm_execution_lag_seconds");
    second.get("ftvm_held_outputs");
    assert!(second.get("ftvm_log_bytes_total") > first.get("ftvm_log_bytes_total"));
    assert!(second.get("ftvm_log_acked_bytes_total") > 0.0);
    assert!(second.get("ftvm_output_delay_seconds_count") >= 100.0);
    // MIPS is a rate over the sampler's last second: it shows once two samples ran guest code.
    let started = Instant::now();
    while scrape(&pm).get("ftvm_guest_mips") == 0.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            second.text
        );
        w.write(10).unwrap();
    }
    assert!(second.get("ftvm_net_frames_sent_total") > 0.0);
    let backup = scrape(&bm);
    assert_eq!(backup.role(), "backup");
    assert!(backup.get("ftvm_log_bytes_total") > 0.0);

    // The page on the primary shows both sides, each with its plots drawn.
    let dir = tmp("ft-metrics");
    let url = format!("http://{pm}/?side={pm}&side={bm}");
    let dom = chromium_dom(&url, &dir.join("status-page-paired.png"));
    let sides = side_tags(&dom);
    assert_eq!(sides.len(), 2, "{dom}");
    assert!(
        sides.iter().any(|t| t.contains("data-role=\"primary\"")),
        "{sides:?}"
    );
    assert!(
        sides.iter().any(|t| t.contains("data-role=\"backup\"")),
        "{sides:?}"
    );
    let drawn = plots_drawn(&dom);
    assert_eq!(drawn.len(), 8, "{dom}");
    assert!(
        drawn.iter().all(|&n| n > 0),
        "plots without points: {drawn:?}"
    );

    // The terminal view shows the same pair from the control sockets.
    let out = ftvm()
        .args([
            "ctl",
            "status",
            "--watch",
            "--interval",
            "0.3",
            "--refreshes",
            "3",
        ])
        .arg("--socket")
        .arg(&pair.primary.control)
        .arg("--socket")
        .arg(&pair.backup().control)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let screen = text(&out.stdout);
    assert_eq!(screen.matches("\x1b[2J").count(), 3, "{screen}");
    let last = screen.rsplit("\x1b[2J").next().unwrap();
    let rows: Vec<&str> = last.lines().skip(3).collect();
    assert!(rows[0].starts_with("primary "), "{last}");
    assert!(rows[1].starts_with("backup "), "{last}");
    let mips: f64 = rows[0].split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(mips > 0.0, "{last}");

    ft_load::kill_primary(&mut pair, &mut w, 100)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", pair.all_logs()));
    w.check().unwrap();
    let after = scrape(&bm);
    assert!(after.role().starts_with("primary"), "{}", after.text);
    assert_eq!(after.get("ftvm_generation"), generation + 1.0);
    assert_eq!(after.get("ftvm_failovers_total"), 1.0);
    assert_eq!(after.get("ftvm_test_and_set_total{outcome=\"won\"}"), 1.0);
    for (key, before) in backup.counters() {
        let now = after.get(key);
        assert!(now >= *before, "{key} went from {before} to {now}");
    }

    // The page on the new primary: the dead side unreachable, the failover's steps in order.
    let url = format!("http://{bm}/?side={pm}&side={bm}");
    let dom = chromium_dom(&url, &dir.join("status-page-after-failover.png"));
    let sides = side_tags(&dom);
    assert!(
        sides
            .iter()
            .any(|t| t.contains("data-role=\"unreachable\"")),
        "{sides:?}"
    );
    let events: Vec<&str> = dom
        .match_indices("data-event=\"")
        .map(|(i, m)| dom[i + m.len()..].split('"').next().unwrap())
        .collect();
    for step in [
        "primary-last-heard",
        "primary-lost",
        "claiming",
        "claim-won",
        "live",
        "first-output",
    ] {
        assert!(
            events.contains(&step),
            "no {step} in the timeline: {events:?}"
        );
    }
}
