//! The event log: what happened to a VM, record by record.
//!
//! Job: encode and decode the one log format that serves record/replay files, the FT logging
//! channel and debugging. The format is documented in `docs/log-format.md`.
//!
//! Invariants:
//! - Records are self-delimiting and individually checksummed (CRC-32C), so a stream can be cut
//!   anywhere and the reader reports exactly which record is damaged or missing.
//! - A log is untrusted input (it may come from a peer host): decoding never panics, never reads
//!   out of bounds and never allocates more than [`MAX_PAYLOAD`] for one record.
//! - Encoding is cheap and streamable: one pass, no seeking, a few bytes per record.

mod format;
mod header;
mod reader;
mod stream;
mod varint;
mod writer;

pub use format::{EndReason, MAX_PAYLOAD, Record, io_digest};
pub use header::{LogHeader, StartState};
pub use reader::{LogError, Reader};
pub use stream::Stream;
pub use writer::Writer;

/// The first bytes of every log.
pub const MAGIC: &[u8; 8] = b"FTVMLOG\0";
/// The format version this build writes and reads.
/// 2: device completions, I/O output digests, virtio devices in the header.
pub const VERSION: u16 = 2;

#[cfg(test)]
mod tests;
