//! The logging channel's connection over TCP: the primary listens and a backup connects, or
//! (a live clone into a new backup) the backup listens and the primary connects. What the
//! drivers get is a [`Connection`], whatever carries it.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::transport::Connection;

#[derive(Debug, Error)]
pub enum ChannelError {
    #[error("cannot listen for a backup on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("waiting for a backup: {0}")]
    Accept(std::io::Error),
    #[error("cannot reach the primary at {0} within {1:?}: {2}")]
    Connect(String, Duration, std::io::Error),
}

/// Binds the primary's end of the channel; the address it got (for a port 0 request).
pub fn bind_primary(addr: &str) -> Result<(TcpListener, SocketAddr), ChannelError> {
    let l = TcpListener::bind(addr).map_err(|e| ChannelError::Listen(addr.into(), e))?;
    let at = l
        .local_addr()
        .map_err(|e| ChannelError::Listen(addr.into(), e))?;
    Ok((l, at))
}

/// Waits for the backup to connect; the stream is tuned for the log.
pub fn accept_backup(l: &TcpListener) -> Result<Connection, ChannelError> {
    let (s, _) = l.accept().map_err(ChannelError::Accept)?;
    tune(&s);
    Ok(Box::new(s))
}

/// The first connection within `patience`, if any (a backup reconnecting to a moved primary).
pub fn accept_within(l: &TcpListener, patience: Duration) -> Option<Connection> {
    l.set_nonblocking(true).ok()?;
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).ok()?;
                tune(&s);
                return Some(Box::new(s));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    None
}

/// Connects to the primary, retrying until `patience` runs out (the primary may still be
/// starting).
pub fn connect_to_primary(addr: &str, patience: Duration) -> Result<Connection, ChannelError> {
    let start = Instant::now();
    loop {
        match connect_once(addr, Duration::from_secs(1)) {
            Ok(s) => {
                tune(&s);
                return Ok(Box::new(s));
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
/// start is reported and may be retried).
pub fn connect_to_backup(addr: &str) -> std::io::Result<TcpStream> {
    let s = connect_once(addr, Duration::from_secs(2))?;
    tune(&s);
    Ok(s)
}

/// Records go out as they are written: no Nagle delay.
fn tune(s: &TcpStream) {
    let _ = s.set_nodelay(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_backup_reaches_a_primary_and_bytes_flow() {
        let (l, at) = bind_primary("127.0.0.1:0").unwrap();
        let t = std::thread::spawn(move || {
            let mut s = accept_backup(&l).unwrap();
            s.write_all(b"log bytes").unwrap();
        });
        let mut b = connect_to_primary(&at.to_string(), Duration::from_secs(5)).unwrap();
        let mut got = String::new();
        b.read_to_string(&mut got).unwrap();
        t.join().unwrap();
        assert_eq!(got, "log bytes");
    }

    #[test]
    fn no_primary_is_a_clear_error_after_the_patience() {
        let (l, at) = bind_primary("127.0.0.1:0").unwrap();
        drop(l);
        let e = connect_to_primary(&at.to_string(), Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("cannot reach the primary"), "{e}");
    }
}
