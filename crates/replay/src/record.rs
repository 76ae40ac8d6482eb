//! Recording: an observer that turns a run into log records.

use std::io::{self, Write};

use ftvm_host::{Observer, RunEnd};
use ftvm_log::{EndReason, Record, Writer};
use ftvm_machine::{Effect, EffectKind, InputEvent};

/// Default instructions between state-hash checkpoints.
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 100_000_000;

pub struct Recorder<W: Write> {
    log: Writer<W>,
    interval: u64,
    /// Console bytes not yet logged, and the instruction that wrote the last of them. Consecutive
    /// bytes are logged as one record: nothing else happened between them.
    console: Vec<u8>,
    console_icount: u64,
    /// The first write error; recording stops there and the error is reported at the end.
    error: Option<io::Error>,
}

impl<W: Write> Recorder<W> {
    pub fn new(log: Writer<W>) -> Self {
        Recorder {
            log,
            interval: DEFAULT_CHECKPOINT_INTERVAL,
            console: Vec::new(),
            console_icount: 0,
            error: None,
        }
    }

    /// Instructions between checkpoints (0: none).
    pub fn with_checkpoint_interval(mut self, interval: u64) -> Self {
        self.interval = interval;
        self
    }

    fn append(&mut self, record: Record) {
        if self.error.is_none()
            && let Err(e) = self.log.append(&record)
        {
            self.error = Some(e);
        }
    }

    fn flush_console(&mut self) {
        if !self.console.is_empty() {
            let bytes = std::mem::take(&mut self.console);
            let icount = self.console_icount;
            self.append(Record::Output {
                icount,
                effect: EffectKind::Console(bytes),
            });
        }
    }

    /// Bytes logged so far.
    pub fn bytes(&self) -> u64 {
        self.log.bytes()
    }

    pub fn records(&self) -> u64 {
        self.log.records()
    }

    /// Everything observed so far goes into the log and out of the writer's buffers; returns the
    /// log's length in bytes, which then covers every output seen (the FT Output Rule's ticket).
    pub fn barrier(&mut self) -> u64 {
        self.flush_console();
        if self.error.is_none()
            && let Err(e) = self.log.flush()
        {
            self.error = Some(e);
        }
        self.log.bytes()
    }

    /// Flushes the log and hands back the writer, or the first error met while recording.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_console();
        if let Some(e) = self.error {
            return Err(e);
        }
        self.log.flush()?;
        Ok(self.log.into_inner())
    }
}

impl<W: Write> Observer for Recorder<W> {
    fn input(&mut self, icount: u64, event: &InputEvent) {
        self.flush_console();
        self.append(Record::Input {
            icount,
            event: event.clone(),
        });
    }

    fn effect(&mut self, effect: &Effect) {
        match &effect.kind {
            EffectKind::Console(bytes) => {
                self.console.extend_from_slice(bytes);
                self.console_icount = effect.icount;
            }
            other => {
                self.flush_console();
                self.append(Record::Output {
                    icount: effect.icount,
                    effect: other.clone(),
                });
            }
        }
    }

    fn checkpoint_interval(&self) -> Option<u64> {
        (self.interval > 0).then_some(self.interval)
    }

    fn checkpoint(&mut self, icount: u64, hash: u128) {
        self.flush_console();
        self.append(Record::Checkpoint { icount, hash });
    }

    fn end(&mut self, icount: u64, how: RunEnd) {
        self.flush_console();
        let reason = match how {
            RunEnd::PowerOff(_) | RunEnd::Reset => EndReason::Halted,
            RunEnd::Stopped | RunEnd::ReachedLimit | RunEnd::Fenced => EndReason::Stopped,
        };
        self.append(Record::End { icount, reason });
        if self.error.is_none()
            && let Err(e) = self.log.flush()
        {
            self.error = Some(e);
        }
    }
}
