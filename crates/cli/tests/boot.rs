//! End-to-end: the real `ftvm` binary boots Debian's riscv64 kernel with ftvm's initramfs.
//!
//! The default guest is fetched once (cached under the user's cache directory). Runs use the
//! virtual clock so that they are deterministic and need no input.

mod common;

use common::{MARKER, Session, ftvm, guest_ready, text, tmp};

use std::process::Output;

const POWEROFF: &str = "console=ttyS0 earlycon=sbi ftvm.init=poweroff";

fn run(args: &[&str]) -> Output {
    guest_ready();
    ftvm().arg("run").args(args).output().expect("run ftvm")
}

/// The `icount N state-hash H` line of a `--print-hash` run.
fn hash_line(out: &Output) -> String {
    let err = text(&out.stderr);
    err.lines()
        .find(|l| l.starts_with("icount "))
        .unwrap_or_else(|| panic!("no hash line in:\n{err}"))
        .to_string()
}

#[test]
fn boots_to_marker_and_powers_off_with_opensbi() {
    let out = run(&["--clock", "virtual", "--append", POWEROFF]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        stdout.contains("OpenSBI"),
        "OpenSBI banner missing:\n{stdout}"
    );
    assert!(stdout.contains(MARKER), "marker missing:\n{stdout}");
}

#[test]
fn boots_to_marker_and_powers_off_with_builtin_sbi() {
    let out = run(&[
        "--firmware",
        "builtin",
        "--clock",
        "virtual",
        "--append",
        POWEROFF,
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(!stdout.contains("OpenSBI"));
    assert!(stdout.contains(MARKER), "marker missing:\n{stdout}");
}

/// Half-way through the boot, well before the marker.
const MID_BOOT: &str = "60000000";
const LATER: &str = "90000000";

#[test]
fn same_inputs_give_the_same_state_hash() {
    let args = [
        "--firmware",
        "builtin",
        "--clock",
        "virtual",
        "--until",
        MID_BOOT,
        "--print-hash",
    ];
    let a = run(&args);
    let b = run(&args);
    assert!(a.status.success() && b.status.success());
    let (ha, hb) = (hash_line(&a), hash_line(&b));
    assert_eq!(ha, hb);
    assert!(ha.starts_with(&format!("icount {MID_BOOT} ")), "{ha}");
    assert_eq!(
        a.stdout, b.stdout,
        "console output differs between identical runs"
    );
}

#[test]
fn snapshot_mid_boot_continues_bit_identically() {
    let snap = tmp("mid-boot.snap");
    let base = ["--firmware", "builtin", "--clock", "virtual"];
    let save = run(&[
        &base[..],
        &[
            "--until",
            MID_BOOT,
            "--save-snapshot",
            snap.to_str().unwrap(),
        ],
    ]
    .concat());
    assert!(save.status.success(), "{}", text(&save.stderr));
    let direct = run(&[&base[..], &["--until", LATER, "--print-hash"]].concat());
    let resumed = run(&[
        "--clock",
        "virtual",
        "--snapshot",
        snap.to_str().unwrap(),
        "--until",
        LATER,
        "--print-hash",
    ]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_eq!(hash_line(&direct), hash_line(&resumed));
    // The resumed run prints exactly the console output the direct run printed after the cut.
    assert!(text(&direct.stdout).ends_with(&text(&resumed.stdout)));
}

#[test]
fn malformed_kernel_gets_a_clear_error() {
    let bad = tmp("not-a-kernel");
    std::fs::write(&bad, b"this is not a RISC-V Image").unwrap();
    let out = run(&["--kernel", bad.to_str().unwrap(), "--firmware", "builtin"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("kernel"), "{err}");
}

#[test]
fn malformed_initrd_gets_a_clear_error() {
    let bad = tmp("not-an-initrd");
    std::fs::write(&bad, b"garbage garbage garbage").unwrap();
    let out = run(&["--initrd", bad.to_str().unwrap(), "--firmware", "builtin"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("initrd"), "{err}");
}

#[test]
fn damaged_snapshot_gets_a_clear_error() {
    let snap = tmp("damaged.snap");
    let save = run(&[
        "--firmware",
        "builtin",
        "--clock",
        "virtual",
        "--until",
        "1000000",
        "--save-snapshot",
        snap.to_str().unwrap(),
    ]);
    assert!(save.status.success(), "{}", text(&save.stderr));
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&snap, &bytes).unwrap();
    let out = run(&["--snapshot", snap.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("corrupt"), "{err}");

    std::fs::write(&snap, &bytes[..100]).unwrap();
    let out = run(&["--snapshot", snap.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("snapshot"));
}

/// Floating point in a guest program: busybox awk computes in doubles (division, products,
/// conversions to integers, overflow to infinity) and prints them with 17 digits, enough to show
/// any difference in the last bit. The line is what QEMU prints for the same job on the same guest.
#[test]
fn a_floating_point_guest_job_prints_what_qemu_prints() {
    guest_ready();
    let mut s = Session::start(&["run", "--firmware", "builtin", "--clock", "virtual"]);
    s.wait_for_after(0, MARKER, 120);
    s.wait_for_after(0, "# ", 60);
    let out = s.command(
        "awk 'BEGIN { s = 0; t = 1; u = 0; for (i = 1; i <= 30000; i++) { s += 1 / i; \
         t = t * (1 + 1 / (i * i + 0.5)); u += int(i * 1000 / 7) / 3 - i / 9 } \
         printf \"%.17g %.17g %.17g %.17g %d\\n\", s, t, u, 1e300 * 1e10 / 3, int(-7.5) }'",
        "FP-JOB-DONE",
        300,
    );
    assert!(
        out.contains("\n10.886184992119929 2.9690593327872867 21379279761.66666 inf -7"),
        "the guest's floating point differs from QEMU's:\n{out}"
    );
    s.send("poweroff -f");
    assert!(s.wait(60).success());
}
