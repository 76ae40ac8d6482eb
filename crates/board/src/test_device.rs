//! The sifive,test device (QEMU virt's power-off/reboot control at 0x100000).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestDevice;

/// What the guest asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestAction {
    /// 0 for "pass" (0x5555), else the failure code of (code << 16) | 0x3333.
    PowerOff(u32),
    Reset,
}

impl TestDevice {
    /// `None`: bad access; `Some(None)`: accepted, nothing to do.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Option<Option<TestAction>> {
        if offset != 0 || size < 4 {
            return None;
        }
        let v = value as u32;
        Some(match v & 0xffff {
            0x5555 => Some(TestAction::PowerOff(0)),
            0x3333 => Some(TestAction::PowerOff((v >> 16).max(1))),
            0x7777 => Some(TestAction::Reset),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let mut t = TestDevice;
        assert_eq!(t.write(0, 4, 0x5555), Some(Some(TestAction::PowerOff(0))));
        assert_eq!(
            t.write(0, 4, (7 << 16) | 0x3333),
            Some(Some(TestAction::PowerOff(7)))
        );
        assert_eq!(t.write(0, 4, 0x7777), Some(Some(TestAction::Reset)));
        assert_eq!(t.write(0, 4, 0x1234), Some(None));
        assert_eq!(t.write(8, 4, 0x5555), None);
    }
}
