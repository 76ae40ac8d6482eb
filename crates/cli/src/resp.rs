//! A minimal Redis client (RESP2 over one TCP connection), for the FT demo, benches and tests.
//!
//! One connection on purpose: the point of the demo is that the very same TCP connection
//! survives a failover. Replies from the server are bounded (no unbounded allocation on a bad
//! or confused peer).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The largest bulk reply or array accepted.
const MAX_BULK: usize = 64 << 20;
const MAX_ARRAY: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

pub struct Redis {
    out: TcpStream,
    input: BufReader<TcpStream>,
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Redis {
    pub fn connect(port: u16, timeout: Duration) -> io::Result<Redis> {
        Self::connect_to(&format!("127.0.0.1:{port}"), timeout)
    }

    /// Connects to redis at `addr` (`HOST:PORT`).
    pub fn connect_to(addr: &str, timeout: Duration) -> io::Result<Redis> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(timeout))?;
        Ok(Redis {
            out: s.try_clone()?,
            input: BufReader::new(s),
        })
    }

    /// Sends one command without waiting (for pipelining).
    pub fn send(&mut self, args: &[&str]) -> io::Result<()> {
        let mut m = format!("*{}\r\n", args.len());
        for a in args {
            m.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.out.write_all(m.as_bytes())
    }

    pub fn reply(&mut self) -> io::Result<Reply> {
        let mut line = String::new();
        if self.input.by_ref().take(64 << 10).read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line
            .split_at_checked(1)
            .ok_or_else(|| bad("empty reply".into()))?;
        let num = || {
            rest.parse::<i64>()
                .map_err(|_| bad(format!("bad number in {line:?}")))
        };
        Ok(match kind {
            "+" => Reply::Simple(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(num()?),
            "$" => match num()? {
                -1 => Reply::Bulk(None),
                n if (0..=MAX_BULK as i64).contains(&n) => {
                    let mut b = vec![0u8; n as usize + 2];
                    self.input.read_exact(&mut b)?;
                    b.truncate(n as usize);
                    Reply::Bulk(Some(b))
                }
                n => return Err(bad(format!("bulk length {n}"))),
            },
            "*" => match num()? {
                -1 => Reply::Array(Vec::new()),
                n if (0..=MAX_ARRAY as i64).contains(&n) => {
                    let mut v = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        v.push(self.reply()?);
                    }
                    Reply::Array(v)
                }
                n => return Err(bad(format!("array length {n}"))),
            },
            _ => return Err(bad(format!("unexpected reply {line:?}"))),
        })
    }

    pub fn command(&mut self, args: &[&str]) -> io::Result<Reply> {
        self.send(args)?;
        self.reply()
    }
}

/// Waits until redis answers PING on `port` through a new connection, at most `patience`.
pub fn wait_for_redis(port: u16, patience: Duration) -> io::Result<()> {
    let start = std::time::Instant::now();
    loop {
        let attempt =
            Redis::connect(port, Duration::from_secs(2)).and_then(|mut r| r.command(&["PING"]));
        match attempt {
            Ok(Reply::Simple(s)) if s == "PONG" => return Ok(()),
            _ if start.elapsed() > patience => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("redis did not answer on port {port} within {patience:?}"),
                ));
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The redis server's run id: it changes if redis (or the guest under it) restarts.
pub fn server_run_id(redis: &mut Redis) -> anyhow::Result<String> {
    let Reply::Bulk(Some(info)) = redis.command(&["INFO", "server"])? else {
        anyhow::bail!("INFO server: unexpected reply");
    };
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|s| s.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("INFO server has no run_id"))
}

/// The acknowledged keys `key:i` whose value `i` is not there, read back in pipelined batches.
pub fn check_keys(redis: &mut Redis, acked: &[u64]) -> io::Result<Vec<u64>> {
    let mut missing = Vec::new();
    for batch in acked.chunks(500) {
        for i in batch {
            redis.send(&["GET", &format!("key:{i}")])?;
        }
        for i in batch {
            if redis.reply()? != Reply::Bulk(Some(i.to_string().into_bytes())) {
                missing.push(*i);
            }
        }
    }
    Ok(missing)
}
