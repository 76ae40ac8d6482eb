//! The redis guest's root disk: an ext4 image (built with `mke2fs -d`) holding Debian's
//! riscv64 redis-server and redis-tools, the libraries they load, busybox, and an init that
//! brings the network up from the kernel command line and starts redis on all addresses.
//!
//! The disk boots through the default guest's kernel and initramfs: `ftvm.root=/dev/vda` makes
//! the initramfs switch to it. The image in the cache is pristine and checksummed; every VM
//! gets its own copy ([`copy_root_disk`]), since a guest writes to its disk.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::apt::{self, AptRoot};
use crate::manifest::{deb_checksums, sha256_file, write_atomic};
use crate::progress::Progress;
use crate::{FetchOptions, GuestFiles, ImageError, ensure_default_guest, host_mirror};

/// What the disk's init prints once redis answers: tests and benchmarks wait for it.
pub const REDIS_MARKER: &str = "FTVM-REDIS-READY";
/// The port redis listens on in the guest.
pub const REDIS_PORT: u16 = 6379;
/// The kernel command line that boots the redis disk (with the guest's address and gateway).
pub const REDIS_APPEND: &str =
    "console=ttyS0 earlycon=sbi ftvm.root=/dev/vda ftvm.ip=10.0.2.15/24 ftvm.gw=10.0.2.2";
/// The guest address in [`REDIS_APPEND`].
pub const REDIS_GUEST_IP: &str = "10.0.2.15";

const DISK: &str = "redis-root.img";
const DISK_MANIFEST: &str = "redis-root.json";
/// Bumped when the disk's recipe (packages, init, size) changes: an older disk is rebuilt.
const DISK_LAYOUT: u32 = 1;
/// Room for redis's data and append-only file beside ~40 MiB of programs.
const DISK_SIZE: &str = "256M";
/// The packages the disk is built from; their library dependencies are added.
const ROOTS: &[&str] = &["redis-tools", "redis-server", "busybox-static"];

/// The redis guest: the default guest's kernel, initramfs and firmware, and the pristine disk.
#[derive(Debug, Clone)]
pub struct RedisGuest {
    pub base: GuestFiles,
    /// The cached, checksummed root disk. Boot copies of it, never the file itself.
    pub root_disk: PathBuf,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct DiskManifest {
    layout: u32,
    sha256: String,
    /// .deb file name -> sha256, the packages the disk holds.
    debs: BTreeMap<String, String>,
}

/// The redis guest, building its root disk on first use.
pub fn ensure_redis_guest(opts: &FetchOptions) -> Result<RedisGuest, ImageError> {
    let base = ensure_default_guest(&FetchOptions {
        force: false,
        ..opts.clone()
    })?;
    let dir = base
        .kernel
        .parent()
        .expect("the kernel lives in the guest's directory")
        .to_path_buf();
    let lock_path = opts.cache_dir.join("lock");
    let lock_file = std::fs::File::create(&lock_path).map_err(|e| ImageError::io(&lock_path, e))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| ImageError::io(&lock_path, e.into()))?;

    let disk = dir.join(DISK);
    let mut p = Progress::new(opts.progress);
    if !opts.force {
        match verify(&dir) {
            Ok(()) => {
                return Ok(RedisGuest {
                    base,
                    root_disk: disk,
                });
            }
            Err(None) => p.note("ftvm: building the redis guest's root disk (first use)"),
            Err(Some(why)) => p.note(&format!(
                "ftvm: the cached redis disk is unusable ({why}); rebuilding it"
            )),
        }
    }
    let apt = AptRoot::new(&opts.cache_dir.join("apt-riscv64"))?;
    let mirror = host_mirror()?;
    p.step(&format!("apt update ({mirror}, riscv64)"), || {
        apt.update(&mirror)
    })?;
    let packages = apt.library_closure(ROOTS)?;
    let names: Vec<&str> = packages.iter().map(String::as_str).collect();
    let debs = p.step(&format!("download {} packages", names.len()), || {
        apt.download(&names)
    })?;
    let work = opts.cache_dir.join("unpack-redis");
    let built = p.step("build the ext4 root disk (mke2fs -d)", || {
        build_disk(&debs, &work, &disk)
    });
    let _ = std::fs::remove_dir_all(&work);
    built?;
    let manifest = DiskManifest {
        layout: DISK_LAYOUT,
        sha256: sha256_file(&disk)?,
        debs: deb_checksums(&debs)?,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");
    write_atomic(&dir.join(DISK_MANIFEST), &json)?;
    p.note(&format!("ftvm: redis root disk ready: {}", disk.display()));
    Ok(RedisGuest {
        base,
        root_disk: disk,
    })
}

/// `Err(None)`: no disk built yet; `Err(Some(why))`: one is there but unusable.
fn verify(dir: &Path) -> Result<(), Option<String>> {
    let path = dir.join(DISK_MANIFEST);
    let bytes = std::fs::read(&path).map_err(|_| None)?;
    let m: DiskManifest =
        serde_json::from_slice(&bytes).map_err(|e| Some(format!("{}: {e}", path.display())))?;
    if m.layout != DISK_LAYOUT {
        return Err(Some(format!(
            "built by another ftvm version (layout {}, this one builds {DISK_LAYOUT})",
            m.layout
        )));
    }
    let got = sha256_file(&dir.join(DISK)).map_err(|e| Some(e.to_string()))?;
    if got != m.sha256 {
        return Err(Some(format!("{DISK} does not match its checksum")));
    }
    Ok(())
}

/// Copies the pristine root disk to `to` (a VM's own disk), keeping it sparse.
pub fn copy_root_disk(guest: &RedisGuest, to: &Path) -> Result<(), ImageError> {
    copy_sparse(&guest.root_disk, to)
}

/// Copies a disk image, keeping its holes (a VM's disk copied from another, e.g. one saved
/// beside a snapshot).
pub fn copy_sparse(from: &Path, to: &Path) -> Result<(), ImageError> {
    // `cp --sparse=always`: std::fs::copy may fill the holes, turning 40 MiB into 256.
    let out = Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .output()
        .map_err(|e| ImageError::Tool("cp".into(), e.to_string()))?;
    if !out.status.success() {
        return Err(ImageError::Tool(
            "cp".into(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Unpacks the packages into a merged-/usr tree, adds the init and the files redis needs, and
/// makes the ext4 image from it.
fn build_disk(debs: &[PathBuf], work: &Path, disk: &Path) -> Result<(), ImageError> {
    let _ = std::fs::remove_dir_all(work);
    let tree = work.join("root");
    for dir in ["usr/bin", "usr/sbin", "usr/lib"] {
        mkdir(&tree.join(dir))?;
    }
    // Debian's merged /usr: /bin, /sbin and /lib are links into /usr. Some packages still ship
    // files under the old paths; unpack each separately and fold those into /usr.
    for deb in debs {
        let one = work.join("deb");
        let _ = std::fs::remove_dir_all(&one);
        apt::extract(deb, &one)?;
        merge_into(&one, &tree)?;
        let _ = std::fs::remove_dir_all(&one);
    }
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")] {
        symlink(target, &tree.join(link))?;
    }
    for dir in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "root",
        "etc",
        "var/lib/redis",
        "var/log",
    ] {
        mkdir(&tree.join(dir))?;
    }
    let files: [(&str, &str, u32); 5] = [
        ("usr/sbin/ftvm-init", &init_script(), 0o755),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ("etc/group", "root:x:0:\n", 0o644),
        ("etc/hostname", "ftvm-redis\n", 0o644),
        ("etc/hosts", "127.0.0.1 localhost ftvm-redis\n", 0o644),
    ];
    for (path, text, mode) in files {
        let path = tree.join(path);
        std::fs::write(&path, text).map_err(|e| ImageError::io(&path, e))?;
        set_mode(&path, mode)?;
    }
    if !tree.join("usr/bin/redis-check-rdb").exists() || !tree.join("usr/bin/busybox").exists() {
        return Err(ImageError::Build(
            "the packages hold no redis-server or busybox binary".into(),
        ));
    }

    let mut tmp = disk.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    // A fixed UUID, hash seed and clock make the same packages give the same image bytes.
    let out = Command::new("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args(["-q", "-F", "-t", "ext4", "-L", "ftvm-redis"])
        .args(["-U", "6674766d-7265-6469-732d-726f6f746673"])
        .args([
            "-E",
            "root_owner=0:0,hash_seed=6674766d-7265-6469-732d-726f6f746673",
        ])
        .arg("-d")
        .arg(&tree)
        .arg(&tmp)
        .arg(DISK_SIZE)
        .output()
        .map_err(|e| {
            ImageError::Tool(
                "mke2fs".into(),
                format!("{e} (install e2fsprogs to build the redis guest)"),
            )
        })?;
    if !out.status.success() {
        return Err(ImageError::Tool(
            "mke2fs".into(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    std::fs::rename(&tmp, disk).map_err(|e| ImageError::io(disk, e))
}

fn mkdir(path: &Path) -> Result<(), ImageError> {
    std::fs::create_dir_all(path).map_err(|e| ImageError::io(path, e))
}

fn symlink(target: &str, link: &Path) -> Result<(), ImageError> {
    std::os::unix::fs::symlink(target, link).map_err(|e| ImageError::io(link, e))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ImageError::io(path, e))
}

/// Moves everything under `from` into `tree`, with `bin`, `sbin` and `lib` redirected into
/// `usr/`; documentation is left out.
fn merge_into(from: &Path, tree: &Path) -> Result<(), ImageError> {
    let mut queue = VecDeque::from([PathBuf::new()]);
    while let Some(rel) = queue.pop_front() {
        let dir = from.join(&rel);
        let entries = std::fs::read_dir(&dir).map_err(|e| ImageError::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::io(&dir, e))?;
            let rel = rel.join(entry.file_name());
            if rel.starts_with("usr/share/doc") || rel.starts_with("usr/share/man") {
                continue;
            }
            let src = from.join(&rel);
            let dst = tree.join(usr_merged(&rel));
            let meta = std::fs::symlink_metadata(&src).map_err(|e| ImageError::io(&src, e))?;
            if meta.is_dir() {
                mkdir(&dst)?;
                queue.push_back(rel);
            } else {
                if let Some(parent) = dst.parent() {
                    mkdir(parent)?;
                }
                let _ = std::fs::remove_file(&dst);
                std::fs::rename(&src, &dst).map_err(|e| ImageError::io(&dst, e))?;
            }
        }
    }
    Ok(())
}

fn usr_merged(rel: &Path) -> PathBuf {
    match rel.components().next().and_then(|c| c.as_os_str().to_str()) {
        Some("bin" | "sbin" | "lib") => Path::new("usr").join(rel),
        _ => rel.to_path_buf(),
    }
}

/// The disk's init (PID 1 after the initramfs switches root).
fn init_script() -> String {
    format!(
        r#"#!/bin/busybox sh
# ftvm redis guest init: network from the kernel command line (ftvm.ip=ADDR/PREFIX, ftvm.gw=ADDR),
# redis on all addresses with an append-only file, a shell on the console. A poweroff (or the
# shell exiting) shuts redis down cleanly, so its data is on the disk, then powers off.
/bin/busybox mount -t tmpfs -o mode=0755 tmpfs /run
/bin/busybox mkdir -p /run/bin
/bin/busybox --install -s /run/bin
export PATH=/usr/sbin:/usr/bin:/run/bin
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts 2>/dev/null
hostname ftvm-redis
cmdline=" $(cat /proc/cmdline) "
arg() {{ echo "$cmdline" | sed -n "s/.* $1=\([^ ]*\) .*/\1/p"; }}
addr=$(arg ftvm.ip)
gw=$(arg ftvm.gw)
ip link set lo up
if [ -n "$addr" ] && ip link show eth0 >/dev/null 2>&1; then
  ip addr add "$addr" dev eth0
  ip link set eth0 up
  [ -n "$gw" ] && ip route add default via "$gw"
fi
redis-server --bind '0.0.0.0' --protected-mode no --port {port} --daemonize yes \
  --dir /var/lib/redis --appendonly yes --appendfsync everysec \
  --logfile /var/log/redis.log
n=0
until redis-cli -p {port} ping 2>/dev/null | grep -q PONG; do
  n=$((n + 1))
  if [ $n -gt 300 ]; then echo "ftvm-init: redis did not start:"; cat /var/log/redis.log; break; fi
  sleep 0.1
done
echo {marker}
stop() {{
  redis-cli -p {port} shutdown >/dev/null 2>&1
  sync
  mount -o remount,ro / 2>/dev/null
  poweroff -f
}}
# busybox poweroff, halt and reboot signal PID 1 with USR2, USR1 and TERM.
trap stop USR1 USR2 TERM
cd /root
HOME=/root setsid cttyhack sh -l &
shell=$!
while kill -0 $shell 2>/dev/null; do wait $shell; done
stop
"#,
        port = REDIS_PORT,
        marker = REDIS_MARKER,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_sbin_and_lib_fold_into_usr() {
        assert_eq!(
            usr_merged(Path::new("bin/busybox")),
            Path::new("usr/bin/busybox")
        );
        assert_eq!(
            usr_merged(Path::new("lib/riscv64-linux-gnu/libc.so.6")),
            Path::new("usr/lib/riscv64-linux-gnu/libc.so.6")
        );
        assert_eq!(usr_merged(Path::new("etc/x")), Path::new("etc/x"));
        assert_eq!(usr_merged(Path::new("library")), Path::new("library"));
    }

    #[test]
    fn init_brings_up_the_network_and_redis_then_the_marker() {
        let s = init_script();
        let net = s.find("ip addr add").unwrap();
        let redis = s.find("redis-server --bind").unwrap();
        let marker = s.find(REDIS_MARKER).unwrap();
        assert!(net < redis && redis < marker);
        assert!(s.contains("trap stop USR1 USR2 TERM"));
    }
}
