//! The etcd tie-breaker: the test-and-set as an etcd transaction, for clusters whose hosts do not
//! share a directory (the paper's §9 third party; Debian's `etcd-server`).
//!
//! A generation's record is the key `<prefix>/ft-lock/<generation>`, created only if absent
//! (`create_revision == 0`) in one transaction that reads the winner back otherwise. etcd's
//! JSON gateway (`POST /v3/kv/txn`) is spoken over a plain HTTP/1.1 connection: one small
//! request per failover does not justify an async gRPC stack in the VM's process. Answers are
//! untrusted: bounded, and anything unexpected is an error (which the caller retries, like
//! unreachable storage).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::tiebreak::{Outcome, TieBreaker};

/// The most of an answer read: a record is one short line.
const MAX_ANSWER: u64 = 1 << 20;

/// Lock records in etcd at `addr` (`HOST:PORT` of a client URL) under `prefix`.
pub struct Etcd {
    addr: String,
    prefix: String,
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Etcd {
    pub fn new(addr: &str, prefix: &str) -> Etcd {
        Etcd {
            addr: addr
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            prefix: prefix.to_string(),
        }
    }

    fn key(&self, generation: u64) -> String {
        format!("{}/ft-lock/{generation}", self.prefix)
    }

    /// One JSON request to the gateway; the JSON answer.
    fn call(&self, path: &str, body: &Value) -> io::Result<Value> {
        let addr = self
            .addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| bad(format!("{}: no address", self.addr)))?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        let body = body.to_string();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        let mut answer = Vec::new();
        (&mut s).take(MAX_ANSWER).read_to_end(&mut answer)?;
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| bad("etcd: an answer without a body"))?;
        if !head.starts_with("HTTP/1.1 200") {
            let status = head.lines().next().unwrap_or_default();
            return Err(bad(format!("etcd answered {status}: {}", body.trim())));
        }
        serde_json::from_str(body).map_err(|e| bad(format!("etcd: {e}")))
    }

    fn next_free(&self) -> io::Result<u64> {
        let prefix = format!("{}/ft-lock/", self.prefix);
        let mut end = prefix.clone().into_bytes();
        *end.last_mut().expect("not empty") += 1;
        let answer = self.call(
            "/v3/kv/range",
            &json!({"key": B64.encode(&prefix), "range_end": B64.encode(&end), "keys_only": true}),
        )?;
        let mut next = 1;
        for kv in answer["kvs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let key = kv["key"].as_str().and_then(|k| B64.decode(k).ok());
            let generation = key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| k.strip_prefix(&prefix))
                .and_then(|g| g.parse::<u64>().ok());
            if let Some(g) = generation {
                next = next.max(g.saturating_add(1));
            }
        }
        Ok(next)
    }
}

impl TieBreaker for Etcd {
    fn test_and_set(&self, generation: u64, who: &str) -> io::Result<Outcome> {
        let key = B64.encode(self.key(generation));
        let answer = self.call(
            "/v3/kv/txn",
            &json!({
                "compare": [{"key": key, "target": "CREATE", "create_revision": "0"}],
                "success": [{"request_put": {"key": key, "value": B64.encode(who)}}],
                "failure": [{"request_range": {"key": key}}],
            }),
        )?;
        if answer["succeeded"].as_bool() == Some(true) {
            return Ok(Outcome::Won);
        }
        // etcd leaves out `succeeded` when it is false; the winner's record comes back.
        let value = answer["responses"][0]["response_range"]["kvs"][0]["value"]
            .as_str()
            .ok_or_else(|| bad(format!("etcd: unexpected answer {answer}")))?;
        let winner = B64
            .decode(value)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .map_err(|e| bad(format!("etcd: {e}")))?;
        Ok(Outcome::Lost { winner })
    }

    fn describe(&self) -> String {
        format!("etcd at {} ({}/ft-lock/*)", self.addr, self.prefix)
    }

    fn next_generation(&self) -> io::Result<u64> {
        self.next_free()
    }
}

/// A private etcd server (Debian's `etcd-server`) on free loopback ports with a scratch data
/// directory, stopped and removed on drop: for tests here and in the end-to-end suite.
#[doc(hidden)]
pub struct PrivateEtcd {
    child: std::process::Child,
    dir: std::path::PathBuf,
    /// `HOST:PORT` of its client URL.
    pub addr: String,
}

impl PrivateEtcd {
    pub fn start() -> io::Result<PrivateEtcd> {
        let free = || -> io::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let (client, peer) = (free()?, free()?);
        let dir = std::env::temp_dir().join(format!("ftvm-etcd-{}-{client}", std::process::id()));
        let url = format!("http://127.0.0.1:{client}");
        let child = std::process::Command::new("etcd")
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run etcd (Debian's etcd-server; scripts/test.sh installs it): {e}"
                    ),
                )
            })?;
        let server = PrivateEtcd {
            child,
            dir,
            addr: format!("127.0.0.1:{client}"),
        };
        let probe = Etcd::new(&server.addr, "probe");
        let start = std::time::Instant::now();
        while let Err(e) = probe.next_free() {
            if start.elapsed() > Duration::from_secs(20) {
                return Err(io::Error::new(e.kind(), format!("etcd did not start: {e}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn etcd() -> PrivateEtcd {
        PrivateEtcd::start().unwrap()
    }

    #[test]
    fn exactly_one_side_wins_a_generation_in_etcd() {
        let server = etcd();
        let tb = Etcd::new(&server.addr, "vm");
        assert_eq!(tb.next_generation().unwrap(), 1);
        // Both sides race for generation 1 from their own threads.
        let racers: Vec<_> = ["primary", "backup"]
            .into_iter()
            .map(|who| {
                let addr = server.addr.clone();
                std::thread::spawn(move || Etcd::new(&addr, "vm").test_and_set(1, who).unwrap())
            })
            .collect();
        let outcomes: Vec<Outcome> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let wins = outcomes.iter().filter(|o| **o == Outcome::Won).count();
        assert_eq!(wins, 1, "{outcomes:?}");
        let Some(Outcome::Lost { winner }) = outcomes.iter().find(|o| **o != Outcome::Won) else {
            panic!("{outcomes:?}")
        };
        assert!(winner == "primary" || winner == "backup");
        assert_eq!(tb.next_generation().unwrap(), 2);
        assert_eq!(tb.test_and_set(2, "primary").unwrap(), Outcome::Won);
        assert_eq!(tb.next_generation().unwrap(), 3);
        // Another VM's records are its own.
        assert_eq!(
            Etcd::new(&server.addr, "other").next_generation().unwrap(),
            1
        );
    }

    #[test]
    fn an_unreachable_etcd_is_an_error_to_retry_not_a_decision() {
        let tb = Etcd::new(&format!("127.0.0.1:{}", free_port()), "vm");
        assert!(tb.test_and_set(1, "primary").is_err());
        assert!(tb.next_generation().is_err());
    }
}
