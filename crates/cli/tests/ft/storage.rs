//! The shared disk on a storage host: the redis guest's disk served over NBD (`qemu-nbd`), the
//! tie-breaker in etcd, as when primary and backup share no directory.

use super::*;

#[test]
fn a_failover_on_an_nbd_disk_with_etcd_keeps_every_write() {
    let _one = serial();
    let etcd = ftvm_ft::PrivateEtcd::start().unwrap();
    let mut spec = spec_ready("nbd");
    spec.nbd = true;
    spec.ft_args.extend(["--etcd".into(), etcd.addr.clone()]);
    let mut pair = start(&spec);
    let n = ft_load::failover_under_load(&mut pair, Load::Sets, Duration::from_millis(500), 200)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", pair.all_logs()));
    let log = pair.backup().log.text();
    assert!(live_as(&log, 2), "{log}");
    let live = events(&log)
        .into_iter()
        .find_map(|e| match e {
            Event::Live { disks, .. } => Some(disks),
            _ => None,
        })
        .unwrap();
    assert_eq!(live, 1, "the NBD disk is attached at go-live");
    eprintln!("nbd: {n} acknowledged writes kept across the failover");
}

#[test]
fn an_nbd_disk_without_etcd_is_refused_with_the_reason() {
    let out = ftvm()
        .args(["backup", "--connect", "127.0.0.1:1", "--insecure"])
        .args(["--disk", "nbd://127.0.0.1:1/redis"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("no test-and-set") && err.contains("--etcd"),
        "{err}"
    );
}
