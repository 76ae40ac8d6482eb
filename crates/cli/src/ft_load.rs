//! Client loads around a failover, with every acknowledged write checked afterwards. Shared by
//! the end-to-end tests (which include this file), `ftvm demo`, `ftvm bench ft` and
//! `ftvm stress`.

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

/// How the primary fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fail {
    /// SIGKILL: the process dies and the kernel closes its connections.
    Kill,
    /// SIGSTOP: a hung host; nothing closes, only the heartbeat timeout can tell.
    Freeze,
}

/// What the client saw as it happens (for a display).
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// This many writes are acknowledged so far.
    Acked(usize),
    /// The primary was failed after this many acknowledged writes.
    Failed(usize),
    /// The first reply after the failure came, for `key:N`.
    FirstReply(u64),
}

/// What the client saw across a failover (every acknowledged write was found afterwards).
#[derive(Clone, Debug)]
pub struct Failover {
    pub acked: usize,
    /// When the primary was failed, in Unix milliseconds (to set against the sides' stamps).
    pub failed_at_ms: u128,
    /// From the failure to the client's next reply.
    pub first_reply: Duration,
    /// The slowest reply of the run.
    pub slowest: Duration,
    /// The redis server's run id, the same before and after.
    pub run_id: String,
}

fn fail(pair: &mut Pair, how: Fail) -> Result<()> {
    match how {
        Fail::Kill => pair.primary.child.kill().context("cannot kill the primary"),
        Fail::Freeze => {
            // SAFETY: kill(2) on the primary's pid, a child this process started and has not
            // waited for, so the pid is still that child's.
            let r = unsafe { libc::kill(pair.primary.child.id() as i32, libc::SIGSTOP) };
            ensure!(r == 0, "cannot stop the primary");
            Ok(())
        }
    }
}

/// Writes under `load` on one connection, kills the primary (SIGKILL) after `kill_after`,
/// writes `after` more keys on the same connection, then checks that every acknowledged key
/// holds its value and that redis never restarted. Returns how many writes were acknowledged.
pub fn failover_under_load(
    pair: &mut Pair,
    load: Load,
    kill_after: Duration,
    after: usize,
) -> Result<usize> {
    failover_watched(pair, load, kill_after, after, Fail::Kill, &mut |_| {}).map(|f| f.acked)
}

/// [`failover_under_load`], failing the primary `how`, with `progress` told as it goes.
pub fn failover_watched(
    pair: &mut Pair,
    load: Load,
    kill_after: Duration,
    after: usize,
    how: Fail,
    progress: &mut dyn FnMut(Progress),
) -> Result<Failover> {
    let redis = Redis::connect(pair.forward_port, Duration::from_secs(30))?;
    failover_on(
        redis,
        load,
        kill_after,
        after,
        &mut || fail(pair, how),
        progress,
    )
}

/// [`failover_watched`] on the connection `redis`, failing the primary by `fail` (a pair
/// somewhere else: on the lab's hosts).
pub fn failover_on(
    mut redis: Redis,
    load: Load,
    kill_after: Duration,
    after: usize,
    fail: &mut dyn FnMut() -> Result<()>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Failover> {
    let run_id = server_run_id(&mut redis)?;
    if load == Load::Disk {
        let r = redis.command(&["CONFIG", "SET", "appendfsync", "always"])?;
        ensure!(r == Reply::Simple("OK".into()), "CONFIG SET: {r:?}");
    }
    let blob = "x".repeat(16 << 10);
    let mut acked = Vec::new();
    let mut i = 0u64;
    let began = Instant::now();
    let mut failed: Option<(Instant, u128)> = None;
    let mut first_reply = None;
    let mut slowest = Duration::ZERO;
    let mut since_kill = 0;
    while since_kill < after {
        if failed.is_none() && began.elapsed() >= kill_after {
            if load == Load::Rewrite {
                redis.command(&["BGREWRITEAOF"])?;
            }
            fail()?;
            failed = Some((Instant::now(), crate::ft_pair::unix_ms()));
            progress(Progress::Failed(acked.len()));
        }
        if load == Load::Idle && failed.is_none() && i > 0 {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let batch = if load == Load::Pipelined { 64 } else { 1 };
        let sent = Instant::now();
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
            slowest = slowest.max(sent.elapsed());
            acked.push(k);
            progress(Progress::Acked(acked.len()));
            if let Some((t, _)) = failed {
                if first_reply.is_none() {
                    first_reply = Some(t.elapsed());
                    progress(Progress::FirstReply(k));
                }
                since_kill += 1;
            }
        }
        i += batch;
    }
    let missing = check_keys(&mut redis, &acked)?;
    ensure!(missing.is_empty(), "lost acknowledged keys {missing:?}");
    let now = server_run_id(&mut redis)?;
    ensure!(now == run_id, "redis restarted ({run_id} became {now})");
    let (_, failed_at_ms) = failed.expect("failed before the loop ended");
    Ok(Failover {
        acked: acked.len(),
        failed_at_ms,
        first_reply: first_reply.expect("replies came after the failure"),
        slowest,
        run_id,
    })
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

/// One client connection writing `SET key:i i` one at a time, every acknowledgement kept, to
/// be checked at the end: the load around clones, migrations and repeated failovers.
pub struct Writer {
    redis: Redis,
    acked: Vec<u64>,
    next: u64,
    run_id: String,
}

impl Writer {
    pub fn connect(pair: &Pair) -> Result<Writer> {
        Self::on(Redis::connect(pair.forward_port, Duration::from_secs(30))?)
    }

    /// A writer on an open connection.
    pub fn on(mut redis: Redis) -> Result<Writer> {
        let run_id = server_run_id(&mut redis)?;
        Ok(Writer {
            redis,
            acked: Vec::new(),
            next: 0,
            run_id,
        })
    }

    /// Writes `n` more keys; each must be acknowledged.
    pub fn write(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            let k = self.next;
            let r = self
                .redis
                .command(&["SET", &format!("key:{k}"), &k.to_string()])
                .with_context(|| format!("the connection broke at key {k}"))?;
            ensure!(r == Reply::Simple("OK".into()), "SET key:{k}: {r:?}");
            self.acked.push(k);
            self.next += 1;
        }
        Ok(())
    }

    pub fn acked(&self) -> usize {
        self.acked.len()
    }

    /// Every acknowledged key holds its value, and redis never restarted.
    pub fn check(&mut self) -> Result<()> {
        let missing = check_keys(&mut self.redis, &self.acked)?;
        ensure!(missing.is_empty(), "lost acknowledged keys {missing:?}");
        let now = server_run_id(&mut self.redis)?;
        ensure!(
            now == self.run_id,
            "redis restarted ({} became {now})",
            self.run_id
        );
        Ok(())
    }
}

/// Kills the primary (SIGKILL) and writes `after` more keys on `w`'s connection, which must
/// survive; the backup is the pair's primary from the kill on.
pub fn kill_primary(pair: &mut Pair, w: &mut Writer, after: usize) -> Result<()> {
    pair.primary
        .child
        .kill()
        .context("cannot kill the primary")?;
    // The backup is the VM from here, so a caller's error report shows its log.
    pair.promote_backup();
    w.write(after)
}
