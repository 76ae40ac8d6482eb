//! virtio-net (device id 1): a MAC, link up, no offloads.
//!
//! Transmit is deterministic and immediate: a frame is copied out at the notify and its buffer
//! returned at once. Receive is an input: the host delivers a frame at an instruction boundary
//! into the next buffer the driver posted.

use ftvm_cpu::Ram;
use serde::{Deserialize, Serialize};

use crate::queue::{Queue, QueueError};

/// virtio_net_hdr with VIRTIO_F_VERSION_1: 12 bytes, the last two `num_buffers`.
pub const NET_HDR: usize = 12;
/// The largest frame carried (a jumbo frame), bounding what a guest can make the host copy.
pub const MAX_FRAME: usize = 65_550;

const F_MAC: u64 = 1 << 5;
const F_STATUS: u64 = 1 << 16;
const LINK_UP: u16 = 1;

pub const RX: usize = 0;
pub const TX: usize = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Net {
    pub mac: [u8; 6],
}

impl Net {
    pub fn features(&self) -> u64 {
        F_MAC | F_STATUS
    }

    pub fn config(&self) -> Vec<u8> {
        let mut c = self.mac.to_vec();
        c.extend_from_slice(&LINK_UP.to_le_bytes());
        c
    }

    /// Takes every frame the driver queued for transmission.
    pub fn transmit(
        &mut self,
        q: &mut Queue,
        ram: &mut Ram,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<bool, QueueError> {
        let mut used = false;
        while let Some(chain) = q.pop(ram)? {
            let data = chain.read_all(ram, NET_HDR + MAX_FRAME);
            // Shorter than a header plus an Ethernet header: nothing to send.
            if data.len() >= NET_HDR + 14 {
                out.push(data[NET_HDR..].to_vec());
            }
            q.push_used(ram, chain.head, 0)?;
            used = true;
        }
        Ok(used)
    }

    /// Puts `frame` in the next posted receive buffer; false if none is posted (dropped).
    pub fn receive(
        &mut self,
        q: &mut Queue,
        ram: &mut Ram,
        frame: &[u8],
    ) -> Result<bool, QueueError> {
        let Some(chain) = q.pop(ram)? else {
            return Ok(false);
        };
        let mut hdr = [0u8; NET_HDR];
        hdr[10] = 1; // num_buffers
        let mut n = chain.write_from(ram, 0, &hdr);
        n += chain.write_from(ram, NET_HDR as u64, &frame[..frame.len().min(MAX_FRAME)]);
        q.push_used(ram, chain.head, n as u32)?;
        Ok(true)
    }
}
