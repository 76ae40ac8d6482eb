//! End to end: FT pairs of real processes (switch, primary, backup) running the real redis
//! guest, failed over at many points; the backup killed; the channel cut; power-off; held
//! outputs. Every test checks what a redis client would notice.

mod common;
#[allow(dead_code)]
#[path = "../src/ft_load.rs"]
mod ft_load;
#[allow(dead_code)]
#[path = "../src/ft_pair.rs"]
mod ft_pair;
#[path = "ft/lab.rs"]
mod lab;
#[path = "../src/lab.rs"]
mod lab_hosts;
#[path = "ft/metrics.rs"]
mod metrics;
#[allow(dead_code)]
#[path = "../src/resp.rs"]
mod resp;
#[path = "ft/security.rs"]
mod security;
#[path = "ft/storage.rs"]
mod storage;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ft_load::Load;
use ft_pair::{Pair, PairSpec};
use ftvm_ft::Role;
use ftvm_ft::event::{Event, Line};
use resp::{Redis, Reply, check_keys};

/// One pair at a time: each is three busy processes, and failure detection should not be
/// fighting other tests for the two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The FT events in a side's stderr (the sides run with `FTVM_EVENTS=json`).
fn events(log: &str) -> Vec<Event> {
    Line::parse_all(log).into_iter().map(|l| l.event).collect()
}

fn any(log: &str, is: impl Fn(&Event) -> bool) -> bool {
    events(log).iter().any(is)
}

/// Whether the side went live as `generation`.
fn live_as(log: &str, generation: u64) -> bool {
    any(
        log,
        |e| matches!(e, Event::Live { generation: g, .. } if *g == generation),
    )
}

/// An `ftvm` command whose FT events are JSON lines.
fn ftvm_json() -> std::process::Command {
    let mut c = ftvm();
    c.env("FTVM_EVENTS", "json");
    c
}

fn redis_guest() -> ftvm_image::RedisGuest {
    guest_ready();
    let out = ftvm().args(["image", "fetch", "--redis"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    ftvm_image::ensure_redis_guest(&ftvm_image::FetchOptions {
        cache_dir: ftvm_image::cache_dir(),
        progress: false,
        force: false,
    })
    .unwrap()
}

fn spec(name: &str) -> PairSpec {
    let dir = tmp(&format!("ft-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = PairSpec::new(env!("CARGO_BIN_EXE_ftvm").into(), redis_guest(), dir);
    // A loaded CI machine may starve a heartbeat thread; the default 300 ms is for the bench.
    spec.ft_args = vec!["--timeout-ms".into(), "1000".into()];
    spec
}

/// The redis guest booted once to its ready line and saved with its disk: the tests that fail
/// over a running guest start there instead of booting again.
fn ready_snapshot() -> (std::path::PathBuf, std::path::PathBuf) {
    static SNAPSHOT: std::sync::OnceLock<(std::path::PathBuf, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    SNAPSHOT
        .get_or_init(|| {
            let guest = redis_guest();
            let dir = tmp("ft-ready");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            ft_pair::save_ready_snapshot(env!("CARGO_BIN_EXE_ftvm").as_ref(), &guest, &dir).unwrap()
        })
        .clone()
}

/// A pair running the ready redis guest, from the shared snapshot.
fn spec_ready(name: &str) -> PairSpec {
    let mut spec = spec(name);
    spec.snapshot = Some(ready_snapshot());
    spec
}

fn start(spec: &PairSpec) -> Pair {
    let pair = Pair::start(spec).unwrap();
    pair.wait_ready(Duration::from_secs(300), |_, _| {})
        .unwrap();
    pair
}

fn client(pair: &Pair) -> Redis {
    Redis::connect(pair.forward_port, Duration::from_secs(30)).unwrap()
}

fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit in {secs} s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Boots a pair, fails it over under `load` and checks what the client saw and the new role.
fn failover_under_load(name: &str, load: Load, kill_after: Duration) {
    let _one = serial();
    let mut pair = start(&spec_ready(name));
    let n = ft_load::failover_under_load(&mut pair, load, kill_after, 300)
        .unwrap_or_else(|e| panic!("{name}: {e:#}\nbackup:\n{}", pair.backup().log.text()));
    let log = pair.backup().log.text();
    assert!(live_as(&log, 2), "{name}: {log}");
    let s = Pair::status(pair.backup()).expect("the live VM answers its control socket");
    assert_eq!((s.role, s.generation), (Role::PrimaryAlone, 2));
    eprintln!("{name}: {n} acknowledged writes kept across the failover");
}

#[test]
fn failover_while_a_client_sets_keys_one_by_one_early() {
    failover_under_load("sets-early", Load::Sets, Duration::from_millis(300));
}

#[test]
fn failover_while_a_client_sets_keys_one_by_one_late() {
    failover_under_load("sets-late", Load::Sets, Duration::from_secs(3));
}

#[test]
fn failover_while_the_network_is_busy_with_pipelined_writes() {
    failover_under_load("pipelined-1", Load::Pipelined, Duration::from_secs(1));
}

#[test]
fn failover_while_the_network_is_busy_later_on() {
    failover_under_load("pipelined-2", Load::Pipelined, Duration::from_millis(2500));
}

#[test]
fn failover_while_every_write_is_fsynced_to_disk() {
    failover_under_load("disk-1", Load::Disk, Duration::from_secs(1));
}

#[test]
fn failover_while_the_disk_is_busy_later_on() {
    failover_under_load("disk-2", Load::Disk, Duration::from_millis(2500));
}

#[test]
fn failover_during_an_aof_rewrite() {
    failover_under_load("rewrite", Load::Rewrite, Duration::from_secs(1));
}

#[test]
fn failover_of_an_idle_guest_keeps_the_idle_connection() {
    failover_under_load("idle", Load::Idle, Duration::from_secs(2));
}

/// Kills the primary `after` into the boot: the backup goes live and finishes booting.
fn failover_during_boot(name: &str, after: Duration) {
    let _one = serial();
    let mut pair = Pair::start(&spec(name)).unwrap();
    ft_load::failover_during_boot(&mut pair, after)
        .unwrap_or_else(|e| panic!("{name}: {e:#}\nbackup:\n{}", pair.backup().log.text()));
    let log = pair.backup().log.text();
    assert!(live_as(&log, 2), "{log}");
}

#[test]
fn failover_early_in_the_boot() {
    failover_during_boot("boot-early", Duration::from_secs(2));
}

#[test]
fn failover_late_in_the_boot() {
    failover_during_boot("boot-late", Duration::from_secs(7));
}

#[test]
fn a_killed_backup_leaves_the_primary_serving_alone() {
    let _one = serial();
    let mut pair = start(&spec_ready("backup-killed"));
    let mut redis = client(&pair);
    let mut acked = Vec::new();
    for k in 0..200u64 {
        if k == 100 {
            pair.backup.as_mut().unwrap().child.kill().unwrap();
        }
        let r = redis.command(&["SET", &format!("key:{k}"), &k.to_string()]);
        assert_eq!(r.unwrap(), Reply::Simple("OK".into()), "SET key:{k}");
        acked.push(k);
    }
    assert!(check_keys(&mut redis, &acked).unwrap().is_empty());
    let log = pair.primary.log.text();
    assert!(
        any(&log, |e| matches!(e, Event::BackupLost { .. }))
            && any(&log, |e| matches!(e, Event::ClaimWon { generation: 1, .. })),
        "{log}"
    );
    let s = Pair::status(&pair.primary).unwrap();
    assert_eq!((s.role, s.generation), (Role::PrimaryAlone, 2));
}

/// A TCP relay for the logging channel that a test can cut while both ends stay up (a
/// network partition: no FIN, no RST, just silence), or make flip one bit of what the backup
/// sends next (an attacker on the path forging an ack).
struct Relay {
    cut: Arc<AtomicBool>,
    flip: Arc<AtomicBool>,
}

impl Relay {
    fn start(to: String) -> (Relay, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = listener.local_addr().unwrap().to_string();
        let (cut, flip) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (c, f) = (cut.clone(), flip.clone());
        std::thread::spawn(move || {
            let (a, _) = listener.accept().unwrap();
            let b = std::net::TcpStream::connect(&to).unwrap();
            let ways = [
                (a.try_clone().unwrap(), b.try_clone().unwrap(), Some(f)),
                (b, a, None),
            ];
            for (mut from, mut into, flip) in ways {
                let c = c.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if flip
                            .as_ref()
                            .is_some_and(|f| f.swap(false, Ordering::Relaxed))
                        {
                            buf[n - 1] ^= 0x10;
                        }
                        // Cut: bytes are swallowed, the connection stays open.
                        if !c.load(Ordering::Relaxed) && into.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (Relay { cut, flip }, at)
    }
}

/// A pair whose channel runs through a [`Relay`]; `fault` strikes it after 100 of 300 SETs.
/// Every acknowledged write is there, exactly one side won generation 1, the other lost the
/// claim and halted with status 4. The primary's and the backup's logs.
fn a_channel_fault_lets_exactly_one_side_go_on(
    name: &str,
    fault: impl Fn(&Relay),
) -> (String, String) {
    let mut spec = spec_ready(name);
    let relay: Arc<Mutex<Option<Relay>>> = Arc::default();
    let r = relay.clone();
    spec.via = Some(Box::new(move |primary: &str| {
        let (relay, at) = Relay::start(primary.to_string());
        *r.lock().unwrap() = Some(relay);
        at
    }));
    let mut pair = start(&spec);
    let mut redis = client(&pair);
    let mut acked = Vec::new();
    for k in 0..300u64 {
        if k == 100 {
            fault(relay.lock().unwrap().as_ref().unwrap());
        }
        let r = redis.command(&["SET", &format!("key:{k}"), &k.to_string()]);
        assert_eq!(r.unwrap(), Reply::Simple("OK".into()), "SET key:{k}");
        acked.push(k);
    }
    assert!(check_keys(&mut redis, &acked).unwrap().is_empty());
    let (p, b) = (pair.primary.log.text(), pair.backup().log.text());
    let primary_won = any(&p, |e| matches!(e, Event::ClaimWon { generation: 1, .. }));
    let backup_won = live_as(&b, 2);
    assert!(primary_won != backup_won, "primary:\n{p}\nbackup:\n{b}");
    let loser = if primary_won {
        pair.backup.as_mut().unwrap()
    } else {
        &mut pair.primary
    };
    assert_eq!(wait_exit(&mut loser.child, 30).code(), Some(4));
    // Read after the exit: the claim's last events may have come after the logs above.
    let loser_log = loser.log.text();
    assert!(
        any(&loser_log, |e| matches!(
            e,
            Event::ClaimLost { generation: 1, .. }
        )),
        "{loser_log}"
    );
    (p, b)
}

#[test]
fn a_cut_channel_lets_exactly_one_side_go_on() {
    let _one = serial();
    a_channel_fault_lets_exactly_one_side_go_on("cut", |r| r.cut.store(true, Ordering::Relaxed));
}

#[test]
fn ctl_poweroff_stops_both_without_a_failover() {
    let _one = serial();
    let mut pair = start(&spec_ready("poweroff"));
    let mut redis = client(&pair);
    assert_eq!(
        redis.command(&["SET", "k", "v"]).unwrap(),
        Reply::Simple("OK".into())
    );
    let status = ftvm()
        .args(["ctl", "status", "--socket"])
        .arg(&pair.primary.control)
        .arg("--socket")
        .arg(&pair.backup().control)
        .output()
        .unwrap();
    let table = text(&status.stdout);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(
        table.lines().nth(1).unwrap().starts_with("primary ")
            && table.lines().nth(2).unwrap().starts_with("backup "),
        "{table}"
    );
    // The same as typed JSON, one object per side, roles matched as variants.
    let json = ftvm()
        .args(["ctl", "status", "--json", "--socket"])
        .arg(&pair.primary.control)
        .arg("--socket")
        .arg(&pair.backup().control)
        .output()
        .unwrap();
    assert!(json.status.success(), "{}", text(&json.stderr));
    let sides: Vec<ftvm_ft::Status> = text(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a status object per line"))
        .collect();
    assert_eq!(
        sides.iter().map(|s| &s.role).collect::<Vec<_>>(),
        [&Role::Primary, &Role::Backup]
    );
    assert!(sides.iter().all(|s| s.generation == sides[0].generation));
    use ftvm_ft::control::{Peer, Phase};
    use ftvm_ft::{BackupPhase, PrimaryPhase};
    let g = sides[0].generation;
    assert_eq!(
        (&sides[0].phase, &sides[1].phase),
        (
            &Phase::Primary(PrimaryPhase::Paired { generation: g }),
            &Phase::Backup(BackupPhase::Replaying { generation: g })
        )
    );
    assert!(
        matches!(sides[0].peer, Peer::Backup { .. })
            && matches!(sides[1].peer, Peer::Primary { .. }),
        "{sides:?}"
    );
    let off = ftvm()
        .args(["ctl", "poweroff", "--socket"])
        .arg(&pair.primary.control)
        .output()
        .unwrap();
    assert!(off.status.success(), "{}", text(&off.stderr));
    assert!(wait_exit(&mut pair.primary.child, 30).success());
    assert!(wait_exit(&mut pair.backup.as_mut().unwrap().child, 30).success());
    let log = pair.backup().log.text();
    assert!(
        any(&log, |e| matches!(e, Event::PrimaryFinished { .. }))
            && !any(&log, |e| matches!(e, Event::Live { .. })),
        "{log}"
    );
}

#[test]
fn outputs_wait_for_the_backups_ack() {
    let _one = serial();
    let pair = start(&spec_ready("held"));
    let mut redis = client(&pair);
    let ping = |redis: &mut Redis| {
        let t = Instant::now();
        assert_eq!(
            redis.command(&["PING"]).unwrap(),
            Reply::Simple("PONG".into())
        );
        t.elapsed()
    };
    ping(&mut redis);
    let delay = |ms: u64| {
        let r = ftvm_ft::control::request(&pair.backup().control, &format!("ack-delay {ms}"));
        assert_eq!(r.unwrap(), "ok");
    };
    delay(1500);
    // While acks are held back the primary holds the reply: the client cannot see it sooner.
    let seen_held = Arc::new(AtomicBool::new(false));
    let (s, ctl) = (seen_held.clone(), pair.primary.control.clone());
    let watcher = std::thread::spawn(move || {
        for _ in 0..100 {
            if let Ok(r) = ftvm_ft::control::request(&ctl, "status")
                && let Ok(st) = serde_json::from_str::<ftvm_ft::Status>(&r)
                && st.held_outputs > 0
            {
                s.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let held = ping(&mut redis);
    watcher.join().unwrap();
    assert!(held >= Duration::from_millis(1400), "reply after {held:?}");
    assert!(
        seen_held.load(Ordering::Relaxed),
        "status never showed held outputs"
    );
    delay(0);
    ping(&mut redis);
}

/// Starts a primary booting the default guest to the marker and powering off; returns it and
/// the address it listens on.
fn start_primary(dir: &std::path::Path) -> (Child, String) {
    let (child, addr, _) = start_primary_logged(dir);
    (child, addr)
}

/// [`start_primary`], keeping the primary's events for the test to read.
fn start_primary_logged(dir: &std::path::Path) -> (Child, String, Arc<Mutex<String>>) {
    let mut child = ftvm_json()
        .args([
            "primary",
            "--listen",
            "127.0.0.1:0",
            "--firmware",
            "builtin",
        ])
        .args(["--append", "console=ttyS0 earlycon=sbi ftvm.init=poweroff"])
        .args(["--checkpoint-interval", "50000000", "--shared-dir"])
        .arg(dir)
        .args(ft_pair::channel_keys(dir).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = match Line::parse_all(&line).pop().map(|l| l.event) {
        Some(Event::WaitingForBackup { at }) => at,
        _ => panic!("the primary says where it listens first: {line}"),
    };
    let log = Arc::new(Mutex::new(line));
    let l = log.clone();
    // Keep draining: a closed pipe would kill the primary at its next message.
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let mut log = l.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (child, addr, log)
}

fn shared_dir(name: &str) -> std::path::PathBuf {
    let dir = tmp(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A backup with the pair's keys joins the primary at `addr` and replays it to its power-off,
/// every checkpoint matched; the backup's log.
fn replay_to_poweroff(dir: &std::path::Path, addr: &str, mut primary: Child) -> String {
    let backup = ftvm_json()
        .args(["backup", "--connect", addr, "--shared-dir"])
        .arg(dir)
        .args(ft_pair::channel_keys(dir).unwrap())
        .output()
        .unwrap();
    assert!(primary.wait().unwrap().success());
    let err = text(&backup.stderr);
    assert!(backup.status.success(), "{err}");
    assert!(
        any(
            &err,
            |e| matches!(e, Event::PrimaryFinished { checkpoints, .. } if *checkpoints > 0)
        ),
        "{err}"
    );
    err
}

#[test]
fn a_backup_replays_the_primary_in_lockstep_to_its_poweroff() {
    guest_ready();
    let _one = serial();
    let dir = shared_dir("ft-lockstep");
    let (primary, addr) = start_primary(&dir);
    let err = replay_to_poweroff(&dir, &addr, primary);
    assert!(!any(&err, |e| matches!(e, Event::Live { .. })), "{err}");
}

#[test]
fn a_backup_goes_live_when_its_primary_dies_mid_boot_and_finishes_the_boot() {
    guest_ready();
    let _one = serial();
    let dir = shared_dir("ft-mid-boot");
    let (mut primary, addr) = start_primary(&dir);
    let backup = ftvm_json()
        .args(["backup", "--connect", &addr, "--shared-dir"])
        .arg(&dir)
        .args(ft_pair::channel_keys(&dir).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    primary.kill().unwrap();
    primary.wait().unwrap();
    let out = backup.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        any(&err, |e| matches!(e, Event::PrimaryLost { .. })) && live_as(&err, 2),
        "{err}"
    );
    assert!(text(&out.stdout).contains(MARKER), "{}", text(&out.stdout));
    assert!(dir.join("ftvm.ft-lock.1").exists());
}

// Restoring redundancy: live clones into new backups, moving either side of a pair.

fn stop_process(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a child this test started and has not waited for.
    let r = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(r, 0, "cannot signal the process");
}

#[test]
fn a_busy_primary_cloned_into_a_new_backup_fails_over_with_every_write() {
    let _one = serial();
    let mut spec = spec_ready("clone-busy");
    spec.initial_backup = false;
    let mut pair = start(&spec);
    let mut w = ft_load::Writer::connect(&pair).unwrap();
    w.write(200).unwrap();
    let (spare, at) = pair.start_spare("spare").unwrap();
    // The operator's command, as a user types it.
    let out = ftvm()
        .args(["ctl", "add-backup", "--no-wait", "--to", &at, "--socket"])
        .arg(&pair.primary.control)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("cloning into a new backup at {at}")),
        "{}",
        text(&out.stderr)
    );
    let during = w.acked();
    pair.wait_clone(0, &at, Duration::from_secs(120), || w.write(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", pair.all_logs()));
    assert!(
        w.acked() > during,
        "the client wrote while the VM was cloned"
    );
    pair.set_backup(spare);
    let log = pair.primary.log.text();
    assert!(
        any(
            &log,
            |e| matches!(e, Event::BackupInLockstep { to, .. } if *to == at)
        ),
        "{log}"
    );
    let out = ftvm()
        .args(["ctl", "status", "--socket"])
        .arg(&pair.primary.control)
        .arg("--socket")
        .arg(&pair.backup().control)
        .output()
        .unwrap();
    let table = text(&out.stdout);
    assert!(
        table.contains("primary ") && table.contains("backup "),
        "{table}"
    );
    assert!(table.contains(&format!("clone to {at}: done")), "{table}");
    w.write(200).unwrap();
    ft_load::kill_primary(&mut pair, &mut w, 300)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", pair.all_logs()));
    w.check().unwrap();
    let log = pair.primary.log.text();
    assert!(
        any(&log, |e| matches!(e, Event::CloneReceived { .. })),
        "{log}"
    );
    assert!(live_as(&log, 2), "{log}");
}

#[test]
fn two_failovers_in_a_row_with_a_new_backup_between() {
    let _one = serial();
    // The backup knows a spare host: once it is live it clones itself there by itself.
    let mut spec = spec_ready("two-failovers");
    let spare_at = format!("127.0.0.1:{}", free_port());
    spec.backup_args = vec!["--spare".into(), spare_at.clone()];
    let mut pair = start(&spec);
    let (spare, _) = pair.start_spare_at("spare", &spare_at).unwrap();
    let mut w = ft_load::Writer::connect(&pair).unwrap();
    w.write(200).unwrap();
    ft_load::kill_primary(&mut pair, &mut w, 200).unwrap();
    assert!(live_as(&pair.primary.log.text(), 2));
    pair.wait_clone(0, &spare_at, Duration::from_secs(120), || w.write(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", pair.all_logs()));
    pair.set_backup(spare);
    let s = Pair::status(&pair.primary).unwrap();
    assert_eq!((s.role, s.generation), (Role::Primary, 2));
    w.write(200).unwrap();
    ft_load::kill_primary(&mut pair, &mut w, 200)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", pair.all_logs()));
    w.check().unwrap();
    let log = pair.primary.log.text();
    assert!(live_as(&log, 3), "{log}");
}

#[test]
fn an_interrupted_clone_leaves_the_primary_running_and_can_be_retried() {
    let _one = serial();
    let mut spec = spec_ready("clone-cut");
    spec.initial_backup = false;
    let mut pair = start(&spec);
    let mut w = ft_load::Writer::connect(&pair).unwrap();
    w.write(100).unwrap();
    // A target that hangs mid-clone (stopped: its socket fills and nothing comes back).
    let (mut hung, at) = pair.start_spare("hung").unwrap();
    stop_process(&hung.child, libc::SIGSTOP);
    let before = pair.ask_clone("add-backup", &at).unwrap();
    let e = pair
        .wait_clone(before, &at, Duration::from_secs(60), || w.write(5))
        .unwrap_err();
    assert!(e.to_string().contains("clone failed"), "{e:#}");
    let _ = hung.child.kill();
    // A target killed mid-clone (the connection resets).
    let (mut killed, at) = pair.start_spare("killed").unwrap();
    stop_process(&killed.child, libc::SIGSTOP);
    let before = pair.ask_clone("add-backup", &at).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(matches!(
        pair.clone_state(before, &at).unwrap(),
        ft_pair::CloneState::Running(_)
    ));
    let _ = killed.child.kill();
    let e = pair
        .wait_clone(before, &at, Duration::from_secs(60), || w.write(5))
        .unwrap_err();
    assert!(e.to_string().contains("clone failed"), "{e:#}");
    // The primary ran on alone, unharmed; a retry to a good target works.
    w.write(100).unwrap();
    let s = Pair::status(&pair.primary).unwrap();
    assert_eq!((s.role, s.generation), (Role::PrimaryAlone, 1));
    pair.clone_into_spare("spare", "add-backup", Duration::from_secs(120), || {
        w.write(10)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", pair.all_logs()));
    // On failure, the backup that should have gone live says why (it is the primary then).
    ft_load::kill_primary(&mut pair, &mut w, 200)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", pair.all_logs()));
    w.check().unwrap();
    let log = pair.primary.log.text();
    assert!(live_as(&log, 2), "{log}");
}

/// Clones the VM into a new spare with `command` (add-backup or migrate) while `w` keeps
/// writing; the side the spare replaces must exit cleanly, saying `farewell`.
fn move_side(
    pair: &mut Pair,
    w: &mut ft_load::Writer,
    name: &str,
    command: &str,
    farewell: fn(&Event) -> bool,
) {
    pair.clone_into_spare(name, command, Duration::from_secs(120), || w.write(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", pair.all_logs()));
    let old = pair.former.last_mut().unwrap();
    assert!(wait_exit(&mut old.child, 30).success());
    let log = old.log.text();
    assert!(any(&log, farewell), "{log}");
}

#[test]
fn moving_the_backup_then_the_primary_under_load_loses_nothing() {
    let _one = serial();
    let mut pair = start(&spec_ready("migrate"));
    let mut w = ft_load::Writer::connect(&pair).unwrap();
    w.write(200).unwrap();
    // Move the backup: the new one is cloned while the old one still protects the VM.
    move_side(&mut pair, &mut w, "backup2", "add-backup", |e| {
        matches!(e, Event::Retired { .. })
    });
    assert_eq!(Pair::status(&pair.primary).unwrap().generation, 2);
    w.write(200).unwrap();
    // Move the primary: its backup replays to the switch and reconnects to the new host.
    move_side(&mut pair, &mut w, "primary2", "migrate", |e| {
        matches!(e, Event::MovedAway { .. })
    });
    w.write(300).unwrap();
    let backup = pair.backup().log.text();
    assert!(
        any(&backup, |e| matches!(e, Event::PrimaryMoved { .. })),
        "{backup}"
    );
    let s = Pair::status(&pair.primary).unwrap();
    assert_eq!((s.role, s.generation), (Role::Primary, 2));
    // The backup checked the moved primary's starting state hash against its own replay,
    // and every checkpoint since: a failover to it keeps every write.
    ft_load::kill_primary(&mut pair, &mut w, 300)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", pair.all_logs()));
    w.check().unwrap();
    let log = pair.primary.log.text();
    assert!(live_as(&log, 3), "{log}");
    assert!(!log.contains("diverge"), "{log}");
}

#[test]
fn etcd_as_the_tie_breaker_decides_a_failover() {
    let _one = serial();
    let etcd = ftvm_ft::PrivateEtcd::start().unwrap();
    let mut spec = spec_ready("etcd");
    spec.ft_args.extend(["--etcd".into(), etcd.addr.clone()]);
    let mut pair = start(&spec);
    let n = ft_load::failover_under_load(&mut pair, Load::Sets, Duration::from_millis(500), 200)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", pair.all_logs()));
    let log = pair.backup().log.text();
    let on_etcd = format!("etcd at {}", etcd.addr);
    assert!(
        any(
            &log,
            |e| matches!(e, Event::Claiming { generation: 1, on } if on.starts_with(&on_etcd))
        ),
        "{log}"
    );
    assert!(live_as(&log, 2), "{log}");
    // The record is in etcd, not beside the disk.
    assert!(!spec.dir.join("redis.img.ft-lock.1").exists());
    eprintln!("etcd: {n} acknowledged writes kept");
}
