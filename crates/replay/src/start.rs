//! The machine a log starts from, rebuilt from the files its header names and checked by hash.

use std::path::Path;

use ftvm_log::{LogHeader, StartState};
use ftvm_machine::{BootError, Firmware, Machine, MachineConfig, SnapshotError};
use sha2::{Digest, Sha256};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path} is not the file the log was recorded with (sha256 differs)")]
    Mismatch { what: &'static str, path: String },
    #[error("the log header does not name a {0} file")]
    Missing(&'static str),
    #[error(
        "the log starts from a live clone's state at instruction {0}: only the backup that \
         received that clone can replay it"
    )]
    Transferred(u64),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(
        "the starting machine's state hash {actual:032x} differs from the log's {expected:032x}"
    )]
    Hash { expected: u128, actual: u128 },
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The header for a log of a fresh boot of `cfg`, whose files were read from `paths`
/// (kernel, then initrd and firmware when present).
pub fn boot_header(cfg: &MachineConfig, paths: Vec<String>, start_hash: u128) -> LogHeader {
    LogHeader {
        start: StartState::Boot {
            kernel_sha256: sha256_hex(&cfg.kernel),
            initrd_sha256: cfg.initrd.as_deref().map(sha256_hex),
            firmware: match &cfg.firmware {
                Firmware::Builtin => "builtin".into(),
                Firmware::OpenSbi(fw) => sha256_hex(fw),
            },
            cmdline: cfg.cmdline.clone(),
            ram_size: cfg.ram_size,
            virtio: cfg.virtio.clone(),
        },
        start_hash,
        paths,
    }
}

fn read_checked(path: &str, sha: &str, what: &'static str) -> Result<Vec<u8>, StartError> {
    let bytes = std::fs::read(Path::new(path)).map_err(|source| StartError::Read {
        path: path.into(),
        source,
    })?;
    if sha256_hex(&bytes) != sha {
        return Err(StartError::Mismatch {
            what,
            path: path.into(),
        });
    }
    Ok(bytes)
}

/// Rebuilds the machine a log starts from and checks its state hash.
pub fn start_machine(header: &LogHeader) -> Result<Machine, StartError> {
    start_machine_from(header, None)
}

/// The machine a log starts from: `received` if a live clone delivered it (checked against the
/// log's start hash like any other start), else the boot or snapshot the header names.
pub fn start_machine_from(
    header: &LogHeader,
    received: Option<Machine>,
) -> Result<Machine, StartError> {
    if let Some(mut machine) = received {
        let actual = machine.state_hash().0;
        if actual != header.start_hash {
            return Err(StartError::Hash {
                expected: header.start_hash,
                actual,
            });
        }
        return Ok(machine);
    }
    let mut machine = match &header.start {
        StartState::Snapshot { path } => Machine::load_snapshot(Path::new(path))?,
        StartState::Transferred { icount } => return Err(StartError::Transferred(*icount)),
        StartState::Boot {
            kernel_sha256,
            initrd_sha256,
            firmware,
            cmdline,
            ram_size,
            virtio,
        } => {
            let mut paths = header.paths.iter();
            let kernel_path = paths.next().ok_or(StartError::Missing("kernel"))?;
            let kernel = read_checked(kernel_path, kernel_sha256, "kernel")?;
            let initrd = match initrd_sha256 {
                Some(sha) => {
                    let p = paths.next().ok_or(StartError::Missing("initrd"))?;
                    Some(read_checked(p, sha, "initrd")?)
                }
                None => None,
            };
            let firmware = if firmware == "builtin" {
                Firmware::Builtin
            } else {
                let p = paths.next().ok_or(StartError::Missing("firmware"))?;
                Firmware::OpenSbi(read_checked(p, firmware, "firmware")?)
            };
            Machine::new(&MachineConfig {
                ram_size: *ram_size,
                firmware,
                kernel,
                initrd,
                cmdline: cmdline.clone(),
                virtio: virtio.clone(),
            })?
        }
    };
    let actual = machine.state_hash().0;
    if actual != header.start_hash {
        return Err(StartError::Hash {
            expected: header.start_hash,
            actual,
        });
    }
    Ok(machine)
}
