//! Host backends for the machine's virtio devices: a raw disk image file, the host's entropy.
//!
//! The machine hands out requests as `EffectKind::Io` effects; [`IoBackends::serve`] carries
//! each out and returns the completion to apply as an input event. Requests are served in the
//! order the guest issued them, and a failed disk operation completes with an I/O error status
//! for the guest to see (never a lost write reported as done).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ftvm_machine::InputEvent;
use ftvm_virtio::{BlockOp, Request, S_IOERR, S_OK, SECTOR};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DiskError {
    #[error("disk image {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("disk image {path} is {size} bytes, not a whole number of 512-byte sectors")]
    Size { path: PathBuf, size: u64 },
    #[error(transparent)]
    Nbd(#[from] crate::nbd::NbdError),
}

/// Opens a VM disk named on the command line: an image file, or `nbd://HOST[:PORT]/EXPORT`
/// (a shared disk on a storage host). The backend and its size in bytes.
pub fn open_disk(disk: &Path) -> Result<(Box<dyn BlockBackend>, u64), DiskError> {
    if let Some(url) = disk.to_str().filter(|d| d.starts_with("nbd://")) {
        let (d, size) = crate::nbd::NbdDisk::open(url)?;
        return Ok((Box::new(d), size));
    }
    let (d, size) = FileDisk::open(disk, false)?;
    Ok((Box::new(d), size))
}

/// Where a block device's sectors live.
pub trait BlockBackend: Send {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> std::io::Result<()>;
}

/// A raw disk image file, opened by path. Flush is `fsync`.
pub struct FileDisk {
    file: File,
}

impl FileDisk {
    /// Opens `path`; returns the disk and its size in bytes.
    pub fn open(path: &Path, read_only: bool) -> Result<(FileDisk, u64), DiskError> {
        let open_err = |source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(open_err)?;
        let size = file.metadata().map_err(open_err)?.len();
        if size == 0 || !size.is_multiple_of(SECTOR) {
            return Err(DiskError::Size {
                path: path.to_path_buf(),
                size,
            });
        }
        Ok((FileDisk { file }, size))
    }
}

impl BlockBackend for FileDisk {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(data, offset)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

impl IoBackends {
    /// Frames waiting for NICs that have a receive buffer posted, at most one per NIC per call
    /// (a frame for a NIC with no buffer waits in its socket, not dropped). `ready(slot)` says
    /// whether the guest can take one now.
    pub fn receive(&mut self, mut ready: impl FnMut(u8) -> bool) -> Vec<InputEvent> {
        let mut events = Vec::new();
        let mut gone = Vec::new();
        for (&slot, port) in &mut self.nets {
            if !ready(slot) {
                continue;
            }
            match port.try_recv() {
                Ok(Some(frame)) => {
                    self.stats.frames_received += 1;
                    events.push(InputEvent::NetRx { slot, frame });
                }
                Ok(None) => {}
                Err(_) => gone.push(slot),
            }
        }
        for slot in gone {
            // The switch went away: the NIC stays, its cable is pulled.
            self.nets.remove(&slot);
            self.stats.links_lost += 1;
        }
        events
    }

    /// Descriptors to wait on while the guest idles (frames arriving wake it).
    pub fn wait_fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.nets.values().map(|p| p.as_fd()).collect()
    }
}

/// Counters an operator looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    pub disk_reads: u64,
    pub disk_writes: u64,
    pub disk_flushes: u64,
    pub disk_errors: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub entropy_bytes: u64,
    pub frames_sent: u64,
    pub frames_received: u64,
    /// NICs whose link (switch connection or TAP device) closed.
    pub links_lost: u64,
    /// Frames sent by a NIC with no network attached.
    pub frames_dropped: u64,
}

/// The backends of one VM's devices, by virtio slot.
#[derive(Default)]
pub struct IoBackends {
    pub disks: BTreeMap<u8, Box<dyn BlockBackend>>,
    /// NICs' links: switch ports or TAP devices.
    pub nets: BTreeMap<u8, ftvm_net::Port>,
    /// Serve entropy requests from the host's `/dev/urandom`.
    pub entropy: bool,
    pub stats: IoStats,
}

impl IoBackends {
    /// Carries out `request` from the device in `slot`; returns the completion to apply now.
    pub fn serve(&mut self, slot: u8, request: &Request) -> Option<InputEvent> {
        match request {
            Request::Block { id, op } => {
                let disk = self.disks.get_mut(&slot)?;
                let (status, data) = match op {
                    BlockOp::Read { sector, len } => {
                        let mut buf = vec![0; *len as usize];
                        match disk.read_at(sector * SECTOR, &mut buf) {
                            Ok(()) => {
                                self.stats.disk_reads += 1;
                                self.stats.bytes_read += *len as u64;
                                (S_OK, buf)
                            }
                            Err(_) => (S_IOERR, Vec::new()),
                        }
                    }
                    BlockOp::Write { sector, data } => match disk.write_at(sector * SECTOR, data) {
                        Ok(()) => {
                            self.stats.disk_writes += 1;
                            self.stats.bytes_written += data.len() as u64;
                            (S_OK, Vec::new())
                        }
                        Err(_) => (S_IOERR, Vec::new()),
                    },
                    BlockOp::Flush => match disk.flush() {
                        Ok(()) => {
                            self.stats.disk_flushes += 1;
                            (S_OK, Vec::new())
                        }
                        Err(_) => (S_IOERR, Vec::new()),
                    },
                };
                if status != S_OK {
                    self.stats.disk_errors += 1;
                }
                Some(InputEvent::BlockDone {
                    slot,
                    id: *id,
                    status,
                    data,
                })
            }
            Request::Entropy { id, len } => {
                if !self.entropy {
                    return None;
                }
                let mut bytes = vec![0; *len as usize];
                File::open("/dev/urandom")
                    .and_then(|mut f| f.read_exact(&mut bytes))
                    .ok()?;
                self.stats.entropy_bytes += *len as u64;
                Some(InputEvent::Entropy {
                    slot,
                    id: *id,
                    bytes,
                })
            }
            Request::NetTx(frame) => {
                match self.nets.get(&slot) {
                    Some(port) if port.send(frame) => self.stats.frames_sent += 1,
                    _ => self.stats.frames_dropped += 1,
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_disk_round_trips_and_reports_errors_to_the_guest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let (disk, size) = FileDisk::open(&path, false).unwrap();
        assert_eq!(size, 4096);
        let mut io = IoBackends::default();
        io.disks.insert(0, Box::new(disk));
        let write = Request::Block {
            id: 1,
            op: BlockOp::Write {
                sector: 2,
                data: vec![0xaa; 512],
            },
        };
        assert!(matches!(
            io.serve(0, &write),
            Some(InputEvent::BlockDone { status: S_OK, .. })
        ));
        let flush = Request::Block {
            id: 2,
            op: BlockOp::Flush,
        };
        assert!(matches!(
            io.serve(0, &flush),
            Some(InputEvent::BlockDone { status: S_OK, .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap()[1024..1536], [0xaa; 512]);
        // Past the end of the file: the guest gets an I/O error, not garbage or a panic.
        let read = Request::Block {
            id: 3,
            op: BlockOp::Read {
                sector: 100,
                len: 512,
            },
        };
        assert!(matches!(
            io.serve(0, &read),
            Some(InputEvent::BlockDone {
                status: S_IOERR,
                ..
            })
        ));
        assert_eq!(io.stats.disk_errors, 1);
    }

    #[test]
    fn odd_sized_images_are_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.img");
        std::fs::write(&path, vec![0u8; 1000]).unwrap();
        let err = FileDisk::open(&path, false).err().unwrap().to_string();
        assert!(err.contains("512-byte sectors"), "{err}");
        let err = FileDisk::open(&dir.path().join("missing.img"), false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("missing.img"), "{err}");
    }
}
