//! Deterministic record and replay of a whole VM.
//!
//! Job: the [`Recorder`] is a host [`ftvm_host::Observer`] that writes every input, output and
//! checkpoint of a run to an event log; the [`Replayer`] re-executes a log with no host input at
//! all, checks every output and checkpoint against it, and names the first divergence exactly.
//!
//! Invariant: a replay feeds the machine nothing but the log's inputs, each at its recorded
//! instruction count, so a correct machine reproduces the recording bit for bit.

mod record;
mod replay;
mod start;

pub use record::Recorder;
pub use replay::{ConsoleSink, Divergence, ReplayEnd, ReplayError, Replayer, RequestSink};
pub use start::{StartError, boot_header, sha256_hex, start_machine, start_machine_from};
