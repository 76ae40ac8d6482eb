//! A small blocking HTTP/1.1 server with a fixed cost: one accept thread, [`WORKERS`]
//! workers, at most [`QUEUE`] connections waiting, one request per connection, a bounded
//! request head read within [`DEADLINE`]. A flood of connections is turned away at the door
//! and a slow client only ever holds one worker for a bounded time; none of it touches the
//! VM's thread, which only publishes its status.
//!
//! Written here rather than taken from `tiny_http`: its task pool starts a new thread for
//! every connection that finds the workers busy, so many slow clients mean many threads.
//! Requests are parsed by `httparse`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Threads answering requests.
pub const WORKERS: usize = 4;
/// Accepted connections waiting for a worker; more are closed at once.
pub const QUEUE: usize = 32;
/// The longest request head read.
pub const MAX_HEAD: usize = 8 * 1024;
/// The time a client has to send its request head, and each write of the answer.
pub const DEADLINE: Duration = Duration::from_secs(2);

/// A request as the handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status: 200,
            content_type,
            body: body.into(),
        }
    }

    pub fn error(status: u16, why: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{why}\n").into_bytes(),
        }
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A running server; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Serves `handler` at `listen` (`HOST:PORT`; port 0 picks one, see [`Server::addr`]).
    pub fn start(listen: &str, handler: Handler) -> io::Result<Server> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel::<TcpStream>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(WORKERS + 1);
        for i in 0..WORKERS {
            let (rx, handler) = (rx.clone(), handler.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("metrics-http-{i}"))
                    .spawn(move || work(&rx, &*handler))?,
            );
        }
        let s = stop.clone();
        threads.push(
            std::thread::Builder::new()
                .name("metrics-accept".into())
                .spawn(move || accept(&listener, &tx, &s))?,
        );
        Ok(Server {
            addr,
            stop,
            threads,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept thread; its end closes the queue, which ends the workers.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept(listener: &TcpListener, queue: &SyncSender<TcpStream>, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else {
            // Out of descriptors, say: the next connection may fare better.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        match queue.try_send(conn) {
            Ok(()) => {}
            // Busy: the connection closes unanswered; a scraper retries next interval.
            Err(TrySendError::Full(conn)) => drop(conn),
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

fn work(queue: &Mutex<Receiver<TcpStream>>, handler: &(dyn Fn(&Request) -> Response + Sync)) {
    loop {
        let conn = {
            let rx = queue.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(mut conn) = conn else { return };
        let mut head_only = false;
        let answer = match read_head(&mut conn) {
            Ok(req) => {
                head_only = req.method == "HEAD";
                if req.method == "GET" || head_only {
                    handler(&req)
                } else {
                    Response::error(405, "only GET and HEAD")
                }
            }
            Err(HeadError::Io) => continue,
            Err(HeadError::TooLarge) => Response::error(431, "request head too large"),
            Err(HeadError::Malformed) => Response::error(400, "malformed request"),
        };
        let _ = write_response(&mut conn, &answer, head_only);
    }
}

enum HeadError {
    Io,
    TooLarge,
    Malformed,
}

/// Reads one request head, within [`DEADLINE`] in all and [`MAX_HEAD`] bytes.
fn read_head(conn: &mut TcpStream) -> Result<Request, HeadError> {
    let start = Instant::now();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = DEADLINE
            .checked_sub(start.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or(HeadError::Io)?;
        conn.set_read_timeout(Some(left))
            .map_err(|_| HeadError::Io)?;
        let n = conn.read(&mut chunk).map_err(|_| HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Io);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(req) = parse_head(&buf)? {
            return Ok(req);
        }
    }
}

/// The request in `buf` if its head is complete (`None`: more bytes needed).
fn parse_head(buf: &[u8]) -> Result<Option<Request>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let target = req.path.unwrap_or("/");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            Ok(Some(Request {
                method: req.method.unwrap_or("").to_string(),
                path: path.to_string(),
                query: query.to_string(),
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// The fuzz target's body (`fuzz/fuzz_targets/metrics_http.rs`): any bytes as a request head,
/// whole and cut at every length a read could deliver, end in a request, a wait for more or
/// an error, never a panic.
pub fn fuzz_head(data: &[u8]) {
    let data = &data[..data.len().min(MAX_HEAD * 2)];
    for cut in (0..=data.len()).step_by(97).chain([data.len()]) {
        if let Ok(Some(r)) = parse_head(&data[..cut]) {
            assert!(!r.path.contains('?'), "the query is split off");
        }
    }
}

/// Writes `r` (its head only for a HEAD request, with the length the body would have).
fn write_response(conn: &mut TcpStream, r: &Response, head_only: bool) -> io::Result<()> {
    conn.set_write_timeout(Some(DEADLINE))?;
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    // The page of one side fetches the other side's status: any origin may read it (the
    // figures are what `ftvm ctl status` shows, and nothing here changes state).
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Access-Control-Allow-Origin: *\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    conn.write_all(head.as_bytes())?;
    if !head_only {
        conn.write_all(&r.body)?;
    }
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Server {
        Server::start(
            "127.0.0.1:0",
            Arc::new(|r: &Request| Response::ok("text/plain", format!("hi {}", r.path))),
        )
        .unwrap()
    }

    fn ask(addr: SocketAddr, raw: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(raw).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    }

    #[test]
    fn a_request_is_answered_and_garbage_gets_a_clear_status() {
        let s = hello();
        let ok = ask(s.addr(), b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("hi /metrics"), "{ok}");
        let bad = ask(s.addr(), b"\x00\x01\x02 nonsense\r\n\r\n");
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        let head = ask(s.addr(), b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Length: 11\r\n"), "{head}");
        assert!(
            head.ends_with("\r\n\r\n"),
            "a HEAD answer has no body: {head}"
        );
        let post = ask(s.addr(), b"POST / HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD * 2));
        let big = ask(s.addr(), &huge);
        assert!(big.starts_with("HTTP/1.1 431"), "{big}");
    }

    #[test]
    fn request_heads_mutated_every_which_way_never_panic() {
        let seeds: [&[u8]; 4] = [
            b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /?side=1.2.3.4:5&side=x HTTP/1.0\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nA: b\r\nC: d\r\n\r\n",
            b"\r\n\r\n",
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for seed in seeds {
            fuzz_head(seed);
            for _ in 0..2_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mut m = seed.to_vec();
                let at = (x % (m.len() as u64 + 1)) as usize;
                match x % 3 {
                    0 if at < m.len() => m[at] = (x >> 16) as u8,
                    1 => m.insert(at, (x >> 24) as u8),
                    _ => m.truncate(at),
                }
                fuzz_head(&m);
            }
        }
    }

    #[test]
    fn slow_clients_and_a_flood_of_connections_do_not_stop_the_answers() {
        let s = hello();
        // Slow clients: connected, sending half a request, never finishing it.
        let slow: Vec<TcpStream> = (0..WORKERS * 2)
            .map(|_| {
                let mut c = TcpStream::connect(s.addr()).unwrap();
                c.write_all(b"GET / HT").unwrap();
                c
            })
            .collect();
        // A flood: far more connections than the queue holds, opened at once (and closed:
        // each one the queue took costs a worker nothing then).
        let flood: Vec<TcpStream> = (0..QUEUE * 8)
            .filter_map(|_| TcpStream::connect(s.addr()).ok())
            .collect();
        drop(flood);
        // Within a few deadlines the slow ones are dropped and a scrape is answered again.
        let start = Instant::now();
        let answered = loop {
            let mut c = TcpStream::connect(s.addr()).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = c.write_all(b"GET /ok HTTP/1.1\r\n\r\n");
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            if out.ends_with("hi /ok") {
                break true;
            }
            if start.elapsed() > DEADLINE * 15 {
                break false;
            }
        };
        assert!(
            answered,
            "no answer while slow clients and a flood held the server"
        );
        drop(slow);
    }
}
