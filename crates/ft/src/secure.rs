//! The logging and clone channel authenticated and encrypted: Noise XX with pinned keys.
//!
//! Why: the channel carries the VM's inputs (its clients' data), whole RAM in a clone, and the
//! acks that release outputs. Without this, anyone who reaches the port is taken as the backup
//! (and, by staying silent, makes the primary drop FT), and `add-backup --to` sends RAM to
//! whatever listens there.
//!
//! Each host holds a static X25519 key (`ftvm keygen`); each side names the public keys it
//! accepts (`--peer-key`). The handshake (`Noise_XX_25519_ChaChaPoly_BLAKE2s`, a prologue
//! naming this protocol) proves both statics, and a side checks the other's against its pinned
//! list before it sends anything of the VM: the hello, a log record, a page or a block cross
//! only a channel both ends chose. Afterwards every frame is sealed with ChaCha20-Poly1305
//! under a counter nonce per direction, so a flipped bit, a replayed, dropped or reordered
//! frame fails to open, and the channel is torn down like a cut one (a channel failure, never
//! an output released or a heartbeat believed).
//!
//! Invariants: no plaintext byte is given out before its frame is authenticated; a side's
//! buffers are bounded (one frame in, one frame's plaintext out); after the first error in a
//! direction the connection only reports that error.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use thiserror::Error;

use crate::transport::{Connection, Transport};

/// The Noise protocol of the channel.
pub const PATTERN: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Mixed into the handshake, so a Noise peer of some other protocol cannot complete it.
const PROLOGUE: &[u8] = b"ftvm FT logging and clone channel, version 1";
/// Noise's largest message; a frame is its length (2 bytes) and then the message.
const MAX_MESSAGE: usize = 65535;
const TAG: usize = 16;
const MAX_PLAIN: usize = MAX_MESSAGE - TAG;
/// A peer has this long for the whole handshake: a silent one cannot hold the port.
const HANDSHAKE_PATIENCE: Duration = Duration::from_secs(5);

/// The responder's first sealed frame: it checked the initiator's key and took it.
const ACCEPTED: &[u8; 8] = b"accepted";

const PRIVATE_TAG: &str = "ftvm-private-key";
const PUBLIC_TAG: &str = "ftvm-public-key";

#[derive(Debug, Error)]
pub enum SecureError {
    #[error("key file {0}: {1}")]
    KeyFile(PathBuf, String),
    #[error("the handshake with {peer} failed: {why}")]
    Handshake { peer: String, why: String },
    #[error("{peer} proved key {key}, which is not among the pinned peer keys")]
    NotPinned { peer: String, key: String },
}

/// A public key as the operator sees it (what `ftvm keygen` writes to the `.pub` file).
pub fn show_key(public: &[u8; 32]) -> String {
    B64.encode(public)
}

/// This host's static key and the peers' public keys it accepts.
pub struct Keys {
    private: [u8; 32],
    public: [u8; 32],
    peers: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        write!(
            f,
            "Keys({}, {} pinned)",
            show_key(&self.public),
            self.peers.len()
        )
    }
}

fn params() -> snow::params::NoiseParams {
    PATTERN
        .parse()
        .expect("the channel's Noise pattern is valid")
}

impl Keys {
    /// A new static key pair, with no peers pinned yet.
    pub fn generate() -> Result<Keys, SecureError> {
        let kp = snow::Builder::new(params())
            .generate_keypair()
            .map_err(|e| SecureError::KeyFile(PathBuf::new(), format!("no key made: {e}")))?;
        let (mut private, mut public) = ([0u8; 32], [0u8; 32]);
        private.copy_from_slice(&kp.private);
        public.copy_from_slice(&kp.public);
        Ok(Keys {
            private,
            public,
            peers: Vec::new(),
        })
    }

    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The public key as a line of a `--peer-key` file.
    pub fn public_line(&self) -> String {
        format!("{PUBLIC_TAG} {}", show_key(&self.public))
    }

    /// Accepts `public` as a peer too.
    pub fn pin(mut self, public: [u8; 32]) -> Keys {
        if !self.peers.contains(&public) {
            self.peers.push(public);
        }
        self
    }

    /// Writes the private key to `path` (owner-only, never over an existing file) and the
    /// public key to `path.pub`.
    pub fn write(&self, path: &Path) -> Result<PathBuf, SecureError> {
        let fail = |e: io::Error| SecureError::KeyFile(path.to_path_buf(), e.to_string());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(fail)?;
        writeln!(f, "{PRIVATE_TAG} {}", B64.encode(self.private)).map_err(fail)?;
        f.sync_all().map_err(fail)?;
        let public = public_path(path);
        std::fs::write(&public, format!("{}\n", self.public_line()))
            .map_err(|e| SecureError::KeyFile(public.clone(), e.to_string()))?;
        Ok(public)
    }

    /// This host's key from `key` (refused if others may read it) and the accepted peers
    /// from each of `peers` (files of `ftvm-public-key` lines; `#` starts a comment).
    pub fn load(key: &Path, peers: &[PathBuf]) -> Result<Keys, SecureError> {
        let bad = |why: String| SecureError::KeyFile(key.to_path_buf(), why);
        let meta = std::fs::metadata(key).map_err(|e| bad(e.to_string()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(bad(format!(
                "is readable by others (mode {:o}): chmod 600 it",
                meta.permissions().mode() & 0o777
            )));
        }
        let text = read_small(key)?;
        let private = one_key(&text, PRIVATE_TAG)
            .ok_or_else(|| bad(format!("holds no `{PRIVATE_TAG}` line")))?
            .map_err(bad)?;
        let public = public_of(&private).map_err(bad)?;
        let mut keys = Keys {
            private,
            public,
            peers: Vec::new(),
        };
        for path in peers {
            let text = read_small(path)?;
            let mut found = 0;
            for line in text
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
            {
                if line.is_empty() {
                    continue;
                }
                let k = one_key(line, PUBLIC_TAG)
                    .unwrap_or_else(|| Err(format!("`{line}` is not a `{PUBLIC_TAG}` line")))
                    .map_err(|why| SecureError::KeyFile(path.clone(), why))?;
                keys = keys.pin(k);
                found += 1;
            }
            if found == 0 {
                return Err(SecureError::KeyFile(
                    path.clone(),
                    "holds no public key".into(),
                ));
            }
        }
        if keys.peers.is_empty() {
            return Err(bad(
                "no --peer-key given: nobody could join the channel".into()
            ));
        }
        Ok(keys)
    }
}

/// Where the public half of the key at `path` goes.
pub fn public_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

fn read_small(path: &Path) -> Result<String, SecureError> {
    let bad = |why: String| SecureError::KeyFile(path.to_path_buf(), why);
    let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut text = String::new();
    // A key file is a line or a few; anything larger is not one.
    f.take(64 << 10)
        .read_to_string(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    Ok(text)
}

/// The key on the first line tagged `tag`: None if there is none.
fn one_key(text: &str, tag: &str) -> Option<Result<[u8; 32], String>> {
    let line = text.lines().find(|l| l.trim_start().starts_with(tag))?;
    let b64 = line.trim().trim_start_matches(tag).trim();
    Some(match B64.decode(b64) {
        Ok(bytes) => bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("a key is 32 bytes, this one {}", b.len())),
        Err(e) => Err(format!("not base64: {e}")),
    })
}

/// The public key of `private`: X25519 from snow's own resolver.
fn public_of(private: &[u8; 32]) -> Result<[u8; 32], String> {
    use snow::resolvers::CryptoResolver;
    let mut dh = snow::resolvers::DefaultResolver
        .resolve_dh(&snow::params::DHChoice::Curve25519)
        .ok_or("this build has no X25519")?;
    dh.set(private);
    dh.pubkey()
        .try_into()
        .map_err(|_| "a public key is 32 bytes".to_string())
}

/// How the channel is protected.
#[derive(Clone, Debug)]
pub enum Security {
    /// Plain bytes, anyone who reaches the port may join (`--insecure`).
    Insecure,
    /// Noise with these keys.
    Pinned(Arc<Keys>),
}

impl Security {
    /// This side opened the connection.
    pub fn initiate(&self, conn: Connection) -> Result<Connection, SecureError> {
        match self {
            Security::Insecure => Ok(conn),
            Security::Pinned(keys) => handshake(conn, keys, true),
        }
    }

    /// This side accepted the connection.
    pub fn respond(&self, conn: Connection) -> Result<Connection, SecureError> {
        match self {
            Security::Insecure => Ok(conn),
            Security::Pinned(keys) => handshake(conn, keys, false),
        }
    }
}

fn handshake(
    mut conn: Connection,
    keys: &Keys,
    initiator: bool,
) -> Result<Connection, SecureError> {
    let peer = conn.peer();
    let fail = |why: String| SecureError::Handshake {
        peer: peer.clone(),
        why,
    };
    let builder = snow::Builder::new(params())
        .prologue(PROLOGUE)
        .and_then(|b| b.local_private_key(&keys.private))
        .map_err(|e| fail(e.to_string()))?;
    let mut hs = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map_err(|e| fail(e.to_string()))?;
    conn.set_read_timeout(Some(HANDSHAKE_PATIENCE))
        .map_err(|e| fail(e.to_string()))?;
    let (mut msg, mut payload) = (vec![0u8; MAX_MESSAGE], vec![0u8; MAX_MESSAGE]);
    // XX: -> e; <- e, ee, s, es; -> s, se. Each side checks the other's static as soon as it
    // has it: the initiator before it sends its own.
    for step in 0..3 {
        let ours = (step % 2 == 0) == initiator;
        if ours {
            let n = hs
                .write_message(&[], &mut msg)
                .map_err(|e| fail(e.to_string()))?;
            write_frame(&mut *conn, &msg[..n]).map_err(|e| fail(e.to_string()))?;
        } else {
            let n = read_frame(&mut *conn, &mut msg).map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => fail(format!(
                    "no handshake within {HANDSHAKE_PATIENCE:?} (a peer without keys? both \
                     sides need --key and --peer-key, or both --insecure)"
                )),
                _ => fail(e.to_string()),
            })?;
            // Our handshake messages carry no payload: one that does is not ours.
            match hs.read_message(&msg[..n], &mut payload) {
                Ok(0) => {}
                Ok(_) => return Err(fail("not a peer of this protocol (a payload)".into())),
                Err(e) => return Err(fail(format!("not a peer of this protocol ({e})"))),
            }
        }
        if let Some(rs) = hs.get_remote_static() {
            let key: [u8; 32] = rs
                .try_into()
                .map_err(|_| fail("a static key is 32 bytes".into()))?;
            if !keys.peers.contains(&key) {
                return Err(SecureError::NotPinned {
                    peer,
                    key: show_key(&key),
                });
            }
        }
    }
    let remote = hs
        .get_remote_static()
        .map(|k| B64.encode(k))
        .ok_or_else(|| fail("no static key was proved".into()))?;
    let cipher = hs
        .into_stateless_transport_mode()
        .map_err(|e| fail(e.to_string()))?;
    let mut sealed = Sealed {
        inner: conn,
        shared: Arc::new(Shared {
            cipher,
            remote,
            send: Mutex::new(Sending::default()),
            recv: Mutex::new(Receiving::default()),
        }),
    };
    // XX lets the initiator finish before the responder has checked its key: the responder's
    // first sealed frame says it has, so a refused initiator hears so now, not as a closed
    // channel later.
    if initiator {
        let mut word = [0u8; ACCEPTED.len()];
        match sealed.read_exact(&mut word) {
            Ok(()) if word == *ACCEPTED => {}
            Ok(()) => return Err(fail("an unexpected first frame".into())),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(fail(
                    "the peer closed the channel: it does not pin this host's key".into(),
                ));
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    } else {
        sealed
            .write_all(ACCEPTED)
            .map_err(|e| fail(e.to_string()))?;
    }
    sealed
        .inner
        .set_read_timeout(None)
        .map_err(|e| fail(e.to_string()))?;
    Ok(Box::new(sealed))
}

fn write_frame(w: &mut dyn Transport, message: &[u8]) -> io::Result<()> {
    debug_assert!(message.len() <= MAX_MESSAGE);
    let mut frame = Vec::with_capacity(2 + message.len());
    frame.extend_from_slice(&(message.len() as u16).to_be_bytes());
    frame.extend_from_slice(message);
    w.write_all(&frame)
}

fn read_frame(r: &mut dyn Transport, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len)?;
    let n = u16::from_be_bytes(len) as usize;
    r.read_exact(&mut buf[..n])?;
    Ok(n)
}

/// A sealed connection: one handle of it (`duplicate` gives more, sharing the cipher and the
/// nonces; one thread reads at a time, writers take turns a frame at a time).
struct Sealed {
    inner: Connection,
    shared: Arc<Shared>,
}

struct Shared {
    cipher: snow::StatelessTransportState,
    /// The peer's proved key, for the operator.
    remote: String,
    send: Mutex<Sending>,
    recv: Mutex<Receiving>,
}

#[derive(Default)]
struct Sending {
    nonce: u64,
    /// A frame went out in part: the stream is out of step, nothing more may follow.
    broken: bool,
    /// The sealed frame being written (kept: one allocation per connection, not per frame).
    frame: Vec<u8>,
}

#[derive(Default)]
struct Receiving {
    nonce: u64,
    /// Bytes of frames not yet whole (at most one frame and one read).
    raw: Vec<u8>,
    /// Plaintext of authenticated frames not yet read (at most one frame's).
    plain: VecDeque<u8>,
    /// Where a frame is opened (kept, like `Sending::frame`).
    opened: Vec<u8>,
    failed: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Receiving {
    /// Opens the next whole frame in `raw`, if there is one; an error if it does not
    /// authenticate (the channel is then dead for good).
    fn open_next(&mut self, cipher: &snow::StatelessTransportState) -> io::Result<bool> {
        if let Some(why) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, why.clone()));
        }
        let Some(len) = self
            .raw
            .get(..2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        else {
            return Ok(false);
        };
        if self.raw.len() < 2 + len {
            return Ok(false);
        }
        self.opened.resize(len, 0);
        match cipher.read_message(self.nonce, &self.raw[2..2 + len], &mut self.opened) {
            Ok(n) => {
                self.nonce += 1;
                self.raw.drain(..2 + len);
                self.plain.extend(&self.opened[..n]);
                Ok(true)
            }
            Err(_) => {
                let why = format!(
                    "frame {} of the channel failed authentication: bytes were changed, \
                     replayed, dropped or reordered on the way",
                    self.nonce
                );
                self.failed = Some(why.clone());
                Err(io::Error::new(io::ErrorKind::InvalidData, why))
            }
        }
    }

    fn give(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.plain.len());
        for (b, p) in buf.iter_mut().zip(self.plain.drain(..n)) {
            *b = p;
        }
        n
    }

    /// How many more bytes the frame being assembled needs (at least the length prefix).
    fn wanted(&self) -> usize {
        match self.raw.get(..2) {
            Some(b) => {
                (2 + u16::from_be_bytes([b[0], b[1]]) as usize).saturating_sub(self.raw.len())
            }
            None => 2 - self.raw.len(),
        }
    }
}

/// Reads the next plaintext: `fetch` pulls raw bytes from the socket when no whole frame
/// waits (blocking or not, as the caller's read is). One reader at a time (the lock): a
/// blocking read holds the others back, and only a side's one reader thread reads so.
fn read_with(
    shared: &Shared,
    buf: &mut [u8],
    mut fetch: impl FnMut(&mut [u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut r = lock(&shared.recv);
    loop {
        if !r.plain.is_empty() {
            return Ok(r.give(buf));
        }
        if r.open_next(&shared.cipher)? {
            continue;
        }
        // On the stack: the VM's thread polls for acks between slices, mostly finding none.
        let mut chunk = [0u8; 16 << 10];
        let want = r.wanted().clamp(4096, chunk.len());
        let n = fetch(&mut chunk[..want])?;
        if n == 0 {
            return if r.raw.is_empty() {
                Ok(0)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the channel closed in the middle of a frame",
                ))
            };
        }
        r.raw.extend_from_slice(&chunk[..n]);
    }
}

impl Read for Sealed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let inner = &mut self.inner;
        read_with(&self.shared, buf, |chunk| inner.read(chunk))
    }
}

impl Write for Sealed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(MAX_PLAIN);
        let mut s = lock(&self.shared.send);
        if s.broken {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier frame went out in part",
            ));
        }
        let s = &mut *s;
        s.frame.resize(2 + n + TAG, 0);
        let len = self
            .shared
            .cipher
            .write_message(s.nonce, &buf[..n], &mut s.frame[2..])
            .map_err(|e| io::Error::other(format!("cannot seal a frame: {e}")))?;
        s.frame[..2].copy_from_slice(&(len as u16).to_be_bytes());
        s.nonce += 1;
        if let Err(e) = self.inner.write_all(&s.frame[..2 + len]) {
            s.broken = true;
            return Err(e);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl AsFd for Sealed {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl Transport for Sealed {
    fn duplicate(&self) -> io::Result<Connection> {
        Ok(Box::new(Sealed {
            inner: self.inner.duplicate()?,
            shared: self.shared.clone(),
        }))
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_write_timeout(timeout)
    }

    fn has_room(&self, bytes: usize) -> bool {
        let frames = bytes.div_ceil(MAX_PLAIN).max(1);
        self.inner.has_room(bytes + frames * (2 + TAG))
    }

    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_with(&self.shared, buf, |chunk| self.inner.read_now(chunk))
    }

    fn peer(&self) -> String {
        format!("{} (key {})", self.inner.peer(), self.shared.remote)
    }
}

/// Any byte string as what a peer sends: as the initiator's handshake to a responder (never
/// a channel: nobody without a pinned key completes it), and as sealed frames after a real
/// handshake (errors, never a panic or an unbounded buffer).
pub fn fuzz_sealed(data: &[u8]) {
    let data = &data[..data.len().min(MAX_MESSAGE)];
    let keys = |b: u8| {
        let private = [b; 32];
        let public = public_of(&private).expect("a fixed key");
        Keys {
            private,
            public,
            peers: Vec::new(),
        }
    };
    let (a, b) = (keys(1), keys(2));
    let responder = Keys {
        peers: vec![b.public],
        ..keys(1)
    };
    if let Ok((mut x, y)) = std::os::unix::net::UnixStream::pair() {
        let _ = x.write_all(data);
        let _ = x.shutdown(Shutdown::Write);
        assert!(
            handshake(Box::new(y), &responder, false).is_err(),
            "bytes nobody sealed opened a channel"
        );
    }
    // A real pair of handshake states, then `data` as the frames that follow.
    let build = |k: &Keys, initiator: bool| {
        let b = snow::Builder::new(params())
            .prologue(PROLOGUE)
            .and_then(|b| b.local_private_key(&k.private))
            .expect("a valid key");
        if initiator {
            b.build_initiator()
        } else {
            b.build_responder()
        }
        .expect("a handshake state")
    };
    let (mut i, mut r) = (build(&a, true), build(&b, false));
    let (mut m, mut p) = (vec![0u8; 512], vec![0u8; 512]);
    for step in 0..3 {
        let (from, to) = if step % 2 == 0 {
            (&mut i, &mut r)
        } else {
            (&mut r, &mut i)
        };
        let n = from.write_message(&[], &mut m).expect("handshake message");
        to.read_message(&m[..n], &mut p).expect("handshake message");
    }
    let cipher = r.into_stateless_transport_mode().expect("transport mode");
    let mut recv = Receiving::default();
    for chunk in data.chunks(977) {
        recv.raw.extend_from_slice(chunk);
        loop {
            match recv.open_next(&cipher) {
                Ok(true) => {
                    let mut out = [0u8; 4096];
                    while recv.give(&mut out) > 0 {}
                }
                Ok(false) => break,
                Err(_) => return,
            }
        }
        assert!(
            recv.raw.len() <= 2 + MAX_MESSAGE + 977,
            "the raw buffer grew unbounded"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn garbage_from_a_peer_is_an_error_not_a_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..300 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 300) as usize + if round % 50 == 0 { 70_000 } else { 0 };
            let mut bytes: Vec<u8> = (0..len)
                .map(|i| (x >> (i % 8 * 8)) as u8 ^ i as u8)
                .collect();
            // Some inputs look like frames: a plausible length prefix first.
            if round % 3 == 0 && bytes.len() > 2 {
                let n = (bytes.len() - 2).min(MAX_MESSAGE) as u16;
                bytes[..2].copy_from_slice(&n.to_be_bytes());
            }
            fuzz_sealed(&bytes);
        }
    }

    fn conn(s: UnixStream) -> Connection {
        Box::new(s)
    }

    fn pinned(own: &Keys, peers: &[&Keys]) -> Security {
        let mut k = Keys {
            private: own.private,
            public: own.public,
            peers: Vec::new(),
        };
        for p in peers {
            k = k.pin(p.public);
        }
        Security::Pinned(Arc::new(k))
    }

    /// Runs the two ends' handshakes at once; each end's result.
    fn meet(
        a: Security,
        b: Security,
        wire: (Connection, Connection),
    ) -> (
        Result<Connection, SecureError>,
        Result<Connection, SecureError>,
    ) {
        let (x, y) = wire;
        let t = std::thread::spawn(move || b.respond(y));
        (a.initiate(x), t.join().unwrap())
    }

    /// Copies frames from `from` to `to`, letting `tamper` change the `i`th frame of this
    /// direction (the handshake's own frames included) or drop it (false).
    fn relay(
        mut from: UnixStream,
        mut to: UnixStream,
        tamper: impl Fn(usize, &mut Vec<u8>) -> bool + Send + 'static,
    ) {
        std::thread::spawn(move || {
            let mut held: Option<Vec<u8>> = None;
            for i in 0.. {
                let mut len = [0u8; 2];
                if from.read_exact(&mut len).is_err() {
                    return;
                }
                let mut frame = vec![0u8; u16::from_be_bytes(len) as usize];
                if from.read_exact(&mut frame).is_err() {
                    return;
                }
                let mut whole = len.to_vec();
                whole.extend_from_slice(&frame);
                if !tamper(i, &mut whole) {
                    held = Some(whole);
                    continue;
                }
                if to.write_all(&whole).is_err() {
                    return;
                }
                // A dropped frame comes after the next one: reordered.
                if let Some(h) = held.take() {
                    let _ = to.write_all(&h);
                }
            }
        });
    }

    /// A pair sealed through relays that tamper with the initiator's frames.
    fn through(
        tamper: impl Fn(usize, &mut Vec<u8>) -> bool + Send + 'static,
    ) -> (Connection, Connection) {
        let (ka, kb) = (Keys::generate().unwrap(), Keys::generate().unwrap());
        let (a, a_wire) = UnixStream::pair().unwrap();
        let (b, b_wire) = UnixStream::pair().unwrap();
        relay(
            a_wire.try_clone().unwrap(),
            b_wire.try_clone().unwrap(),
            tamper,
        );
        relay(b_wire, a_wire, |_, _| true);
        let (x, y) = meet(pinned(&ka, &[&kb]), pinned(&kb, &[&ka]), (conn(a), conn(b)));
        (x.unwrap(), y.unwrap())
    }

    #[test]
    fn pinned_peers_talk_both_ways_in_frames_of_any_size() {
        let (ka, kb) = (Keys::generate().unwrap(), Keys::generate().unwrap());
        let (a, b) = UnixStream::pair().unwrap();
        let (x, y) = meet(pinned(&ka, &[&kb]), pinned(&kb, &[&ka]), (conn(a), conn(b)));
        let (mut x, mut y) = (x.unwrap(), y.unwrap());
        assert!(y.peer().contains(&show_key(&ka.public)), "{}", y.peer());
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 300) as u8).collect();
        let sent = big.clone();
        let mut writer = x.duplicate().unwrap();
        let t = std::thread::spawn(move || writer.write_all(&sent).unwrap());
        let mut got = vec![0u8; big.len()];
        y.read_exact(&mut got).unwrap();
        t.join().unwrap();
        assert_eq!(got, big);
        y.write_all(b"ack 42").unwrap();
        let mut buf = [0u8; 64];
        let n = loop {
            match x.read_now(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(&buf[..n], b"ack 42");
        assert_eq!(
            x.read_now(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        Transport::shutdown(&*y, Shutdown::Write).unwrap();
        assert_eq!(
            x.read(&mut buf).unwrap(),
            0,
            "closed between frames: end of stream"
        );
    }

    #[test]
    fn a_peer_with_another_key_is_refused_before_anything_is_sent() {
        let (ka, kb, intruder) = (
            Keys::generate().unwrap(),
            Keys::generate().unwrap(),
            Keys::generate().unwrap(),
        );
        // The intruder connects to a primary that pins only kb.
        let (a, b) = UnixStream::pair().unwrap();
        let (x, y) = meet(
            pinned(&intruder, &[&ka]),
            pinned(&ka, &[&kb]),
            (conn(a), conn(b)),
        );
        let e = y.expect_err("the responder took an unpinned key");
        assert!(
            matches!(&e, SecureError::NotPinned { key, .. } if *key == show_key(&intruder.public)),
            "{e}"
        );
        let e = x.expect_err("the intruder got a channel");
        assert!(
            e.to_string().contains("does not pin this host's key"),
            "{e}"
        );
        // And the primary dialing a host that is not its pinned backup never sends its key.
        let (a, b) = UnixStream::pair().unwrap();
        let (x, _) = meet(
            pinned(&ka, &[&kb]),
            pinned(&intruder, &[&ka]),
            (conn(a), conn(b)),
        );
        assert!(matches!(x, Err(SecureError::NotPinned { .. })));
    }

    #[test]
    fn a_keyless_peer_fails_the_handshake_with_a_clear_error() {
        let kb = Keys::generate().unwrap();
        // An old backup (or anything else) that speaks first with plain bytes.
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(&[0, 40]).unwrap();
        b.write_all(&[b'x'; 40]).unwrap();
        let e = pinned(&kb, &[&kb]).respond(conn(a)).unwrap_err();
        assert!(e.to_string().contains("not a peer of this protocol"), "{e}");
        // One that connects and says nothing is given up within the patience.
        let (a, _silent) = UnixStream::pair().unwrap();
        let started = std::time::Instant::now();
        let e = pinned(&kb, &[&kb]).respond(conn(a)).unwrap_err();
        assert!(e.to_string().contains("--insecure"), "{e}");
        assert!(started.elapsed() < HANDSHAKE_PATIENCE * 2);
    }

    fn read_error(y: &mut Connection, want: usize) -> io::Error {
        let mut buf = vec![0u8; want];
        let e = y.read_exact(&mut buf).unwrap_err();
        // Torn down for good: the next read says the same.
        let again = y.read(&mut buf).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::InvalidData);
        e
    }

    #[test]
    fn a_flipped_bit_tears_the_channel_down() {
        let (mut x, mut y) = through(|i, f| {
            if i == 3 {
                f[10] ^= 0x04;
            }
            true
        });
        for _ in 0..3 {
            x.write_all(b"log record").unwrap();
        }
        let mut first = [0u8; 10];
        y.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"log record", "the frame before the flip arrives");
        let e = read_error(&mut y, 10);
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("failed authentication"), "{e}");
    }

    #[test]
    fn a_replayed_or_reordered_frame_tears_the_channel_down() {
        // Replayed: an earlier frame (the first after the handshake) sent again.
        let mut buf = [0u8; 5];
        let stored = Arc::new(Mutex::new(Vec::new()));
        let keep = stored.clone();
        let (mut x, mut y) = through(move |i, f| {
            if i == 2 {
                *lock(&keep) = f.clone();
            }
            if i == 3 {
                *f = lock(&keep).clone();
            }
            true
        });
        x.write_all(b"ack 1").unwrap();
        x.write_all(b"ack 2").unwrap();
        y.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ack 1");
        assert_eq!(read_error(&mut y, 5).kind(), io::ErrorKind::InvalidData);
        // Reordered: frame 2 held back until frame 3 passed.
        let (mut x, mut y) = through(|i, _| i != 2);
        x.write_all(b"ack 1").unwrap();
        x.write_all(b"ack 2").unwrap();
        assert_eq!(read_error(&mut y, 5).kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn keys_round_trip_through_files_and_loose_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Keys::generate().unwrap(), Keys::generate().unwrap());
        let a_key = dir.path().join("a.key");
        let a_pub = a.write(&a_key).unwrap();
        let b_pub = b.write(&dir.path().join("b.key")).unwrap();
        assert!(a.write(&a_key).is_err(), "a key file is never overwritten");
        let both = dir.path().join("peers");
        let text = format!(
            "# the pair\n{}{}",
            std::fs::read_to_string(&a_pub).unwrap(),
            std::fs::read_to_string(&b_pub).unwrap()
        );
        std::fs::write(&both, text).unwrap();
        let loaded = Keys::load(&a_key, std::slice::from_ref(&both)).unwrap();
        assert_eq!(loaded.public, a.public);
        assert_eq!(loaded.peers, vec![a.public, b.public]);
        let e = Keys::load(&a_key, &[]).unwrap_err();
        assert!(e.to_string().contains("--peer-key"), "{e}");
        std::fs::set_permissions(&a_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keys::load(&a_key, std::slice::from_ref(&both)).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        // A public key given as the private one: refused (its file is everyone's to read).
        let e = Keys::load(&b_pub, &[both]).unwrap_err();
        assert!(e.to_string().contains("readable by others"), "{e}");
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "ftvm-public-key !!!\n").unwrap();
        let e = Keys::load(&dir.path().join("b.key"), &[junk]).unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
    }
}
