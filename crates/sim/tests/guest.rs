//! The kept guest ELF is what `guest/kv.S` assembles to.

use std::path::Path;
use std::process::Command;

#[test]
fn the_kept_guest_is_built_from_its_source() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sim-guest");
    std::fs::create_dir_all(&out).unwrap();
    let run = |cmd: &mut Command| {
        let o = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run {cmd:?}: {e}; scripts/test.sh installs binutils-riscv64-linux-gnu")
        });
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(Command::new("riscv64-linux-gnu-as")
        .args(["-march=rv64gc", "-o"])
        .arg(out.join("kv.o"))
        .arg(dir.join("kv.S")));
    run(Command::new("riscv64-linux-gnu-ld")
        .arg("-T")
        .arg(dir.join("../../../tests/isa/link.ld"))
        .args(["-nostdlib", "--build-id=none", "--strip-all", "-o"])
        .arg(out.join("kv.elf"))
        .arg(out.join("kv.o")));
    let built = std::fs::read(out.join("kv.elf")).unwrap();
    assert!(
        built == ftvm_sim::KV_ELF,
        "crates/sim/guest/kv.elf is stale: copy {} there",
        out.join("kv.elf").display()
    );
}
