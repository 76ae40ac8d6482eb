//! The bare-metal ISA test programs of `tests/isa/`, on ftvm and on QEMU.
//!
//! Each program checks its own results (the test device reports PASS or the failing check) and
//! prints every value it computed, so the outputs of ftvm, of QEMU and the recorded expected
//! output (taken from QEMU, the reference) must agree line for line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ftvm_machine::{Exit, Machine};

fn isa_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/isa")
}

/// Assembles and links one program; panics with the tool's message if that fails. Returns the
/// ELF's path and bytes. Tests run in parallel and two of them build the same program (its own
/// test and the QEMU check), so each build has a directory of its own.
fn build(name: &str) -> (PathBuf, Vec<u8>) {
    static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = isa_dir();
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("isa/{}-{n}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let obj = out.join(format!("{name}.o"));
    let elf = out.join(format!("{name}.elf"));
    let run = |cmd: &mut Command| {
        let o = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run {cmd:?}: {e}; run scripts/test.sh, which installs binutils-riscv64-linux-gnu")
        });
        assert!(
            o.status.success(),
            "{cmd:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(Command::new("riscv64-linux-gnu-as")
        .args(["-march=rv64gc", "-I"])
        .arg(&dir)
        .arg("-o")
        .arg(&obj)
        .arg(dir.join(format!("{name}.S"))));
    run(Command::new("riscv64-linux-gnu-ld")
        .arg("-T")
        .arg(dir.join("link.ld"))
        .args(["-nostdlib", "-o"])
        .arg(&elf)
        .arg(&obj));
    let bytes = std::fs::read(&elf).unwrap();
    (elf, bytes)
}

fn expected(name: &str) -> String {
    std::fs::read_to_string(isa_dir().join(format!("expected/{name}.out"))).unwrap()
}

fn on_ftvm(elf: &[u8]) -> (Exit, String) {
    let mut m = Machine::bare_metal(elf, 128 << 20).expect("loads");
    let out = m.run_to_end(200_000_000);
    (out.exit, String::from_utf8_lossy(&out.console).into_owned())
}

fn on_qemu(elf: &Path) -> String {
    let mut child = Command::new("qemu-system-riscv64")
        .args([
            "-M",
            "virt",
            "-m",
            "128M",
            "-nographic",
            "-bios",
            "none",
            "-kernel",
        ])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-riscv64 runs (scripts/test.sh installs qemu-system-misc)");
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("QEMU did not finish {} in 30 s", elf.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut s = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut s).unwrap();
    s
}

/// Shows where two outputs part.
fn assert_same(what: &str, got: &str, want: &str) {
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "{what}: output differs from line {}:\n  got:  {:?}\n  want: {:?}\n--- full output ---\n{got}",
            line + 1,
            got.lines().nth(line),
            want.lines().nth(line)
        );
    }
}

fn ftvm_program(name: &str) {
    let (_, elf) = build(name);
    let (exit, console) = on_ftvm(&elf);
    assert_same(name, &console, &expected(name));
    assert_eq!(exit, Exit::PowerOff(0), "{name} did not pass:\n{console}");
}

macro_rules! isa_tests {
    ($($name:ident),*) => {
        $(#[test] fn $name() { ftvm_program(stringify!($name)); })*

        /// Every program on QEMU gives the recorded output, which ftvm's tests compare against.
        #[test]
        fn qemu_agrees_with_the_expected_outputs() {
            for name in [$(stringify!($name)),*] {
                let (elf, _) = build(name);
                assert_same(&format!("{name} on QEMU"), &on_qemu(&elf), &expected(name));
            }
        }
    };
}

isa_tests!(rv64im, rv64a, rvc, traps, paging, fp);

#[test]
fn every_program_has_a_test() {
    let mut names: Vec<String> = std::fs::read_dir(isa_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".S").map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(names, ["fp", "paging", "rv64a", "rv64im", "rvc", "traps"]);
}
