//! The log header: what machine the records apply to and the state they start from.

use serde::{Deserialize, Serialize};

/// Where the recorded machine started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartState {
    /// A fresh boot of these files (sha256, hex) with this command line and memory size.
    Boot {
        kernel_sha256: String,
        initrd_sha256: Option<String>,
        /// "builtin", or the sha256 of the OpenSBI image.
        firmware: String,
        cmdline: String,
        ram_size: u64,
        /// The virtio devices, in slot order, as they were configured (disk sizes, MACs).
        virtio: Vec<ftvm_virtio::Device>,
    },
    /// A snapshot file with this state hash.
    Snapshot { path: String },
    /// A live clone: the state came over the logging channel before the log, at instruction
    /// `icount` of the sending machine (only the receiver of that clone can replay this log).
    Transferred { icount: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHeader {
    pub start: StartState,
    /// The state hash of the starting machine, checked before replay begins.
    pub start_hash: u128,
    /// Where the files of `start` were found when recording (a hint for replay).
    pub paths: Vec<String>,
}
