//! virtio-rng (device id 4): the guest asks for entropy, the host's bytes come back as an input
//! (and so are logged: replay gets the same bytes).

use std::collections::BTreeMap;

use ftvm_cpu::Ram;
use serde::{Deserialize, Serialize};

use crate::queue::{Chain, Queue, QueueError};

/// Bytes per request at most (Linux asks for at most a page or so).
pub const MAX_ENTROPY: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rng {
    next_id: u64,
    pending: BTreeMap<u64, Chain>,
}

impl Rng {
    pub fn reset(&mut self) {
        self.pending.clear();
    }

    /// Requests taken but not completed: (id, bytes wanted).
    pub fn outstanding(&self) -> impl Iterator<Item = (u64, u32)> {
        self.pending
            .iter()
            .map(|(id, c)| (*id, c.writable_len().min(MAX_ENTROPY as u64) as u32))
    }

    pub fn take_requests(
        &mut self,
        q: &mut Queue,
        ram: &mut Ram,
        out: &mut Vec<(u64, u32)>,
    ) -> Result<bool, QueueError> {
        let mut used = false;
        while let Some(chain) = q.pop(ram)? {
            let len = chain.writable_len().min(MAX_ENTROPY as u64) as u32;
            if len == 0 {
                q.push_used(ram, chain.head, 0)?;
                used = true;
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            out.push((id, len));
            self.pending.insert(id, chain);
        }
        Ok(used)
    }

    pub fn complete(
        &mut self,
        q: &mut Queue,
        ram: &mut Ram,
        id: u64,
        bytes: &[u8],
    ) -> Result<bool, QueueError> {
        let Some(chain) = self.pending.remove(&id) else {
            return Ok(false);
        };
        let n = chain.write_from(ram, 0, &bytes[..bytes.len().min(MAX_ENTROPY as usize)]);
        q.push_used(ram, chain.head, n as u32)?;
        Ok(true)
    }
}
