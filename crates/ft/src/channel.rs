//! The logging channel's connection over TCP: the primary listens and a backup connects, or
//! (a live clone into a new backup) the backup listens and the primary connects. What the
//! drivers get is a [`Connection`], whatever carries it: sealed by [`Security`] (a Noise
//! handshake with pinned keys) before any byte of the VM crosses, unless the operator chose
//! `--insecure`.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::event::{Event, emit};
use crate::secure::{SecureError, Security};
use crate::transport::Connection;

#[derive(Debug, Error)]
pub enum ChannelError {
    #[error("cannot listen for a backup on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("waiting for a backup: {0}")]
    Accept(std::io::Error),
    #[error("cannot reach the primary at {0} within {1:?}: {2}")]
    Connect(String, Duration, std::io::Error),
    #[error("the channel to {0} was refused: {1}")]
    Refused(String, SecureError),
}

/// Binds the primary's end of the channel; the address it got (for a port 0 request).
pub fn bind_primary(addr: &str) -> Result<(TcpListener, SocketAddr), ChannelError> {
    let l = TcpListener::bind(addr).map_err(|e| ChannelError::Listen(addr.into(), e))?;
    let at = l
        .local_addr()
        .map_err(|e| ChannelError::Listen(addr.into(), e))?;
    Ok((l, at))
}

/// Waits for the backup to connect; the stream is tuned for the log. A peer that fails the
/// handshake (no key, or one not pinned) is refused, said, and the wait goes on.
pub fn accept_backup(l: &TcpListener, security: &Security) -> Result<Connection, ChannelError> {
    loop {
        let (s, _) = l.accept().map_err(ChannelError::Accept)?;
        if let Some(c) = admit(s, security) {
            return Ok(c);
        }
    }
}

/// The first connection within `patience` that passes the handshake, if any (a backup
/// reconnecting to a moved primary).
pub fn accept_within(
    l: &TcpListener,
    patience: Duration,
    security: &Security,
) -> Option<Connection> {
    l.set_nonblocking(true).ok()?;
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).ok()?;
                if let Some(c) = admit(s, security) {
                    return Some(c);
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    None
}

/// An accepted stream, sealed; None (and a `PeerRefused` event) if its handshake failed.
fn admit(s: TcpStream, security: &Security) -> Option<Connection> {
    tune(&s);
    let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    match security.respond(Box::new(s)) {
        Ok(c) => Some(c),
        Err(e) => {
            emit(Event::PeerRefused {
                peer,
                why: e.to_string(),
            });
            None
        }
    }
}

/// Connects to the primary, retrying until `patience` runs out (the primary may still be
/// starting).
pub fn connect_to_primary(
    addr: &str,
    patience: Duration,
    security: &Security,
) -> Result<Connection, ChannelError> {
    let start = Instant::now();
    loop {
        match connect_once(addr, Duration::from_secs(1)) {
            Ok(s) => {
                tune(&s);
                // A refusal is not retried: the host there is not the pinned peer.
                return security
                    .initiate(Box::new(s))
                    .map_err(|e| ChannelError::Refused(addr.into(), e));
            }
            Err(e) if start.elapsed() >= patience => {
                return Err(ChannelError::Connect(addr.into(), patience, e));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn connect_once(addr: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let a = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
    TcpStream::connect_timeout(&a, timeout)
}

/// Connects to a backup waiting with `ftvm backup --listen` (one attempt: a clone that cannot
/// start is reported and may be retried); nothing of the VM is sent unless the host there
/// proves a pinned key.
pub fn connect_to_backup(addr: &str, security: &Security) -> std::io::Result<Connection> {
    let s = connect_once(addr, Duration::from_secs(2))?;
    tune(&s);
    security.initiate(Box::new(s)).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("the host at {addr} was refused: {e}"),
        )
    })
}

/// Records go out as they are written: no Nagle delay.
fn tune(s: &TcpStream) {
    let _ = s.set_nodelay(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn keys() -> (Security, Security, Security) {
        let (p, b, stranger) = (
            crate::Keys::generate().unwrap(),
            crate::Keys::generate().unwrap(),
            crate::Keys::generate().unwrap(),
        );
        let (pp, bp) = (p.public(), b.public());
        let sec = |k: crate::Keys, peer| Security::Pinned(std::sync::Arc::new(k.pin(peer)));
        (sec(p, bp), sec(b, pp), sec(stranger, pp))
    }

    #[test]
    fn a_backup_reaches_a_primary_and_bytes_flow() {
        let (p, b, _) = keys();
        for (primary, backup) in [(Security::Insecure, Security::Insecure), (p, b)] {
            let (l, at) = bind_primary("127.0.0.1:0").unwrap();
            let t = std::thread::spawn(move || {
                let mut s = accept_backup(&l, &primary).unwrap();
                s.write_all(b"log bytes").unwrap();
            });
            let mut b =
                connect_to_primary(&at.to_string(), Duration::from_secs(5), &backup).unwrap();
            let mut got = String::new();
            b.read_to_string(&mut got).unwrap();
            t.join().unwrap();
            assert_eq!(got, "log bytes");
        }
    }

    /// A keyless process and one with an unpinned key connect first: both are refused and
    /// get nothing; the pinned backup that comes next is the one the primary takes.
    #[test]
    fn strangers_are_refused_and_the_real_backup_is_taken() {
        let (primary, backup, stranger) = keys();
        let (l, at) = bind_primary("127.0.0.1:0").unwrap();
        let at = at.to_string();
        let mut keyless = TcpStream::connect(&at).unwrap();
        keyless.write_all(b"hello, I am your backup").unwrap();
        let t = std::thread::spawn(move || {
            let mut s = accept_backup(&l, &primary).unwrap();
            s.write_all(b"the log").unwrap();
        });
        let mut got = Vec::new();
        let _ = keyless.read_to_end(&mut got);
        assert!(got.is_empty(), "a keyless peer was sent {got:?}");
        let e = connect_to_primary(&at, Duration::from_secs(5), &stranger).unwrap_err();
        assert!(matches!(e, ChannelError::Refused(..)), "{e}");
        let mut b = connect_to_primary(&at, Duration::from_secs(5), &backup).unwrap();
        let mut log = String::new();
        b.read_to_string(&mut log).unwrap();
        t.join().unwrap();
        assert_eq!(log, "the log");
    }

    #[test]
    fn no_primary_is_a_clear_error_after_the_patience() {
        let (l, at) = bind_primary("127.0.0.1:0").unwrap();
        drop(l);
        let e = connect_to_primary(
            &at.to_string(),
            Duration::from_millis(300),
            &Security::Insecure,
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot reach the primary"), "{e}");
    }
}
