//! The backup's side: the log received into a buffer the replayer reads, acks back as bytes
//! arrive, and the primary's failure noticed.
//!
//! Acks say what the backup *holds*, not what it has replayed (§3: the primary must wait only
//! for the log to be safe on the backup, not for the backup to catch up). A reader thread fills
//! the inbox and acks what it stored; an acker thread sends a heartbeat ack when nothing was
//! acked for a heartbeat. What to ack, and when a silent primary counts as lost, are the pure
//! [`BackupRule`]'s decisions (the simulator runs the same rule), on the injected [`Clock`]'s
//! time. The replayer reads the inbox as an ordinary byte stream that ends when the primary is
//! declared lost and everything received has been consumed.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::Timing;
use crate::clock::Clock;
use crate::control::Control;
use crate::rule::{BackupRule, Bugs};
use crate::transport::{Connection, Transport};
use crate::wire::{Hello, ToBackup, ToPrimary, WireError};

/// Log held in memory beyond what the replayer has taken: past this the reader stops reading,
/// so TCP pushes back and the primary's outbox fills and stalls it, as the paper's primary
/// stalls when the backup's buffer is full. A primary cannot make the backup allocate more.
pub const INBOX_LIMIT: usize = 256 << 20;

struct InboxState {
    buf: VecDeque<u8>,
    /// What to ack and whether the primary is lost.
    rule: BackupRule,
    /// The newest ack sent.
    acked: u64,
    /// Why the primary counts as lost, and when.
    closed: Option<Lost>,
    /// The primary replaced this backup with another: stop, do not go live.
    retired: bool,
    /// The primary is moving there: when the log ends, reconnect.
    moved_to: Option<String>,
}

/// How a backup lost its primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub why: String,
    /// When the primary was declared lost.
    pub at: std::time::SystemTime,
    /// When the primary was last heard (a killed primary died soon after).
    pub last_heard: std::time::SystemTime,
}

struct Inbox {
    st: Mutex<InboxState>,
    cv: Condvar,
    /// The acker's own wake-up: only delayed acks (a test's) and the end need it, so the log's
    /// arrivals, which wake the replayer, do not wake the acker too.
    acker_cv: Condvar,
    limit: usize,
    clock: Arc<dyn Clock>,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self, why: String) {
        let mut st = self.lock();
        // The log is closed: what the backup may go live with is fixed.
        st.rule.channel_failed();
        if st.closed.is_none() {
            let at = std::time::SystemTime::now();
            let silent = self.clock.now().saturating_sub(st.rule.last_heard());
            st.closed = Some(Lost {
                why,
                at,
                last_heard: at.checked_sub(silent).unwrap_or(at),
            });
        }
        self.cv.notify_all();
        self.acker_cv.notify_all();
    }
}

/// The backup's end of the logging channel (clones share it).
#[derive(Clone)]
pub struct BackupLink {
    inbox: Arc<Inbox>,
    /// The pair's FT generation, from the primary's hello.
    pub generation: u64,
    /// The lock record's name, from the primary's hello.
    pub lock: String,
    /// The replayer stores its progress here; acks carry it to the primary.
    pub replayed: Arc<AtomicU64>,
}

/// Reads the primary's hello (failure detection's timeout applies from here on).
pub fn read_hello(stream: &mut dyn Transport, timing: Timing) -> Result<Hello, WireError> {
    stream.set_read_timeout(Some(timing.timeout))?;
    match ToBackup::read(&mut &mut *stream)? {
        ToBackup::Hello(hello) => Ok(hello),
        other => Err(WireError::Bad(format!(
            "expected a hello, got message {:?}",
            std::mem::discriminant(&other)
        ))),
    }
}

impl BackupLink {
    /// Starts the reader and acker threads on a channel whose hello (and clone, if any) was
    /// read.
    pub fn start(
        stream: Connection,
        hello: &Hello,
        timing: Timing,
        control: Arc<Control>,
        clock: Arc<dyn Clock>,
    ) -> Result<BackupLink, WireError> {
        Self::start_with_limit(stream, hello, timing, control, clock, INBOX_LIMIT)
    }

    fn start_with_limit(
        stream: Connection,
        hello: &Hello,
        timing: Timing,
        control: Arc<Control>,
        clock: Arc<dyn Clock>,
        limit: usize,
    ) -> Result<BackupLink, WireError> {
        stream.set_read_timeout(Some(timing.timeout))?;
        let (generation, lock) = (hello.generation, hello.lock.clone());
        let inbox = Arc::new(Inbox {
            st: Mutex::new(InboxState {
                buf: VecDeque::new(),
                rule: BackupRule::new(timing, clock.now(), Bugs::default()),
                acked: 0,
                closed: None,
                retired: false,
                moved_to: None,
            }),
            cv: Condvar::new(),
            acker_cv: Condvar::new(),
            limit,
            clock,
        });
        let replayed = Arc::new(AtomicU64::new(0));
        let tx = Arc::new(Mutex::new(stream.duplicate()?));
        let (i1, i2) = (inbox.clone(), inbox.clone());
        let (r1, r2) = (replayed.clone(), replayed.clone());
        let (t1, c1) = (tx.clone(), control.clone());
        std::thread::Builder::new()
            .name("log-reader".into())
            .spawn(move || reader(i1, stream, timing.timeout, t1, r1, c1))?;
        std::thread::Builder::new()
            .name("acker".into())
            .spawn(move || acker(i2, tx, r2, control))?;
        Ok(BackupLink {
            inbox,
            generation,
            lock,
            replayed,
        })
    }

    /// The log as a byte stream for the replayer.
    pub fn log(&self) -> InboxReader {
        InboxReader(self.inbox.clone())
    }

    /// Why and when the primary was declared lost, if it was.
    pub fn lost(&self) -> Option<Lost> {
        self.inbox.lock().closed.clone()
    }

    /// Where the primary said it moves, if it did.
    pub fn moved_to(&self) -> Option<String> {
        self.inbox.lock().moved_to.clone()
    }

    /// Whether the primary replaced this backup with another one.
    pub fn retired(&self) -> bool {
        self.inbox.lock().retired
    }

    /// Log bytes received so far.
    pub fn received(&self) -> u64 {
        self.inbox.lock().rule.received()
    }

    /// Messages received from the primary.
    pub fn messages(&self) -> u64 {
        self.inbox.lock().rule.messages()
    }
}

type Sender = Arc<Mutex<Connection>>;

fn send(tx: &Sender, msg: ToPrimary) -> io::Result<()> {
    msg.write(&mut *tx.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Receives the log; acks each message as soon as it is held (from this thread: a hop to
/// another would add a scheduling delay to every output the primary holds).
fn reader(
    inbox: Arc<Inbox>,
    mut stream: Connection,
    timeout: Duration,
    tx: Sender,
    replayed: Arc<AtomicU64>,
    control: Arc<Control>,
) {
    loop {
        match ToBackup::read(&mut stream) {
            Ok(ToBackup::Log(bytes)) => {
                let Some(ack) = store(&inbox, bytes) else {
                    break;
                };
                let delayed = control.ack_delay_ms.load(Ordering::Relaxed) != 0;
                if delayed {
                    inbox.acker_cv.notify_all();
                } else if let Some((received, heard)) = ack {
                    let ack = ToPrimary::Ack {
                        received,
                        replayed: replayed.load(Ordering::Relaxed),
                        heard,
                    };
                    if send(&tx, ack).is_err() {
                        inbox.close("acking the log failed".into());
                        break;
                    }
                    let mut st = inbox.lock();
                    st.acked = st.acked.max(received);
                }
            }
            Ok(ToBackup::Heartbeat) => {
                let now = inbox.clock.now();
                inbox.lock().rule.heard(now);
            }
            Ok(ToBackup::MovedTo(addr)) => {
                inbox.lock().moved_to = Some(addr).filter(|a| !a.is_empty());
            }
            Ok(ToBackup::Retire) => {
                inbox.lock().retired = true;
                inbox.close("the primary retired this backup (a new one replaced it)".into());
                break;
            }
            Ok(ToBackup::Hello(_) | ToBackup::Pages(_) | ToBackup::State(_)) => {
                inbox.close("a hello or clone data in the middle of the log".into());
                break;
            }
            Err(WireError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // The socket waited a whole timeout, so the rule (on its own clock) finds the
                // primary silent too; either way a read cut off mid-message cannot go on.
                let now = inbox.clock.now();
                let silent = inbox.lock().rule.primary_lost(now);
                inbox.close(if silent {
                    format!("no log or heartbeat for {} ms", timeout.as_millis())
                } else {
                    "the logging channel timed out in the middle of a message".into()
                });
                break;
            }
            Err(e) => {
                inbox.close(e.to_string());
                break;
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Holds `bytes` in the inbox once there is room: the ack the rule asks for (bytes held,
/// messages heard), or `None` if the log closed meanwhile (nothing more is taken then).
fn store(inbox: &Inbox, bytes: Vec<u8>) -> Option<Option<(u64, u64)>> {
    let mut st = inbox.lock();
    let early = st.rule.arriving(bytes.len(), inbox.clock.now());
    while !st.buf.is_empty() && st.buf.len() + bytes.len() > inbox.limit && st.closed.is_none() {
        st = inbox.cv.wait(st).unwrap_or_else(|e| e.into_inner());
    }
    if !st.rule.takes_log() {
        return None;
    }
    let ack = st.rule.stored(bytes.len(), inbox.clock.now());
    st.buf.extend(bytes);
    inbox.cv.notify_all();
    let heard = st.rule.messages();
    Some(ack.or(early).map(|received| (received, heard)))
}

/// Heartbeat acks when nothing was acked for a heartbeat, acks held back by a test's delay,
/// and a relayed power-off.
fn acker(inbox: Arc<Inbox>, tx: Sender, replayed: Arc<AtomicU64>, control: Arc<Control>) {
    // (when it arrived, bytes held by then), for delayed acks.
    let mut arrivals: VecDeque<(Duration, u64)> = VecDeque::new();
    let mut power_off_sent = false;
    loop {
        let delay = Duration::from_millis(control.ack_delay_ms.load(Ordering::Relaxed));
        let (received, acked, heartbeat, heard) = {
            let st = inbox.lock();
            let now = inbox.clock.now();
            let mut wait = st.rule.heartbeat_wait(now);
            if let Some(&(t, _)) = arrivals.front() {
                wait = wait.min((t + delay).saturating_sub(now));
            }
            let mut st = inbox
                .acker_cv
                .wait_timeout(st, wait.max(Duration::from_millis(1)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if st.closed.is_some() {
                return;
            }
            let heartbeat = st.rule.heartbeat_due(inbox.clock.now());
            (st.rule.received(), st.acked, heartbeat, st.rule.messages())
        };
        // Read after the wait: the delay may have changed meanwhile.
        let delay = Duration::from_millis(control.ack_delay_ms.load(Ordering::Relaxed));
        let now = inbox.clock.now();
        let mut due = if delay.is_zero() {
            heartbeat.unwrap_or(acked)
        } else {
            // A test holds acks back: a heartbeat carries only what is due.
            if received > acked && arrivals.back().is_none_or(|&(_, r)| r < received) {
                arrivals.push_back((now, received));
            }
            acked
        };
        while let Some(&(t, r)) = arrivals.front()
            && (t + delay <= now || delay.is_zero())
        {
            due = due.max(r);
            arrivals.pop_front();
        }
        if due > acked || heartbeat.is_some() {
            let ack = ToPrimary::Ack {
                received: due,
                replayed: replayed.load(Ordering::Relaxed),
                heard,
            };
            if send(&tx, ack).is_err() {
                return;
            }
            let mut st = inbox.lock();
            st.acked = st.acked.max(due);
        }
        if !power_off_sent && control.power_off_requested() {
            power_off_sent = true;
            if send(&tx, ToPrimary::PowerOff).is_err() {
                return;
            }
        }
    }
}

/// The received log as a byte stream: blocks for more, ends once the primary is lost and
/// everything received has been read. Memory is bounded by [`INBOX_LIMIT`].
pub struct InboxReader(Arc<Inbox>);

impl Read for InboxReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut st = self.0.lock();
        while st.buf.is_empty() && st.closed.is_none() {
            st = self.0.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let n = out.len().min(st.buf.len());
        let (a, b) = st.buf.as_slices();
        let from_a = n.min(a.len());
        out[..from_a].copy_from_slice(&a[..from_a]);
        out[from_a..n].copy_from_slice(&b[..n - from_a]);
        let was_full = st.buf.len() + crate::wire::MAX_MESSAGE > self.0.limit;
        st.buf.drain(..n);
        if was_full {
            // A reader held back by a full inbox may go on.
            self.0.cv.notify_all();
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    /// A primary of generation 1 that says hello, then does `then` on its end of the channel;
    /// and the backup's end. Over a Unix socket pair: the backup's link takes any transport.
    fn primary<T: Send + 'static>(
        then: impl FnOnce(UnixStream) -> T + Send + 'static,
    ) -> (std::thread::JoinHandle<T>, Connection) {
        let (mut s, backup) = UnixStream::pair().unwrap();
        let primary = std::thread::spawn(move || {
            ToBackup::Hello(Hello::paired(1, "vm"))
                .write(&mut s)
                .unwrap();
            then(s)
        });
        (primary, Box::new(backup))
    }

    /// A primary that streams faster than the backup consumes fills the inbox to its limit and
    /// no further; the rest waits in TCP (and, in a real primary, its outbox).
    #[test]
    fn a_full_inbox_pushes_back_instead_of_growing() {
        let (primary, mut s) = primary(|mut s| {
            for _ in 0..64 {
                ToBackup::Log(vec![7; 1 << 20]).write(&mut s).unwrap();
            }
            // Closing with unread acks would reset the connection: read them to the end.
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let _ = std::io::copy(&mut s, &mut std::io::sink());
        });
        let timing = Timing {
            heartbeat: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
        };
        let hello = read_hello(&mut *s, timing).unwrap();
        let link = BackupLink::start_with_limit(
            s,
            &hello,
            timing,
            Control::new(crate::Role::Backup, 0),
            crate::SystemClock::shared(),
            8 << 20,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let held = link.inbox.lock().buf.len();
        assert!(held <= 8 << 20, "{held} bytes held");
        assert!(link.received() <= 8 << 20);
        // Reading everything lets the rest in, and every byte arrives.
        let mut got = 0;
        let mut r = link.log();
        let mut buf = vec![0u8; 1 << 20];
        while got < 64 << 20 {
            let n = r.read(&mut buf).unwrap();
            assert!(n > 0);
            assert!(buf[..n].iter().all(|&b| b == 7));
            got += n;
        }
        primary.join().unwrap();
    }

    /// Acks say what is held as soon as it is held, heartbeats repeat it while the primary is
    /// idle, and a primary silent past the timeout counts as lost with its log closed.
    #[test]
    fn acks_follow_what_is_held_and_silence_closes_the_log() {
        let (primary, mut s) = primary(|mut s| {
            let mut acks = vec![];
            for len in [100, 50] {
                ToBackup::Log(vec![1; len]).write(&mut s).unwrap();
                acks.push(ToPrimary::read(&mut s).unwrap());
            }
            // Idle: the backup's heartbeat acks repeat what it holds.
            acks.push(ToPrimary::read(&mut s).unwrap());
            // Then silence until the backup gives up and hangs up.
            while ToPrimary::read(&mut s).is_ok() {}
            acks
        });
        let timing = Timing {
            heartbeat: Duration::from_millis(20),
            timeout: Duration::from_millis(300),
        };
        let hello = read_hello(&mut *s, timing).unwrap();
        let control = Control::new(crate::Role::Backup, 0);
        let link =
            BackupLink::start(s, &hello, timing, control, crate::SystemClock::shared()).unwrap();
        let acks = primary.join().unwrap();
        let received: Vec<u64> = acks
            .iter()
            .map(|a| match a {
                ToPrimary::Ack { received, .. } => *received,
                other => panic!("not an ack: {other:?}"),
            })
            .collect();
        assert_eq!(received, [100, 150, 150]);
        let why = link.lost().expect("the silent primary is lost").why;
        assert!(why.contains("no log or heartbeat for 300 ms"), "{why}");
        assert_eq!(link.received(), 150);
    }
}
