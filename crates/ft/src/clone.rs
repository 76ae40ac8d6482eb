//! Live clone: a running VM copied into a new backup (the paper's FT VMotion, §3.1 and §6).
//!
//! The primary keeps running while its RAM goes to the new backup in rounds: each round sends
//! the pages written since the previous one (the machine's own dirty tracking, CPU stores and
//! device writes alike), so rounds shrink while the guest's working set settles. When what is
//! left is small, the primary stops between two instructions, sends the last dirty pages and
//! its CPU and device state, and goes on with the logging channel attached at exactly that
//! instruction: the log that follows starts from the state the backup now holds, and the
//! backup checks that its rebuilt machine has the state hash the log header names.
//!
//! Threads: the VM's thread copies pages (a bounded number per slice, so the guest keeps
//! running at close to full speed) into batches for a sender thread that compresses (zstd)
//! and writes them; an ack thread reads the receiver's progress, which doubles as its
//! heartbeat. Queue and batches are bounded. A clone that fails before its last piece leaves
//! the primary as it was; the receiver never goes live without a whole machine.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ftvm_machine::transfer::PAGE_RECORD;
use ftvm_machine::{Incoming, Machine};
use thiserror::Error;

use crate::Timing;
use crate::wire::{ToBackup, ToPrimary, WireError};

/// Pages per message: 1 MiB before compression, well under the message limit.
pub const BATCH_PAGES: usize = 256;
/// The longest the VM's thread copies between two slices. A busy guest's slices come every
/// fraction of a millisecond, so the share below is what bounds it there; an idle guest's come
/// only when it wakes, and this lets each of them copy a good run of pages.
const COPY_PER_SLICE: Duration = Duration::from_micros(500);
/// Pages copied between two looks at the clock.
const PAGES_PER_LOOK: usize = 32;
/// The share of the VM thread's time a clone may take: the guest keeps most of its speed, and
/// a 256 MiB guest is still copied in well under a second.
const COPY_SHARE: f64 = 0.25;
/// Batches between the VM's thread and the sender: the memory a clone may hold (16 MiB).
const QUEUE: usize = 16;
/// Dirty pages few enough to send with the machine paused (4 MiB: a millisecond of copying).
const FINAL_PAGES: usize = 1024;
/// Rounds after which the clone ends even if the guest writes faster than the rounds shrink.
const MAX_ROUNDS: u32 = 30;

#[derive(Debug, Error)]
pub enum CloneError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the clone's data is bad: {0}")]
    Bad(String),
}

/// How far a clone got (for status and messages).
#[derive(Debug, Clone, Default)]
pub struct CloneProgress {
    pub round: u32,
    /// Page records copied out of the VM (pages written again are sent again).
    pub pages_copied: u64,
    /// Page records the receiver holds.
    pub pages_acked: u64,
    /// Compressed bytes sent.
    pub bytes_sent: u64,
    /// Pages still to send at the end of the last round.
    pub dirty_left: usize,
}

impl CloneProgress {
    /// The clone's figures once it ended, paused `paused` at the switch, for its event.
    pub fn summary(&self, paused: Duration) -> crate::event::CloneSummary {
        crate::event::CloneSummary {
            rounds: u64::from(self.round) + 1,
            pages: self.pages_copied,
            sent_mib: self.bytes_sent as f64 / (1 << 20) as f64,
            paused_ms: paused.as_secs_f64() * 1e3,
        }
    }
}

/// Why a clone stopped before the new backup held the whole machine. A clone is cheap to
/// retry, so each of these leaves the VM running as it was.
#[derive(Debug, Error)]
pub enum CloneFailure {
    #[error("sending to {to}: {error}")]
    Sending { to: String, error: io::Error },
    #[error("the new backup: {0}")]
    NewBackup(io::Error),
    #[error("the clone is over")]
    Over,
    #[error("the clone's sender stopped")]
    SenderStopped,
    #[error("the new backup never connected")]
    NeverConnected,
    #[error("the channel is gone")]
    ChannelGone,
    #[error("the clone's {0} thread died")]
    ThreadDied(&'static str),
}

struct Shared {
    /// The first failure of either thread, shared with the VM's thread.
    error: Mutex<Option<Arc<CloneFailure>>>,
    acked: AtomicU64,
    sent: AtomicU64,
    /// Batches queued or being compressed and sent.
    in_flight: AtomicUsize,
}

impl Shared {
    fn fail(&self, why: CloneFailure) {
        let mut e = self.error.lock().unwrap_or_else(|e| e.into_inner());
        e.get_or_insert(Arc::new(why));
    }

    fn error(&self) -> Option<Arc<CloneFailure>> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

enum Piece {
    Pages(Vec<u8>),
    State(Vec<u8>),
}

/// What a clone step says.
pub enum Step {
    /// Still copying rounds.
    Running,
    /// The rest is small: call [`CloneJob::finish`] now, with the machine where it stands.
    Ready,
    /// The clone failed; the primary goes on as it was.
    Failed(Arc<CloneFailure>),
}

/// The primary's side of a live clone in progress.
pub struct CloneJob {
    pub target: String,
    /// The generation the hello announced.
    pub generation: u64,
    /// A migration of the primary (`Some(backup follows)`), not a new backup.
    pub takeover: Option<bool>,
    tx: Option<SyncSender<Piece>>,
    shared: Arc<Shared>,
    batch: Vec<u8>,
    batch_pages: usize,
    cursor: usize,
    begun: bool,
    progress: CloneProgress,
    pub started: Instant,
    /// Time the VM's thread spent copying pages.
    copying: Duration,
    timing: Timing,
    stream: Arc<Mutex<Option<crate::transport::Connection>>>,
    sender: Option<JoinHandle<io::Result<()>>>,
    acks: Option<JoinHandle<io::Result<()>>>,
}

/// A finished clone's channel, handed to the primary's log: the log may go out once the sender
/// is done, and acks be read once the ack thread saw the receiver's machine complete.
pub struct Handoff {
    pub stream: crate::transport::Connection,
    pub sender: JoinHandle<io::Result<()>>,
    pub acks: JoinHandle<io::Result<()>>,
    /// How long the machine stood still for the last piece.
    pub paused: Duration,
    /// The state hash of the machine the receiver rebuilt: where the pair's log starts.
    pub start_hash: u128,
    pub progress: CloneProgress,
}

impl CloneJob {
    /// Starts cloning to the backup listening at `target`: connects (in the sender thread, so
    /// the VM never waits for the network) and says hello. `takeover`: the clone becomes the
    /// primary (a migration), `Some(true)` if this primary's backup will follow it.
    pub fn start(
        target: &str,
        generation: u64,
        lock: &str,
        ram_size: u64,
        takeover: Option<bool>,
        timing: Timing,
        security: crate::secure::Security,
    ) -> io::Result<CloneJob> {
        let (tx, rx) = sync_channel(QUEUE);
        let shared = Arc::new(Shared {
            error: Mutex::new(None),
            acked: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        });
        let stream = Arc::new(Mutex::new(None));
        let hello = ToBackup::Hello(crate::wire::Hello {
            generation,
            clone_ram: ram_size,
            takeover: takeover.is_some(),
            backup_follows: takeover == Some(true),
            lock: lock.to_string(),
        });
        let (s1, st1, to) = (shared.clone(), stream.clone(), target.to_string());
        let sender = std::thread::Builder::new()
            .name("clone-sender".into())
            .spawn(move || {
                let r = send_clone(&to, &security, hello, rx, &s1, &st1, timing);
                if let Err(e) = &r {
                    s1.fail(CloneFailure::Sending {
                        to: to.clone(),
                        error: io::Error::new(e.kind(), e.to_string()),
                    });
                }
                r
            })?;
        Ok(CloneJob {
            target: target.to_string(),
            generation,
            takeover,
            tx: Some(tx),
            shared,
            batch: Vec::with_capacity(BATCH_PAGES * PAGE_RECORD),
            batch_pages: 0,
            cursor: 0,
            begun: false,
            progress: CloneProgress::default(),
            started: Instant::now(),
            copying: Duration::ZERO,
            timing,
            stream,
            sender: Some(sender),
            acks: None,
        })
    }

    pub fn progress(&self) -> CloneProgress {
        let mut p = self.progress.clone();
        p.pages_acked = self.shared.acked.load(Ordering::Relaxed);
        p.bytes_sent = self.shared.sent.load(Ordering::Relaxed);
        p
    }

    /// Queues the batch if the sender has room; false if it must wait.
    fn push(&mut self) -> Result<bool, Arc<CloneFailure>> {
        if self.batch_pages == 0 {
            return Ok(true);
        }
        let Some(tx) = &self.tx else {
            return Err(Arc::new(CloneFailure::Over));
        };
        let batch = std::mem::take(&mut self.batch);
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        match tx.try_send(Piece::Pages(batch)) {
            Ok(()) => {
                // A fresh buffer only when the old one left: a full queue keeps it.
                self.batch = Vec::with_capacity(BATCH_PAGES * PAGE_RECORD);
                self.batch_pages = 0;
                Ok(true)
            }
            Err(TrySendError::Full(Piece::Pages(b))) => {
                self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.batch = b;
                Ok(false)
            }
            Err(_) => Err(self
                .shared
                .error()
                .unwrap_or_else(|| Arc::new(CloneFailure::SenderStopped))),
        }
    }

    /// One slice's share of the rounds: copies a bounded number of dirty pages.
    pub fn step(&mut self, m: &mut Machine) -> Step {
        if let Some(e) = self.shared.error() {
            return Step::Failed(e);
        }
        self.spawn_acks();
        if !self.begun {
            m.begin_transfer();
            self.begun = true;
        }
        if self.copying.as_secs_f64() > self.started.elapsed().as_secs_f64() * COPY_SHARE {
            return Step::Running;
        }
        let t = Instant::now();
        let step = self.copy_some(m);
        self.copying += t.elapsed();
        step
    }

    fn copy_some(&mut self, m: &mut Machine) -> Step {
        let start = Instant::now();
        loop {
            if self.batch_pages == BATCH_PAGES {
                match self.push() {
                    Ok(true) => {}
                    Ok(false) => return Step::Running,
                    Err(e) => return Step::Failed(e),
                }
            }
            if self.cursor >= m.ram_pages() {
                match self.push() {
                    Ok(true) => {}
                    Ok(false) => return Step::Running,
                    Err(e) => return Step::Failed(e),
                }
                // A round ends when its pages are copied; the decision waits until they are
                // sent too, so the pause is not spent waiting for the queue.
                if self.shared.in_flight.load(Ordering::SeqCst) > 0 {
                    return Step::Running;
                }
                let dirty = m.transfer_dirty_pages();
                self.progress.dirty_left = dirty;
                if dirty <= FINAL_PAGES || self.progress.round + 1 >= MAX_ROUNDS {
                    return Step::Ready;
                }
                self.progress.round += 1;
                self.cursor = 0;
                return Step::Running;
            }
            if start.elapsed() >= COPY_PER_SLICE {
                return Step::Running;
            }
            let room = PAGES_PER_LOOK.min(BATCH_PAGES - self.batch_pages);
            let n = m.take_transfer_pages(&mut self.cursor, room, &mut self.batch);
            self.batch_pages += n;
            self.progress.pages_copied += n as u64;
        }
    }

    /// Starts the ack reader once the sender has connected.
    fn spawn_acks(&mut self) {
        if self.acks.is_some() {
            return;
        }
        let stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = stream.as_ref().and_then(|s| s.duplicate().ok()) else {
            return;
        };
        drop(stream);
        let shared = self.shared.clone();
        // The receiver acks every message and the sender sends one at least every heartbeat;
        // a clone is cheap to retry, so a busy host gets some slack before it counts as lost.
        let timeout = self.timing.timeout.max(Duration::from_secs(1));
        self.acks = std::thread::Builder::new()
            .name("clone-acks".into())
            .spawn(move || {
                let r = read_acks(s, &shared, timeout);
                if let Err(e) = &r {
                    shared.fail(CloneFailure::NewBackup(io::Error::new(
                        e.kind(),
                        e.to_string(),
                    )));
                }
                r
            })
            .ok();
    }

    /// The last piece, with the machine stopped where it stands: the remaining dirty pages and
    /// the CPU and device state. The machine may run on as soon as this returns; the log it
    /// writes from here on starts from exactly this state.
    pub fn finish(mut self, m: &mut Machine) -> Result<Handoff, Arc<CloneFailure>> {
        let t = Instant::now();
        self.spawn_acks();
        let (Some(tx), Some(sender), Some(acks)) =
            (self.tx.take(), self.sender.take(), self.acks.take())
        else {
            return Err(self
                .shared
                .error()
                .unwrap_or_else(|| Arc::new(CloneFailure::NeverConnected)));
        };
        self.cursor = 0;
        let fail = |shared: &Shared| {
            shared
                .error()
                .unwrap_or_else(|| Arc::new(CloneFailure::SenderStopped))
        };
        loop {
            let n = m.take_transfer_pages(
                &mut self.cursor,
                BATCH_PAGES - self.batch_pages,
                &mut self.batch,
            );
            self.batch_pages += n;
            self.progress.pages_copied += n as u64;
            if self.batch_pages == BATCH_PAGES || self.cursor >= m.ram_pages() {
                if self.batch_pages > 0 {
                    self.batch_pages = 0;
                    let batch = std::mem::take(&mut self.batch);
                    if tx.send(Piece::Pages(batch)).is_err() {
                        return Err(fail(&self.shared));
                    }
                }
                if self.cursor >= m.ram_pages() {
                    break;
                }
            }
        }
        let (state, start_hash) = m.transfer_state();
        if tx.send(Piece::State(state)).is_err() {
            return Err(fail(&self.shared));
        }
        let stream = self
            .stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|s| s.duplicate().ok())
            .ok_or_else(|| Arc::new(CloneFailure::ChannelGone))?;
        Ok(Handoff {
            stream,
            sender,
            acks,
            paused: t.elapsed(),
            start_hash: start_hash.0,
            progress: self.progress(),
        })
    }
}

impl Drop for CloneJob {
    fn drop(&mut self) {
        // An abandoned clone: the sender sees its queue close, the acks reader the socket.
        self.tx = None;
        if let Some(s) = self
            .stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && self.sender.is_some()
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn send_clone(
    target: &str,
    security: &crate::secure::Security,
    hello: ToBackup,
    rx: Receiver<Piece>,
    shared: &Shared,
    slot: &Mutex<Option<crate::transport::Connection>>,
    timing: Timing,
) -> io::Result<()> {
    let mut s = crate::channel::connect_to_backup(target, security)?;
    // A backup that stops reading must not hang the clone forever.
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    hello.write(&mut s)?;
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.duplicate()?);
    loop {
        match rx.recv_timeout(timing.heartbeat) {
            Ok(Piece::Pages(batch)) => {
                let z = zstd::bulk::compress(&batch, 1)?;
                let n = z.len() as u64 + 5;
                ToBackup::Pages(z).write(&mut s)?;
                shared.sent.fetch_add(n, Ordering::Relaxed);
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(Piece::State(state)) => {
                ToBackup::State(state).write(&mut s)?;
                s.set_write_timeout(None)?;
                return Ok(());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => ToBackup::Heartbeat.write(&mut s)?,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
                return Err(io::Error::other("clone abandoned"));
            }
        }
    }
}

fn read_acks(
    mut s: crate::transport::Connection,
    shared: &Shared,
    timeout: Duration,
) -> io::Result<()> {
    s.set_read_timeout(Some(timeout))?;
    loop {
        match ToPrimary::read(&mut s) {
            Ok(ToPrimary::CloneAck { pages }) => shared.acked.store(pages, Ordering::Relaxed),
            Ok(ToPrimary::CloneDone) => return Ok(()),
            Ok(other) => {
                return Err(io::Error::other(format!(
                    "unexpected {other:?} during the clone"
                )));
            }
            Err(WireError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::other(format!(
                    "no answer for {} ms",
                    timeout.as_millis()
                )));
            }
            Err(e) => return Err(io::Error::other(e.to_string())),
        }
    }
}

/// The receiving side: reads a clone announced by a hello with `ram_size` bytes of RAM and
/// returns the rebuilt machine (its state hash checked). `progress` sees the page records held.
pub fn receive_clone(
    mut stream: &mut dyn crate::transport::Transport,
    ram_size: u64,
    mut progress: impl FnMut(u64),
) -> Result<Machine, CloneError> {
    let mut incoming = Incoming::new(ram_size).map_err(|e| CloneError::Bad(e.to_string()))?;
    loop {
        match ToBackup::read(&mut stream)? {
            ToBackup::Pages(z) => {
                // Bounded: a batch never holds more than BATCH_PAGES records.
                let batch = zstd::bulk::decompress(&z, BATCH_PAGES * PAGE_RECORD)
                    .map_err(|e| CloneError::Bad(format!("a page batch: {e}")))?;
                incoming
                    .apply_batch(&batch)
                    .map_err(|e| CloneError::Bad(e.to_string()))?;
            }
            ToBackup::Heartbeat => {}
            ToBackup::State(state) => {
                let m = incoming
                    .finish(&state)
                    .map_err(|e| CloneError::Bad(e.to_string()))?;
                ToPrimary::CloneDone
                    .write(&mut stream)
                    .map_err(WireError::from)?;
                return Ok(m);
            }
            other => {
                return Err(CloneError::Bad(format!(
                    "unexpected message {:?} during a clone",
                    std::mem::discriminant(&other)
                )));
            }
        }
        let pages = incoming.pages_received();
        progress(pages);
        ToPrimary::CloneAck { pages }
            .write(&mut stream)
            .map_err(WireError::from)?;
    }
}

/// The fuzz target's body (`fuzz/fuzz_targets/ft_clone.rs`): any bytes as a clone's page batch
/// (raw and as a compressed message) and as its final state end in an error or a machine,
/// never a panic or an unbounded allocation.
pub fn fuzz_clone(data: &[u8]) {
    let Ok(mut incoming) = Incoming::new(16 << 20) else {
        return;
    };
    let _ = incoming.apply_batch(data);
    if let Ok(batch) = zstd::bulk::decompress(data, BATCH_PAGES * PAGE_RECORD) {
        let _ = incoming.apply_batch(&batch);
    }
    let _ = incoming.finish(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_clone_data_is_an_error_not_a_panic() {
        let mut x = 0x1234_5678_9abc_def1u64;
        for _ in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            fuzz_clone(&bytes);
        }
    }

    /// A whole clone over a socket: rounds while the "guest" writes, then the state; the
    /// receiver's machine has the sender's state hash.
    #[test]
    fn a_clone_over_tcp_rebuilds_the_machine() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap().to_string();
        let receiver = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let timing = Timing::default();
            let hello = crate::backup::read_hello(&mut s, timing).unwrap();
            assert_eq!((hello.generation, hello.clone_ram), (3, 16 << 20));
            let mut m = receive_clone(&mut s, hello.clone_ram, |_| {}).unwrap();
            m.state_hash()
        });
        let m = &mut Machine::blank(16 << 20).unwrap();
        let mut job = CloneJob::start(
            &at,
            3,
            "vm",
            16 << 20,
            None,
            Timing::default(),
            crate::secure::Security::Insecure,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "the clone did not converge");
            match job.step(m) {
                Step::Running => std::thread::sleep(Duration::from_millis(1)),
                Step::Ready => break,
                Step::Failed(e) => panic!("{e}"),
            }
        }
        let h = job.finish(m).unwrap();
        h.sender.join().unwrap().unwrap();
        h.acks.join().unwrap().unwrap();
        assert_eq!(receiver.join().unwrap(), m.state_hash());
    }
}
