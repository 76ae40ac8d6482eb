//! The primary's side: the log streamed out, acks in, the Output Rule, losing the backup.
//!
//! [`FtPrimary`] is the run's observer. It records every input, output and checkpoint like any
//! recording, into a bounded in-memory outbox; an output's log goes out from the VM's own
//! thread when the socket takes it at once, else a sender thread streams it. The VM's thread
//! also reads the backup's acks between slices (the sender thread does while the guest idles),
//! so neither direction costs a thread hop per output. Outputs leave the VM (the runner holds
//! them) only when an ack covers the log byte that produced them. When the backup goes silent
//! for the failure timeout, the primary must win the tie-breaker's test-and-set before it
//! continues alone; if it loses, it is fenced and never shows another output.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ftvm_host::{Gate, Observer, RunEnd};
use ftvm_log::Writer;
use ftvm_machine::{Effect, InputEvent};
use ftvm_replay::Recorder;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::Timing;
use crate::clock::Clock;
use crate::control::{Control, DelayHistogram, Peer};
use crate::role::Claim;
use crate::rule::{Bugs, PrimaryPhase, PrimaryRule, Release};
use crate::tiebreak::TieBreaker;
use crate::transport::{Connection, Transport};
use crate::wire::{MAX_MESSAGE, ToBackup, ToPrimary, WireError};

/// Bytes the sender sends at once: big enough to fill the pipe, well under [`MAX_MESSAGE`].
const CHUNK: usize = 1 << 20;
/// Buffered log bytes worth sending without waiting for a flush.
const EAGER: usize = 64 << 10;

struct Outbox {
    buf: VecDeque<u8>,
    /// An output is waiting for these bytes: send now.
    flush: bool,
    acked: u64,
    backup_icount: u64,
    /// Whether the log still goes to this pair's backup.
    channel: Channel,
    /// The backup relayed an operator's power-off.
    power_off: bool,
    /// Time the recorder spent waiting for room in a full outbox.
    stalled: Duration,
    /// The channel carries the log now (after a live clone: once its last piece went out).
    /// Until then only the sender thread, which waits for the clone, may send.
    ready: bool,
    /// A new backup (after a live clone) confirmed it rebuilt the machine; always true for a
    /// backup that started from the same boot or snapshot.
    confirmed: bool,
    /// Messages (log pieces, heartbeats) sent on the channel.
    sent: u64,
    /// (messages sent by then, when) since the VM's thread last told its rule: what makes an
    /// ack fresh (see `rule`).
    sends: Vec<(u64, Duration)>,
    /// The most messages an ack said the backup heard.
    heard: u64,
}

/// The logging channel's life: open, then lost (it failed or went silent), then closed once
/// this side won the claim and runs alone, or was replaced by a new backup; log bytes go
/// nowhere after it is open. Only the first loss counts.
#[derive(Debug, Clone)]
enum Channel {
    Open,
    Lost(Arc<BackupLost>),
    Closed,
}

impl Channel {
    fn is_open(&self) -> bool {
        matches!(self, Channel::Open)
    }
}

struct Link {
    out: Mutex<Outbox>,
    /// Bytes to send (a flush, a full batch) or the end of the channel: what the sender waits
    /// for.
    to_send: Condvar,
    /// Acks, room in the outbox, a lost or finished channel: what the VM's thread waits for.
    progress: Condvar,
    capacity: usize,
    /// The channel's receiving half: whoever holds this lock reads (see [`Link::pump`]; lock
    /// order: `acks`, then `out`).
    acks: Mutex<AckReader>,
    timing: Timing,
    clock: Arc<dyn Clock>,
    /// The channel's sending half. Whoever sends holds this lock from taking bytes out of the
    /// outbox until they are written, so the log stays in order (lock order: `stream`, then
    /// `out`).
    stream: Mutex<Connection>,
}

/// The receiving half of the channel and what is half-read.
struct AckReader {
    stream: Connection,
    /// Bytes of a message not yet whole.
    buf: Vec<u8>,
    /// When the backup was last heard from (on the link's clock).
    heard: Duration,
    /// When the VM's thread last read (on the link's clock).
    vm_pumped: Duration,
    /// A live clone's ack reader, which owns the channel's input until it ends.
    clone_acks: Option<CloneThread>,
    /// The channel failed: nothing more to read.
    done: bool,
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the outbox now (a chunk of it at most).
    fn send_now(&self) {
        let stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        self.send_on(stream, |_, _| true);
    }

    /// Sends the outbox from the caller's thread if that cannot block: nobody else is sending,
    /// and the socket's send queue has room for it. False: left to the sender thread.
    fn send_without_blocking(&self) -> bool {
        let Ok(stream) = self.stream.try_lock() else {
            return false;
        };
        self.send_on(stream, |o, stream| o.ready && stream.has_room(o.buf.len()))
    }

    /// Takes up to a chunk out of the outbox and writes it on `stream`, whose lock the caller
    /// holds (so the log stays in order), if `may` allows it. False only when `may` did not.
    fn send_on(
        &self,
        mut stream: MutexGuard<'_, Connection>,
        may: impl FnOnce(&Outbox, &dyn Transport) -> bool,
    ) -> bool {
        let chunk: Vec<u8> = {
            let mut o = self.lock();
            if !o.channel.is_open() || o.buf.is_empty() {
                return true;
            }
            if !may(&o, &**stream) {
                return false;
            }
            let n = o.buf.len().min(CHUNK);
            let chunk = o.buf.drain(..n).collect();
            self.count_sent(&mut o);
            if o.buf.is_empty() {
                o.flush = false;
            }
            self.progress.notify_all();
            chunk
        };
        if let Err(e) = ToBackup::Log(chunk).write(&mut *stream) {
            drop(stream);
            self.lose(BackupLost::Send {
                what: "the log",
                error: e,
            });
        }
        true
    }

    /// One more message goes out (the caller holds the stream's lock, so the count keeps
    /// the channel's order), timed before it is written: an earlier time only shortens the
    /// lease.
    fn count_sent(&self, o: &mut Outbox) {
        o.sent += 1;
        let (sent, now, full) = (o.sent, self.clock.now(), o.sends.len() >= 4096);
        match o.sends.last_mut() {
            // A VM thread that does not come for them (it cannot be long: it gates between
            // slices) leaves one growing entry with its older time.
            Some(last) if full => last.0 = sent,
            _ => o.sends.push((sent, now)),
        }
    }

    fn lose(&self, why: BackupLost) {
        let mut o = self.lock();
        if o.channel.is_open() {
            o.channel = Channel::Lost(Arc::new(why));
        }
        self.to_send.notify_all();
        self.progress.notify_all();
    }

    /// Reads what the backup sent (acks, heartbeats, a relayed power-off), and counts the
    /// backup lost after `timeout` of silence; waits at most `wait` while the acks do not
    /// reach `want`. The VM's thread pumps between slices (`by_vm`), so an ack releases
    /// outputs without a thread hop; the sender thread pumps only when the VM's thread has
    /// not for a while (an idle guest), so a silent backup is noticed all the same.
    fn pump(&self, by_vm: bool, want: u64, wait: Duration) {
        let Ok(mut guard) = self.acks.try_lock() else {
            return;
        };
        let r = &mut *guard;
        if by_vm {
            r.vm_pumped = self.clock.now();
        } else if self.clock.now().saturating_sub(r.vm_pumped) < self.timing.heartbeat * 2 {
            return;
        }
        if r.done {
            return;
        }
        if let Some(t) = r.clone_acks.take() {
            // Until a live clone's last ack the clone's own thread reads the channel.
            if !t.is_finished() {
                r.clone_acks = Some(t);
                return;
            }
            if !after_clone(self, Some(t), "the new backup's clone") {
                r.done = true;
                return;
            }
            r.heard = self.clock.now();
            self.lock().confirmed = true;
        }
        let deadline = Instant::now() + wait;
        loop {
            let failed = match self.read_available(r) {
                Err(why) => Some(why),
                Ok(()) if self.timing.silent(r.heard, self.clock.now()) => {
                    Some(BackupLost::Silent(self.timing.timeout))
                }
                Ok(()) => None,
            };
            if let Some(why) = failed {
                self.lose(why);
                r.done = true;
                // Unblocks a sender stuck on a full socket.
                let _ = r.stream.shutdown(std::net::Shutdown::Both);
                return;
            }
            let now = Instant::now();
            {
                let o = self.lock();
                if now >= deadline || o.acked >= want || !o.channel.is_open() {
                    return;
                }
            }
            let since_heard = self.clock.now().saturating_sub(r.heard);
            let left = (deadline - now).min(self.timing.timeout.saturating_sub(since_heard));
            // poll counts whole milliseconds: a shorter wait would round to none and spin.
            let mut fds = [PollFd::new(r.stream.as_fd(), PollFlags::POLLIN)];
            let t = PollTimeout::try_from(left.max(Duration::from_micros(1000)))
                .unwrap_or(PollTimeout::MAX);
            let _ = poll(&mut fds, t);
        }
    }

    /// Takes the whole messages waiting in the socket, without blocking: at most 64 KiB a
    /// call, so a peer that floods the channel cannot keep the VM's thread here.
    fn read_available(&self, r: &mut AckReader) -> Result<(), BackupLost> {
        let mut chunk = [0u8; 4096];
        for _ in 0..16 {
            match r.stream.read_now(&mut chunk) {
                Ok(0) => return Err(BackupLost::Closed),
                Ok(n) => {
                    r.buf.extend_from_slice(&chunk[..n]);
                    r.heard = self.clock.now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(BackupLost::Channel(e)),
            }
        }
        let mut used = 0;
        let result = loop {
            match ToPrimary::split(&r.buf[used..]) {
                Ok(Some((msg, n))) => {
                    used += n;
                    if let Err(why) = self.take(msg) {
                        break Err(why);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(BackupLost::Bad(e)),
            }
        };
        r.buf.drain(..used);
        result
    }

    fn take(&self, msg: ToPrimary) -> Result<(), BackupLost> {
        match msg {
            ToPrimary::Ack {
                received,
                replayed,
                heard,
            } => {
                let mut o = self.lock();
                o.acked = o.acked.max(received);
                o.heard = o.heard.max(heard);
                o.backup_icount = o.backup_icount.max(replayed);
                self.progress.notify_all();
            }
            ToPrimary::PowerOff => {
                self.lock().power_off = true;
                self.progress.notify_all();
            }
            other @ (ToPrimary::CloneAck { .. } | ToPrimary::CloneDone) => {
                return Err(BackupLost::Unexpected(format!("{other:?}")));
            }
        }
        Ok(())
    }
}

/// The recorder's output: the outbox. It blocks only while the outbox is full (the primary
/// stalls, as the paper's does, rather than lose log entries).
pub struct LinkWriter(Arc<Link>);

impl Write for LinkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let link = &self.0;
        let mut o = link.lock();
        // Timed only when it waits: this runs for every record the VM's thread logs.
        let mut stalled_since = None;
        while o.channel.is_open() && !o.buf.is_empty() && o.buf.len() + bytes.len() > link.capacity
        {
            stalled_since.get_or_insert_with(Instant::now);
            o.flush = true;
            link.to_send.notify_all();
            o = link
                .progress
                .wait_timeout(o, link.timing.heartbeat)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            // Nobody else reads acks while the VM's thread waits here: a backup that stopped
            // reading must still be noticed (and the sender unblocked).
            drop(o);
            link.pump(true, 0, Duration::ZERO);
            o = link.lock();
        }
        if let Some(t) = stalled_since {
            o.stalled += t.elapsed();
        }
        // Once the backup is lost these bytes go nowhere: either this side wins and runs alone,
        // or it is fenced.
        if o.channel.is_open() {
            o.buf.extend(bytes);
            if o.buf.len() >= EAGER {
                link.to_send.notify_all();
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // An output waits for these bytes: sent from this thread (the VM's) when the socket
        // surely takes them at once, since a hop to the sender thread adds a scheduling delay
        // to every held output (on a busy 2-core host SET/s rose 7% by sending here). Else the
        // sender thread sends, so that the VM never blocks on a slow backup's full socket.
        if self.0.send_without_blocking() {
            return Ok(());
        }
        let mut o = self.0.lock();
        o.flush = true;
        self.0.to_send.notify_all();
        Ok(())
    }
}

fn sender(link: Arc<Link>, heartbeat: Duration) {
    let mut last_sent = Instant::now();
    loop {
        link.pump(false, 0, Duration::ZERO);
        let heartbeat_due = {
            let mut o = link.lock();
            loop {
                if !o.channel.is_open() {
                    return;
                }
                let idle = last_sent.elapsed();
                if !o.buf.is_empty() && (o.flush || o.buf.len() >= EAGER || idle >= heartbeat) {
                    break false;
                }
                if idle >= heartbeat {
                    break true;
                }
                o = link
                    .to_send
                    .wait_timeout(o, heartbeat - idle)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        if heartbeat_due {
            let mut stream = link.stream.lock().unwrap_or_else(|e| e.into_inner());
            link.count_sent(&mut link.lock());
            if let Err(e) = ToBackup::Heartbeat.write(&mut *stream) {
                drop(stream);
                link.lose(BackupLost::Send {
                    what: "a heartbeat",
                    error: e,
                });
                return;
            }
        } else {
            link.send_now();
        }
        last_sent = Instant::now();
    }
}

type CloneThread = std::thread::JoinHandle<io::Result<()>>;

/// Waits for a clone's thread to finish its part of the channel; false (and the backup lost)
/// if it failed.
fn after_clone(link: &Link, thread: Option<CloneThread>, what: &'static str) -> bool {
    let Some(t) = thread else { return true };
    match t.join() {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            link.lose(BackupLost::Clone { what, error });
            false
        }
        Err(_) => {
            link.lose(BackupLost::Clone {
                what,
                error: io::Error::other("its thread panicked"),
            });
            false
        }
    }
}

/// Why a primary counts its backup as lost: each one leads to the claim step.
#[derive(Debug, thiserror::Error)]
pub enum BackupLost {
    #[error("the backup closed the logging channel")]
    Closed,
    #[error("the logging channel failed: {0}")]
    Channel(io::Error),
    #[error("no ack or heartbeat for {} ms", .0.as_millis())]
    Silent(Duration),
    #[error("sending {what} failed: {error}")]
    Send {
        what: &'static str,
        error: io::Error,
    },
    #[error("{what} failed: {error}")]
    Clone {
        what: &'static str,
        error: io::Error,
    },
    #[error("a bad message from the backup: {0}")]
    Bad(#[from] WireError),
    #[error("unexpected {0} in the middle of the log")]
    Unexpected(String),
}

/// What the primary's side of the protocol is set to.
#[derive(Debug, Clone)]
pub struct PrimaryConfig {
    pub generation: u64,
    /// The lock record's name, sent to the backup.
    pub lock: String,
    /// Who this side is, as written in a lock record it wins.
    pub who: String,
    pub timing: Timing,
    /// Outbox size: the primary stalls only when this much log is unsent.
    pub buffer: usize,
    /// Execution lag beyond which the primary slows itself down.
    pub max_lag: Duration,
    pub checkpoint_interval: u64,
    /// Failure detection's and the Output Rule's time.
    pub clock: Arc<dyn Clock>,
    /// How the channels this VM opens (a live clone, a move) are sealed.
    pub security: crate::secure::Security,
}

/// The primary's observer: records to the logging channel, enforces the Output Rule, detects
/// the backup's failure and settles it with the tie-breaker.
pub struct FtPrimary {
    rec: Recorder<LinkWriter>,
    link: Arc<Link>,
    tb: Arc<dyn TieBreaker>,
    cfg: PrimaryConfig,
    control: Arc<Control>,
    /// The Output Rule and the claim's consequences: the same rule the simulator runs. The
    /// VM thread's own, so a decided phase (alone, fenced) needs no lock at each gate.
    rule: PrimaryRule,
    /// The newest ticket handed out: outputs wait for an ack this far.
    ticket: u64,
    started: Instant,
    /// (instruction count, when the primary was there), for the execution lag.
    samples: VecDeque<(u64, Instant)>,
    lag: Duration,
    throttle: f64,
    last_adjust: Instant,
    last_gate: Instant,
    /// Tickets handed out and not yet acked, with when: the Output Rule's added latency.
    waiting: VecDeque<(u64, Instant)>,
    /// The channel, for the runner to wait on (see `Observer::wake_fd`): acks make it readable.
    watch: Connection,
    delays: Delays,
    last_publish: Instant,
}

/// How long outputs waited for their ack: a histogram of 10 µs buckets up to 100 ms, so
/// percentiles cost nothing per output and little per status request.
struct Delays {
    counts: Vec<u64>,
    total: u64,
    sum_us: u64,
}

/// The bounds (ms) of the Output Rule delay histogram the status and metrics show.
const DELAY_BOUNDS_MS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0,
];

const DELAY_BUCKET_US: u64 = 10;
const DELAY_BUCKETS: usize = 10_000;

impl Delays {
    fn new() -> Delays {
        Delays {
            counts: vec![0; DELAY_BUCKETS + 1],
            total: 0,
            sum_us: 0,
        }
    }

    fn add(&mut self, d: Duration) {
        let us = d.as_micros() as u64;
        let b = (us / DELAY_BUCKET_US).min(DELAY_BUCKETS as u64) as usize;
        self.counts[b] += 1;
        self.total += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// The delays in Prometheus' shape: a bucket of 10 µs counts at a bound when all of it
    /// lies at or below the bound; the last bucket (100 ms and more) only in the total.
    fn histogram(&self) -> DelayHistogram {
        let mut cumulative = Vec::with_capacity(DELAY_BOUNDS_MS.len());
        let (mut seen, mut bucket) = (0u64, 0usize);
        for le in DELAY_BOUNDS_MS {
            let upto = ((le * 1000.0) as u64 / DELAY_BUCKET_US).min(DELAY_BUCKETS as u64) as usize;
            while bucket < upto {
                seen += self.counts[bucket];
                bucket += 1;
            }
            cumulative.push(seen);
        }
        DelayHistogram {
            le_ms: DELAY_BOUNDS_MS.to_vec(),
            cumulative,
            count: self.total,
            sum_ms: self.sum_us as f64 / 1000.0,
        }
    }

    /// The `q` quantile in milliseconds (upper edge of its bucket).
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let want = ((self.total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return ((i as u64 + 1) * DELAY_BUCKET_US) as f64 / 1000.0;
            }
        }
        (DELAY_BUCKETS as u64 * DELAY_BUCKET_US) as f64 / 1000.0
    }
}

impl FtPrimary {
    /// Starts streaming to the backup on `stream`: the hello, then the log from `header` on.
    pub fn start(
        mut stream: Connection,
        header: &ftvm_log::LogHeader,
        cfg: PrimaryConfig,
        tb: Arc<dyn TieBreaker>,
        control: Arc<Control>,
    ) -> io::Result<FtPrimary> {
        ToBackup::Hello(crate::wire::Hello::paired(cfg.generation, &cfg.lock))
            .write(&mut stream)?;
        Self::start_on(stream, None, header, cfg, tb, control)
    }

    /// Starts the log on the channel of a finished live clone: it goes out once the clone's
    /// last piece has, and acks are read once the backup said its machine is whole.
    pub fn start_after_clone(
        handoff: crate::clone::Handoff,
        header: &ftvm_log::LogHeader,
        cfg: PrimaryConfig,
        tb: Arc<dyn TieBreaker>,
        control: Arc<Control>,
    ) -> io::Result<FtPrimary> {
        let stream = handoff.stream.duplicate()?;
        Self::start_on(
            stream,
            Some((handoff.sender, handoff.acks)),
            header,
            cfg,
            tb,
            control,
        )
    }

    fn start_on(
        stream: Connection,
        after: Option<(CloneThread, CloneThread)>,
        header: &ftvm_log::LogHeader,
        cfg: PrimaryConfig,
        tb: Arc<dyn TieBreaker>,
        control: Arc<Control>,
    ) -> io::Result<FtPrimary> {
        let cloned = after.is_some();
        let (clone_sender, clone_acks) = match after {
            Some((s, a)) => (Some(s), Some(a)),
            None => (None, None),
        };
        let now = Instant::now();
        let clock_now = cfg.clock.now();
        let link = Arc::new(Link {
            out: Mutex::new(Outbox {
                buf: VecDeque::new(),
                flush: false,
                acked: 0,
                backup_icount: 0,
                channel: Channel::Open,
                power_off: false,
                stalled: Duration::ZERO,
                ready: !cloned,
                confirmed: !cloned,
                sent: 0,
                sends: Vec::new(),
                heard: 0,
            }),
            to_send: Condvar::new(),
            progress: Condvar::new(),
            capacity: cfg.buffer.max(MAX_MESSAGE),
            stream: Mutex::new(stream.duplicate()?),
            acks: Mutex::new(AckReader {
                stream: stream.duplicate()?,
                buf: Vec::new(),
                heard: clock_now,
                vm_pumped: clock_now,
                clone_acks,
                done: false,
            }),
            timing: cfg.timing,
            clock: cfg.clock.clone(),
        });
        let l1 = link.clone();
        let hb = cfg.timing.heartbeat;
        std::thread::Builder::new()
            .name("log-sender".into())
            .spawn(move || {
                if after_clone(&l1, clone_sender, "sending the clone") {
                    l1.lock().ready = true;
                    sender(l1, hb)
                }
            })?;
        let rule = PrimaryRule::paired(cfg.generation, cfg.timing, clock_now, Bugs::default());
        let writer = Writer::new(LinkWriter(link.clone()), header)?;
        let rec = Recorder::new(writer).with_checkpoint_interval(cfg.checkpoint_interval);
        Ok(FtPrimary {
            rec,
            link,
            tb,
            cfg,
            rule,
            control,
            ticket: 0,
            started: now,
            samples: VecDeque::new(),
            lag: Duration::ZERO,
            throttle: 0.0,
            last_adjust: now,
            last_gate: now,
            waiting: VecDeque::new(),
            watch: stream,
            delays: Delays::new(),
            // The first gate publishes: a guest that goes idle at once (a tickless kernel)
            // may not gate again for a while, and its status must not stay at the start.
            last_publish: now.checked_sub(Duration::from_secs(1)).unwrap_or(now),
        })
    }

    /// Whether the backup was lost and this side won: no log goes anywhere any more.
    /// Whether the backup holds the machine: a cloned one once it confirmed the clone.
    pub fn confirmed(&self) -> bool {
        self.link.lock().confirmed
    }

    pub fn is_alone(&self) -> bool {
        matches!(self.rule.phase(), PrimaryPhase::Alone { .. })
    }

    pub fn generation(&self) -> u64 {
        self.cfg.generation
    }

    /// Waits (at most `patience`) until the backup holds the log up to every output handed a
    /// ticket so far; false if it did not (lost or too slow).
    pub fn wait_acked(&mut self, patience: Duration) -> bool {
        let end = self.rec.barrier();
        let deadline = Instant::now() + patience;
        loop {
            {
                let o = self.link.lock();
                if o.acked >= end {
                    return true;
                }
                if !o.channel.is_open() || Instant::now() >= deadline {
                    return false;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            self.link
                .pump(true, end, left.min(Duration::from_millis(50)));
        }
    }

    /// Tells the backup that the primary moves to `addr` (reconnect there when the log ends);
    /// an empty `addr` cancels.
    pub fn send_moved_to(&self, addr: &str) {
        let mut stream = self.link.stream.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = ToBackup::MovedTo(addr.to_string()).write(&mut *stream) {
            drop(stream);
            self.link.lose(BackupLost::Send {
                what: "the move",
                error: e,
            });
        }
    }

    /// Replaced by a new backup: tells this one to stop (it would lose its test-and-set
    /// anyway: the caller took this generation's lock) and closes the channel.
    pub fn retire(self) {
        {
            let mut o = self.link.lock();
            o.channel = Channel::Closed;
        }
        self.link.to_send.notify_all();
        self.link.progress.notify_all();
        let mut stream = self.link.stream.lock().unwrap_or_else(|e| e.into_inner());
        let _ = ToBackup::Retire.write(&mut *stream);
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }

    /// Log bytes written so far.
    pub fn log_bytes(&self) -> u64 {
        self.rec.bytes()
    }

    /// Time the run spent waiting for room in the outbox.
    pub fn stalled(&self) -> Duration {
        self.link.lock().stalled
    }

    /// After the run: waits (at most `patience`) until the backup has the whole log, so that it
    /// sees the end record and stops rather than going live. True if it got it.
    pub fn finish(mut self, patience: Duration) -> bool {
        let end = self.rec.barrier();
        let deadline = Instant::now() + patience;
        loop {
            {
                let o = self.link.lock();
                if matches!(o.channel, Channel::Closed) || o.acked >= end {
                    return true;
                }
                if matches!(o.channel, Channel::Lost(_)) || Instant::now() >= deadline {
                    return false;
                }
            }
            self.link.pump(true, end, Duration::from_millis(50));
        }
    }

    /// Slows the primary when the backup's execution trails by more than `max_lag`, a few
    /// percent at a time, and lets it go again as the backup catches up (§5: a slow feedback
    /// loop, so the pair settles instead of oscillating).
    fn pace(&mut self, icount: u64, backup_icount: u64) {
        let now = Instant::now();
        if self
            .samples
            .back()
            .is_none_or(|(_, t)| now - *t >= Duration::from_millis(10))
        {
            self.samples.push_back((icount, now));
        }
        while self.samples.len() > 1 && self.samples[1].0 <= backup_icount {
            self.samples.pop_front();
        }
        self.lag = match self.samples.front() {
            Some(&(i, t)) if i <= backup_icount && backup_icount < icount => now - t,
            Some(&(i, t)) if i > backup_icount => now - t,
            _ => Duration::ZERO,
        };
        if now - self.last_adjust >= Duration::from_millis(100) {
            self.last_adjust = now;
            if self.lag > self.cfg.max_lag {
                self.throttle = (self.throttle + 0.05).min(0.9);
            } else if self.lag < self.cfg.max_lag / 2 {
                self.throttle = (self.throttle - 0.05).max(0.0);
            }
        }
        let ran = now - self.last_gate;
        if self.throttle > 0.0 {
            let pause = ran.mul_f64(self.throttle / (1.0 - self.throttle));
            std::thread::sleep(pause.min(Duration::from_millis(100)));
        }
        self.last_gate = Instant::now();
    }

    fn publish(&mut self, icount: u64, held: usize, backup_icount: u64) {
        let now = Instant::now();
        if now - self.last_publish < Duration::from_millis(50) {
            return;
        }
        self.last_publish = now;
        let (p50, p99, n) = (
            self.delays.quantile_ms(0.5),
            self.delays.quantile_ms(0.99),
            self.delays.total,
        );
        let bytes = self.rec.bytes();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let (lag, throttle) = (self.lag, self.throttle);
        let (messages, acked) = {
            let o = self.link.lock();
            (o.sent, o.acked)
        };
        let histogram = self.delays.histogram();
        self.control.update(|s| {
            s.log_messages = messages;
            s.log_acked_bytes = acked;
            s.output_delay = histogram;
            s.icount = icount;
            s.held_outputs = held;
            s.log_bytes = bytes;
            s.log_mbit_s = bytes as f64 * 8.0 / secs / 1e6;
            s.lag_ms = lag.as_secs_f64() * 1e3;
            s.throttle_pct = throttle * 100.0;
            s.peer = Peer::Backup {
                replayed: backup_icount,
            };
            s.output_delay_ms = [p50, p99];
            s.outputs_released = n;
        });
    }

    /// The backup is gone or cut off: continue alone only with the tie-breaker's say-so.
    fn settle(&mut self, why: &BackupLost) -> Gate {
        let Some(g) = self.rule.lose() else {
            // Decided already: only the first loss claims.
            return gate_of(self.rule.release(None, self.cfg.clock.now()));
        };
        debug_assert_eq!(g, self.cfg.generation);
        crate::event::emit(crate::event::Event::BackupLost {
            why: why.to_string(),
        });
        self.control.enter_primary_phase(self.rule.phase());
        let answer = crate::follow::claim_step(&*self.tb, g, &self.cfg.who);
        self.rule.claimed(&answer);
        self.control.enter_primary_phase(self.rule.phase());
        if let Claim::Won { .. } = answer {
            self.link.lock().channel = Channel::Closed;
            self.link.to_send.notify_all();
            self.link.progress.notify_all();
        }
        gate_of(self.rule.release(None, self.cfg.clock.now()))
    }
}

impl Observer for FtPrimary {
    fn input(&mut self, icount: u64, event: &InputEvent) {
        self.rec.input(icount, event)
    }

    fn effect(&mut self, effect: &Effect) {
        self.rec.effect(effect)
    }

    fn checkpoint_interval(&self) -> Option<u64> {
        self.rec.checkpoint_interval()
    }

    fn checkpoint(&mut self, icount: u64, hash: u128) {
        self.rec.checkpoint(icount, hash)
    }

    fn end(&mut self, icount: u64, how: RunEnd) {
        self.rec.end(icount, how)
    }

    fn output_barrier(&mut self) -> u64 {
        // Timed from before the flush: on loopback the ack can be back before it returns.
        let since = Instant::now();
        self.ticket = self.rec.barrier();
        if self.rule.logging() && self.waiting.back().is_none_or(|&(t, _)| t < self.ticket) {
            self.waiting.push_back((self.ticket, since));
        }
        self.ticket
    }

    fn stop_requested(&self) -> bool {
        self.control.power_off_requested() || self.link.lock().power_off
    }

    fn wake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(self.watch.as_fd())
    }

    fn gate(&mut self, icount: u64, held: usize, wait: Duration) -> Gate {
        if !self.rule.logging() {
            self.publish(icount, held, 0);
            return gate_of(self.rule.release(None, self.cfg.clock.now()));
        }
        // The acks that came meanwhile; with a wait, until they cover the newest ticket.
        self.link.pump(true, self.ticket, wait);
        let backup_icount = self.link.lock().backup_icount;
        self.pace(icount, backup_icount);
        self.publish(icount, held, backup_icount);
        let mut o = self.link.lock();
        if let Channel::Lost(why) = &o.channel {
            let why = why.clone();
            drop(o);
            return self.settle(&why);
        }
        let (acked, heard) = (o.acked, o.heard);
        let sends = std::mem::take(&mut o.sends);
        drop(o);
        let now = Instant::now();
        for (end, at) in sends {
            self.rule.sent(end, at);
        }
        self.rule.ack(acked, heard, self.cfg.clock.now());
        while let Some(&(t, since)) = self.waiting.front()
            && t <= acked
        {
            self.delays.add(now - since);
            self.waiting.pop_front();
        }
        gate_of(self.rule.release(None, self.cfg.clock.now()))
    }
}

/// The runner's gate for what the Output Rule lets out.
fn gate_of(release: Release) -> Gate {
    match release {
        // Tickets are log positions past the header: none is 0.
        Release::Hold => Gate::Release(0),
        Release::UpTo(acked) => Gate::Release(acked),
        Release::All => Gate::Release(u64::MAX),
        Release::Fenced => Gate::Fenced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_way_of_losing_the_backup_says_what_happened() {
        let cases = [
            (
                BackupLost::Silent(Duration::from_millis(300)),
                "no ack or heartbeat for 300 ms",
            ),
            (BackupLost::Closed, "the backup closed the logging channel"),
            (
                BackupLost::Send {
                    what: "a heartbeat",
                    error: io::Error::from(io::ErrorKind::BrokenPipe),
                },
                "sending a heartbeat failed: broken pipe",
            ),
            (
                BackupLost::Unexpected("CloneDone".into()),
                "unexpected CloneDone in the middle of the log",
            ),
        ];
        for (why, text) in cases {
            assert_eq!(why.to_string(), text);
        }
    }

    /// The primary's and the backup's drivers over a Unix socket pair (any transport does):
    /// an output waits until the backup holds the log that produced it.
    #[test]
    fn a_pair_over_a_unix_socket_releases_an_output_once_the_backup_holds_its_log() {
        use ftvm_machine::EffectKind;
        let (p, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tb: Arc<dyn TieBreaker> = Arc::new(crate::LockFile::new(dir.path(), "vm"));
        let cfg = PrimaryConfig {
            generation: 1,
            lock: "vm".into(),
            who: "primary".into(),
            timing: Timing::default(),
            buffer: 1 << 20,
            max_lag: Duration::from_secs(1),
            checkpoint_interval: 0,
            clock: crate::SystemClock::shared(),
            security: crate::secure::Security::Insecure,
        };
        let header = ftvm_log::LogHeader {
            start: ftvm_log::StartState::Transferred { icount: 0 },
            start_hash: 0,
            paths: vec![],
        };
        let control = Control::new(crate::Role::Primary, 0);
        let mut primary = FtPrimary::start(Box::new(p), &header, cfg, tb, control).unwrap();
        let mut b: Connection = Box::new(b);
        let hello = crate::backup::read_hello(&mut *b, Timing::default()).unwrap();
        assert_eq!(hello.generation, 1);
        let backup_control = Control::new(crate::Role::Backup, 0);
        let clock = crate::SystemClock::shared();
        let link =
            crate::BackupLink::start(b, &hello, Timing::default(), backup_control, clock).unwrap();
        primary.input(10, &InputEvent::ConsoleInput(b"ping".to_vec()));
        primary.effect(&Effect {
            icount: 20,
            kind: EffectKind::Console(b"pong".to_vec()),
        });
        let ticket = primary.output_barrier();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match primary.gate(20, 1, Duration::from_millis(50)) {
                Gate::Release(t) if t >= ticket => break,
                Gate::Release(_) => assert!(Instant::now() < deadline, "never released"),
                Gate::Fenced => panic!("fenced with a live backup"),
            }
        }
        assert!(
            link.received() >= ticket,
            "let out before the backup held it"
        );
    }
}
