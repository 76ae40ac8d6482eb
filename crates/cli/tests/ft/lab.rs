//! FT on a lab of hosts (root: network namespaces on a Linux bridge, `scripts/lab.sh`): the
//! primary on host A, its backup on B, the shared disk over NBD and the tie-breaker in etcd on
//! S, the client on K talking to the guest's own address through the bridge with the kernel's
//! TCP. Each VM's NIC is a TAP device on its host's bridge: no ftvm switch on the path.

use std::path::PathBuf;

use anyhow::{Result, ensure};

use super::*;
use ft_load::Writer;
use lab_hosts::{GUEST_IP, Lab, LabPair, guest_redis, lab_snapshot};

fn snapshot() -> (PathBuf, PathBuf) {
    static SNAPSHOT: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    SNAPSHOT
        .get_or_init(|| {
            let dir = tmp("lab-ready");
            let _ = std::fs::remove_dir_all(&dir);
            lab_snapshot(env!("CARGO_BIN_EXE_ftvm").as_ref(), &redis_guest(), &dir).unwrap()
        })
        .clone()
}

fn start_pair(lab: &Lab, name: &str) -> LabPair {
    let dir = tmp(&format!("lab-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let extra = ["--timeout-ms", "1000"].map(String::from);
    let pair = LabPair::start(
        env!("CARGO_BIN_EXE_ftvm").as_ref(),
        lab,
        &dir,
        &snapshot(),
        &extra,
    )
    .unwrap();
    pair.wait_paired(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&pair)));
    pair
}

/// The client on K: one connection to the guest's own address.
fn client() -> Result<Writer> {
    Writer::on(guest_redis(Duration::from_secs(30))?)
}

fn logs(pair: &LabPair) -> String {
    format!(
        "A:\n{}\nB:\n{}",
        pair.primary.log.text(),
        pair.backup.log.text()
    )
}

/// SIGKILL of the primary's process on A while K writes: B goes live, its RARP and gratuitous
/// ARP move the guest's MAC on the LAN bridge, and K's connection goes on with every
/// acknowledged write there.
#[test]
fn in_the_lab_a_killed_primary_on_a_fails_over_to_b_across_the_bridge() {
    let _one = serial();
    let lab = Lab::up("ftvmt").unwrap();
    let mut pair = start_pair(&lab, "kill");
    // The real client, from K, against the guest's own address.
    let bench = lab
        .on("K", "redis-benchmark")
        .args([
            "-h", GUEST_IP, "-n", "2000", "-c", "4", "-t", "set,get", "-q",
        ])
        .output()
        .unwrap();
    let said = text(&bench.stdout);
    assert!(
        bench.status.success() && said.contains("SET:") && said.contains("GET:"),
        "{said}"
    );
    let primary = &mut pair.primary.child;
    let acked = lab
        .in_host("K", || -> Result<usize> {
            let mut w = client()?;
            w.write(100)?;
            primary.kill()?;
            w.write(100)?;
            w.check()?;
            Ok(w.acked())
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&pair)));
    assert_eq!(acked, 200);
    assert!(
        pair.disk_url.starts_with("nbd://10.77.0.20:"),
        "{}",
        pair.disk_url
    );
    let b = pair.backup.log.text();
    assert!(live_as(&b, 2), "{b}");
    assert!(lab.tap_frames("B").unwrap() > 0, "B's TAP carried nothing");
}

/// Host A cut from everything (its uplink down) while K writes: B cannot hear A, wins the
/// generation in etcd on S and goes live; A, unable to reach etcd, never wins and its TAP
/// sends nothing after the cut; K's writes all land.
#[test]
fn in_the_lab_a_primary_cut_from_everything_is_replaced_and_stays_silent() {
    let _one = serial();
    let lab = Lab::up("ftvmt").unwrap();
    let pair = start_pair(&lab, "cut");
    let result = lab
        .in_host("K", || -> Result<(u64, u64)> {
            let mut w = client()?;
            w.write(50)?;
            lab.cut(&["A"])?;
            std::thread::sleep(Duration::from_millis(200));
            let at_cut = lab.tap_frames("A")?;
            w.write(100)?;
            w.check()?;
            std::thread::sleep(Duration::from_secs(1));
            let later = lab.tap_frames("A")?;
            ensure!(w.acked() == 150, "acked {}", w.acked());
            Ok((at_cut, later))
        })
        .unwrap();
    let (at_cut, later) = result.unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&pair)));
    assert_eq!(
        at_cut,
        later,
        "A's VM sent frames after the cut\n{}",
        logs(&pair)
    );
    let (a, b) = (pair.primary.log.text(), pair.backup.log.text());
    assert!(live_as(&b, 2), "{b}");
    assert!(
        !any(&a, |e| matches!(e, Event::ClaimWon { .. })),
        "the cut-off primary won:\n{a}"
    );
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child this test started and has not waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// A hung host: the primary's process on A is stopped (SIGSTOP) while K writes. B goes live;
/// when A wakes it loses the claim and halts, and its TAP sends nothing it held.
#[test]
fn in_the_lab_a_frozen_primary_is_replaced_and_halts_silently_when_it_wakes() {
    let _one = serial();
    let lab = Lab::up("ftvmt").unwrap();
    let mut pair = start_pair(&lab, "freeze");
    let (primary, backup_log) = (&pair.primary.child, &pair.backup.log);
    let result = lab
        .in_host("K", || -> Result<(u64, u64)> {
            let mut w = client()?;
            w.write(50)?;
            signal(primary, libc::SIGSTOP);
            let frozen = lab.tap_frames("A")?;
            w.write(100)?;
            ft_pair::wait_for("B live", Duration::from_secs(30), || {
                backup_log.has(|e| matches!(e, Event::Live { .. }))
            })?;
            signal(primary, libc::SIGCONT);
            std::thread::sleep(Duration::from_secs(2));
            w.write(10)?;
            w.check()?;
            Ok((frozen, lab.tap_frames("A")?))
        })
        .unwrap();
    let (frozen, after) = result.unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&pair)));
    assert_eq!(
        frozen,
        after,
        "the woken primary sent frames\n{}",
        logs(&pair)
    );
    assert_eq!(
        wait_exit(&mut pair.primary.child, 30).code(),
        Some(4),
        "{}",
        logs(&pair)
    );
    assert!(live_as(&pair.backup.log.text(), 2));
}

/// The A-B link cut while both still reach S: both claim the generation in etcd, exactly one
/// wins and goes on serving K, the other halts; K's writes all land.
#[test]
fn in_the_lab_a_cut_between_a_and_b_lets_exactly_one_go_on() {
    let _one = serial();
    let lab = Lab::up("ftvmt").unwrap();
    let mut pair = start_pair(&lab, "split");
    let acked = lab
        .in_host("K", || -> Result<(usize, u64)> {
            let mut w = client()?;
            w.write(50)?;
            lab.cut(&["A", "B"])?;
            std::thread::sleep(Duration::from_millis(100));
            let at_cut = lab.tap_frames("A")?;
            w.write(100)?;
            w.check()?;
            Ok((w.acked(), at_cut))
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&pair)));
    let (acked, a_at_cut) = acked;
    assert_eq!(acked, 150);
    let (a, b) = (pair.primary.log.text(), pair.backup.log.text());
    let a_won = any(&a, |e| matches!(e, Event::ClaimWon { generation: 1, .. }));
    let b_won = live_as(&b, 2);
    assert!(a_won != b_won, "{}", logs(&pair));
    let loser = if a_won {
        &mut pair.backup.child
    } else {
        &mut pair.primary.child
    };
    assert_eq!(wait_exit(loser, 30).code(), Some(4), "{}", logs(&pair));
    // The loser's TAP sends nothing after the cut: B's never opened, A's stands still.
    if a_won {
        assert_eq!(lab.tap_frames("B").unwrap(), 0, "{}", logs(&pair));
    } else {
        assert_eq!(lab.tap_frames("A").unwrap(), a_at_cut, "{}", logs(&pair));
    }
}

/// The storage host unreachable for a few seconds (no failover: the NBD client waits it out),
/// then the backup on B taking over after a kill, a spare on C cloned in from B while K
/// writes (redundancy back), and a second kill failing over to C: nothing lost.
#[test]
fn in_the_lab_storage_outage_then_failover_then_a_spare_restores_redundancy() {
    let _one = serial();
    let lab = Lab::up("ftvmt").unwrap();
    let mut pair = start_pair(&lab, "spare");
    let exe: &std::path::Path = env!("CARGO_BIN_EXE_ftvm").as_ref();
    let (mut spare, at) = pair.start_spare(exe, &lab, "C").unwrap();
    let backup_ctl = pair.backup.control.clone();
    let (primary, backup) = (&mut pair.primary.child, &mut pair.backup.child);
    let result = lab.in_host("K", || -> Result<usize> {
        let mut w = client()?;
        w.write(50)?;
        // Every write fsynced from now on: writes during the outage need the disk.
        let mut admin = guest_redis(Duration::from_secs(30))?;
        let r = admin.command(&["CONFIG", "SET", "appendfsync", "always"])?;
        ensure!(r == resp::Reply::Simple("OK".into()), "CONFIG SET: {r:?}");
        lab.cut(&["S"])?;
        let cut_at = Instant::now();
        // S comes back after 3 s whatever the client does: a write that needs the disk waits
        // for it (the VM's disk request is outstanding meanwhile).
        std::thread::scope(|s| -> Result<()> {
            let heal = s.spawn(|| {
                std::thread::sleep(Duration::from_secs(3));
                lab.script(&["heal", "S"])
            });
            let written = w.write(50);
            heal.join().expect("the healing thread")?;
            written
        })?;
        ensure!(
            cut_at.elapsed() >= Duration::from_secs(3),
            "50 fsynced writes went through while the disk's host was unreachable"
        );
        w.write(50)?;
        primary.kill()?;
        w.write(50)?;
        let clone = ftvm()
            .args(["ctl", "add-backup", "--socket"])
            .arg(&backup_ctl)
            .args(["--to", &at])
            .output()?;
        ensure!(
            clone.status.success(),
            "add-backup: {}",
            text(&clone.stderr)
        );
        w.write(50)?;
        backup.kill()?;
        w.write(50)?;
        w.check()?;
        Ok(w.acked())
    });
    let acked = result
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}\n{}\nC:\n{}", logs(&pair), spare.log.text()));
    assert_eq!(acked, 300);
    let c = spare.log.text();
    assert!(live_as(&c, 4) || live_as(&c, 3), "{c}");
    assert!(lab.tap_frames("C").unwrap() > 0);
    let _ = spare.child.kill();
    let _ = spare.child.wait();
}
