//! The logging channel admits only pinned hosts: what a stranger on the network can do to a
//! pair with real processes (`ftvm primary`/`backup`, real TCP) — connect without a key, with
//! a wrong key, or flip a bit on the path.

use std::io::{Read, Write};

use super::*;

fn keygen(path: &std::path::Path) {
    let out = ftvm()
        .arg("keygen")
        .arg("--out")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ftvm-public-key "),
        "{}",
        text(&out.stdout)
    );
}

fn refusals(log: &str) -> Vec<String> {
    events(log)
        .into_iter()
        .filter_map(|e| match e {
            Event::PeerRefused { why, .. } => Some(why),
            _ => None,
        })
        .collect()
}

#[test]
fn ft_without_keys_is_refused_unless_the_operator_says_insecure() {
    let dir = shared_dir("ft-no-keys");
    let out = ftvm()
        .args([
            "primary",
            "--listen",
            "127.0.0.1:0",
            "--firmware",
            "builtin",
        ])
        .arg("--shared-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("ftvm keygen") && err.contains("--insecure"),
        "{err}"
    );
    // A world-readable private key is refused too, saying how to fix it.
    let key = dir.join("loose.key");
    keygen(&key);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = ftvm()
        .args(["backup", "--connect", "127.0.0.1:1", "--shared-dir"])
        .arg(&dir)
        .arg("--key")
        .arg(&key)
        .arg("--peer-key")
        .arg(ftvm_ft::secure::public_path(&key))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("chmod 600"),
        "{}",
        text(&out.stderr)
    );
}

/// A primary with keys waits for its backup. First come a process that connects and says
/// nothing, one that sends bytes, an `ftvm backup --insecure`, and an `ftvm backup` with a key
/// the primary does not pin: each is refused before it gets a byte, the keyless ones are told
/// nothing, the wrong-key backup says clearly why it was refused. Then the real backup joins
/// and replays the boot to its power-off in lockstep.
#[test]
fn strangers_are_refused_and_the_pinned_backup_replays_the_boot() {
    guest_ready();
    let _one = serial();
    let dir = shared_dir("ft-strangers");
    let (primary, addr, log) = start_primary_logged(&dir);

    let mut silent = std::net::TcpStream::connect(&addr).unwrap();
    let mut got = Vec::new();
    let _ = silent.read_to_end(&mut got);
    assert!(got.is_empty(), "a silent peer was sent {got:?}");

    let mut chatty = std::net::TcpStream::connect(&addr).unwrap();
    let _ = chatty.write_all(&[0, 64]);
    let _ = chatty.write_all(&[0x55; 64]);
    let mut got = Vec::new();
    let _ = chatty.read_to_end(&mut got);
    assert!(got.is_empty(), "a keyless peer was sent {got:?}");

    let insecure = ftvm_json()
        .args([
            "backup",
            "--connect",
            &addr,
            "--insecure",
            "--patience",
            "10",
        ])
        .arg("--shared-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!insecure.status.success(), "{}", text(&insecure.stderr));
    assert!(
        !any(&text(&insecure.stderr), |e| matches!(
            e,
            Event::Replaying { .. }
        )),
        "an insecure backup replayed the VM"
    );

    let wrong = dir.join("wrong.key");
    keygen(&wrong);
    let intruder = ftvm_json()
        .args(["backup", "--connect", &addr, "--shared-dir"])
        .arg(&dir)
        .arg("--key")
        .arg(&wrong)
        .arg("--peer-key")
        .arg(dir.join("hosts.key.pub"))
        .output()
        .unwrap();
    let err = text(&intruder.stderr);
    assert!(!intruder.status.success(), "{err}");
    assert!(err.contains("does not pin this host's key"), "{err}");

    // The primary says so once the stranger is gone: give its line a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let refused = refusals(&log.lock().unwrap());
        if refused.len() >= 4 || Instant::now() > deadline {
            break refused;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(
        refused
            .iter()
            .any(|w| w.contains("not among the pinned peer keys")),
        "{refused:?}"
    );

    replay_to_poweroff(&dir, &addr, primary);
}

/// An attacker on the path flips one bit of what the backup sends (an ack) while a client
/// writes: the primary does not take it, the channel is torn down as a failed one, exactly one
/// side goes on, and every write the client saw acknowledged is there.
#[test]
fn a_flipped_bit_on_the_channel_is_a_channel_failure_and_nothing_is_lost() {
    let _one = serial();
    let (p, _) = a_channel_fault_lets_exactly_one_side_go_on("flip", |r| {
        r.flip.store(true, Ordering::Relaxed)
    });
    assert!(
        any(
            &p,
            |e| matches!(e, Event::BackupLost { why } if why.contains("failed authentication"))
        ),
        "the primary took a forged ack:\n{p}"
    );
}
