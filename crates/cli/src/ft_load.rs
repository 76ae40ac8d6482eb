//! Client loads around a failover, with every acknowledged write checked afterwards. Shared by
//! the end-to-end tests (which include this file) and `ftvm stress`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::ft_pair::Pair;
use crate::resp::{Redis, Reply, check_keys, server_run_id};

/// What the client does around the kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// `SET key:i i`, one at a time, each acknowledgement recorded.
    Sets,
    /// 64 SETs in flight at once (network-heavy).
    Pipelined,
    /// Every write fsynced by redis, with 16 KiB values beside the keys (disk-heavy).
    Disk,
    /// One SET, then nothing until after the kill.
    Idle,
    /// Sets with an AOF rewrite started just before the kill (a burst of disk writes).
    Rewrite,
}

pub const LOADS: [Load; 5] = [
    Load::Sets,
    Load::Pipelined,
    Load::Disk,
    Load::Idle,
    Load::Rewrite,
];

/// Writes under `load` on one connection, kills the primary (SIGKILL) after `kill_after`,
/// writes `after` more keys on the same connection, then checks that every acknowledged key
/// holds its value and that redis never restarted. Returns how many writes were acknowledged.
pub fn failover_under_load(
    pair: &mut Pair,
    load: Load,
    kill_after: Duration,
    after: usize,
) -> Result<usize> {
    let mut redis = Redis::connect(pair.forward_port, Duration::from_secs(30))?;
    let run_id = server_run_id(&mut redis)?;
    if load == Load::Disk {
        let r = redis.command(&["CONFIG", "SET", "appendfsync", "always"])?;
        ensure!(r == Reply::Simple("OK".into()), "CONFIG SET: {r:?}");
    }
    let blob = "x".repeat(16 << 10);
    let mut acked = Vec::new();
    let mut i = 0u64;
    let began = Instant::now();
    let mut killed = false;
    let mut since_kill = 0;
    while since_kill < after {
        if !killed && began.elapsed() >= kill_after {
            if load == Load::Rewrite {
                redis.command(&["BGREWRITEAOF"])?;
            }
            pair.primary
                .child
                .kill()
                .context("cannot kill the primary")?;
            killed = true;
        }
        if load == Load::Idle && !killed && i > 0 {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let batch = if load == Load::Pipelined { 64 } else { 1 };
        for k in i..i + batch {
            redis.send(&["SET", &format!("key:{k}"), &k.to_string()])?;
            if load == Load::Disk {
                redis.send(&["SET", &format!("blob:{k}"), &blob])?;
            }
        }
        for k in i..i + batch {
            let r = redis
                .reply()
                .with_context(|| format!("the connection broke at key {k}"))?;
            ensure!(r == Reply::Simple("OK".into()), "SET key:{k}: {r:?}");
            if load == Load::Disk {
                let r = redis.reply()?;
                ensure!(r == Reply::Simple("OK".into()), "SET blob:{k}: {r:?}");
            }
            acked.push(k);
            if killed {
                since_kill += 1;
            }
        }
        i += batch;
    }
    let missing = check_keys(&mut redis, &acked)?;
    ensure!(missing.is_empty(), "lost acknowledged keys {missing:?}");
    let now = server_run_id(&mut redis)?;
    ensure!(now == run_id, "redis restarted ({run_id} became {now})");
    Ok(acked.len())
}

/// Kills the primary `after` into the boot; the backup must go live, finish the boot and
/// serve a write and a read.
pub fn failover_during_boot(pair: &mut Pair, after: Duration) -> Result<()> {
    std::thread::sleep(after);
    pair.primary
        .child
        .kill()
        .context("cannot kill the primary")?;
    crate::resp::wait_for_redis(pair.forward_port, Duration::from_secs(300))?;
    let mut redis = Redis::connect(pair.forward_port, Duration::from_secs(30))?;
    let r = redis.command(&["SET", "after", "boot"])?;
    ensure!(r == Reply::Simple("OK".into()), "SET: {r:?}");
    let r = redis.command(&["GET", "after"])?;
    ensure!(r == Reply::Bulk(Some(b"boot".to_vec())), "GET: {r:?}");
    Ok(())
}
