//! ftvm's operator view of a running side: Prometheus metrics, a live status page and the
//! history behind its plots, served by `--metrics HOST:PORT` on primaries, backups, spares
//! and the switch.
//!
//! Everything shown is read from what the side already publishes: its `ftvm_ft::Status`
//! (the same figures `ftvm ctl status` prints), the FT events it emitted ([`journal`]) and
//! a sample of both every second ([`history`]). Invariants: nothing here runs on the VM's
//! thread or takes a lock the VM's thread holds for longer than a copy of its status; the
//! server's threads and memory are bounded whatever clients do ([`http`]).

pub mod expose;
pub mod history;
pub mod http;
pub mod journal;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ftvm_ft::{Control, Status};
use ftvm_net::SwitchStats;
use serde::Serialize;

use crate::expose::Figures;
use crate::history::{History, Sample};
use crate::http::{Request, Response, Server};
use crate::journal::Journal;

/// The status page: one file, its chart code included, nothing fetched from elsewhere.
pub const PAGE: &str = include_str!("page.html");

/// This process's journal: the event printer feeds it, the metrics read it.
pub fn process_journal() -> &'static Arc<Journal> {
    static JOURNAL: OnceLock<Arc<Journal>> = OnceLock::new();
    JOURNAL.get_or_init(|| Arc::new(Journal::new()))
}

/// What a side shows.
#[derive(Clone)]
pub enum Source {
    /// A primary, backup or spare, through its control state.
    Vm(Arc<Control>),
    /// The switch's counters, as its loop last copied them.
    Switch(Arc<Mutex<SwitchStats>>),
}

/// `/status.json`: everything the page draws for one side.
#[derive(Serialize)]
struct PageData<'a> {
    process: &'a str,
    now_ms: u64,
    role: String,
    role_name: &'static str,
    status: Option<Status>,
    switch: Option<SwitchFigures>,
    samples: Vec<Sample>,
    journal: journal::Snapshot,
}

#[derive(Serialize)]
struct SwitchFigures {
    frames: u64,
    bytes: u64,
    dropped: u64,
    ports: u64,
}

/// A side's metrics server and its sampler; both stop when this drops.
pub struct Endpoint {
    server: Server,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Serves `source` (of the process `process`: primary, backup, switch) at `listen`.
    pub fn start(listen: &str, process: &'static str, source: Source) -> std::io::Result<Endpoint> {
        let view = Arc::new(View {
            process,
            source,
            history: History::new(),
            journal: process_journal().clone(),
            carried: Mutex::new(Carried::default()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (v, s) = (view.clone(), stop.clone());
        let sampler = std::thread::Builder::new()
            .name("metrics-sampler".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    v.sample();
                    std::thread::sleep(Duration::from_secs(1));
                }
            })?;
        let server = Server::start(listen, Arc::new(move |r: &Request| view.answer(r)))?;
        Ok(Endpoint {
            server,
            stop,
            sampler: Some(sampler),
        })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.sampler.take() {
            let _ = t.join();
        }
    }
}

struct View {
    process: &'static str,
    source: Source,
    history: History,
    journal: Arc<Journal>,
    carried: Mutex<Carried>,
}

/// What a side's counters had reached before its role began them again: a backup that goes
/// live and gets a new backup starts a new log, a new Output Rule histogram. Prometheus reads
/// a counter that drops as a restarted process, so this process's counters carry on instead.
#[derive(Default)]
struct Carried {
    last: Vec<f64>,
    offset: Vec<f64>,
}

impl Carried {
    /// `values` as counters that never drop: a value below the last seen starts again from
    /// where the last one was.
    fn carry(&mut self, values: &mut [f64]) {
        self.last.resize(values.len(), 0.0);
        self.offset.resize(values.len(), 0.0);
        for (i, v) in values.iter_mut().enumerate() {
            if *v < self.last[i] {
                self.offset[i] += self.last[i];
            }
            self.last[i] = *v;
            *v += self.offset[i];
        }
    }
}

/// The counters of a status, in a fixed order, and back.
fn counters_of(s: &Status) -> Vec<f64> {
    let h = &s.output_delay;
    let mut v = vec![
        s.log_bytes as f64,
        s.log_acked_bytes as f64,
        s.log_messages as f64,
        s.outputs_released as f64,
        h.count as f64,
        h.sum_ms,
    ];
    v.extend(h.cumulative.iter().map(|&c| c as f64));
    v
}

fn set_counters(s: &mut Status, v: &[f64]) {
    let [bytes, acked, messages, released, count, sum, buckets @ ..] = v else {
        return;
    };
    s.log_bytes = *bytes as u64;
    s.log_acked_bytes = *acked as u64;
    s.log_messages = *messages as u64;
    s.outputs_released = *released as u64;
    s.output_delay.count = *count as u64;
    s.output_delay.sum_ms = *sum;
    for (c, b) in s.output_delay.cumulative.iter_mut().zip(buckets) {
        *c = *b as u64;
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl View {
    fn status(&self) -> Option<Status> {
        match &self.source {
            Source::Vm(c) => Some(c.status.lock().unwrap_or_else(|e| e.into_inner()).clone()),
            Source::Switch(_) => None,
        }
    }

    fn switch(&self) -> Option<SwitchStats> {
        match &self.source {
            Source::Switch(s) => Some(s.lock().unwrap_or_else(|e| e.into_inner()).clone()),
            Source::Vm(_) => None,
        }
    }

    fn sample(&self) {
        if let Some(s) = self.status() {
            self.history.add(&s, unix_ms());
        }
    }

    fn answer(&self, r: &Request) -> Response {
        match r.path.as_str() {
            "/metrics" => Response::ok(expose::CONTENT_TYPE, expose::text(self.figures())),
            "/status.json" => Response::ok("application/json", self.page_data()),
            "/" | "/index.html" => Response::ok("text/html; charset=utf-8", PAGE),
            _ => Response::error(404, "not found: try /metrics, /status.json or /"),
        }
    }

    fn figures(&self) -> Figures {
        match (self.status(), self.switch()) {
            (Some(mut status), _) => {
                let mut v = counters_of(&status);
                self.carried
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .carry(&mut v);
                set_counters(&mut status, &v);
                Figures::Vm {
                    status: Box::new(status),
                    counts: self.journal.counts(),
                    latest: self.history.latest(),
                }
            }
            (None, s) => Figures::Switch(s.unwrap_or_default()),
        }
    }

    fn page_data(&self) -> String {
        let status = self.status();
        let (role, role_name) = match &status {
            Some(s) => (s.role.to_string(), s.role.name()),
            None => ("switch".to_string(), "switch"),
        };
        let data = PageData {
            process: self.process,
            now_ms: unix_ms(),
            role,
            role_name,
            status,
            switch: self.switch().map(|s| SwitchFigures {
                frames: s.frames,
                bytes: s.bytes,
                dropped: s.dropped,
                ports: s.ports_connected.saturating_sub(s.ports_gone),
            }),
            samples: self.history.samples(),
            journal: self.journal.snapshot(),
        };
        serde_json::to_string(&data).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn a_side_serves_its_metrics_its_page_data_and_the_page() {
        let control = Control::new(ftvm_ft::Role::Backup, 2);
        let e = Endpoint::start("127.0.0.1:0", "backup", Source::Vm(control.clone())).unwrap();
        control.update(|s| s.icount = 77);
        let metrics = get(e.addr(), "/metrics");
        assert!(
            metrics.contains("ftvm_role{role=\"backup\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("ftvm_guest_instructions_total 77"),
            "{metrics}"
        );
        let json = get(e.addr(), "/status.json");
        let body = json.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["role_name"], "backup");
        assert_eq!(v["status"]["generation"], 2);
        let page = get(e.addr(), "/");
        assert!(page.contains("getContext(\"2d\")"), "{page}");
        assert!(get(e.addr(), "/nope").starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn counters_carry_on_when_a_new_role_starts_them_again() {
        let mut c = Carried::default();
        let mut seen = Vec::new();
        for raw in [10.0, 25.0, 3.0, 7.0, 1.0] {
            let mut v = [raw];
            c.carry(&mut v);
            seen.push(v[0]);
        }
        assert_eq!(seen, [10.0, 25.0, 28.0, 32.0, 33.0]);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in ["http://", "https://", "//cdn", "<script src", "<link"] {
            assert!(!PAGE.contains(needle), "the page refers to {needle}");
        }
    }
}
