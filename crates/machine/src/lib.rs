//! The whole ftvm machine: a pure state machine.
//!
//! STUB: signatures are the contract for the ISA test harness and the CLI.
//!
//! `state + input events -> state + output effects`: nothing in here reads a host clock, spawns a
//! thread or does I/O.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BootError {
    #[error("{0}")]
    Invalid(String),
}

/// Why [`Machine::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The instruction count reached the target.
    Reached,
    /// The hart waits for an interrupt and nothing is due before `next_deadline` (an `mtime`
    /// value; `None`: no timer armed). The host advances the clock or delivers input.
    Idle { next_deadline: Option<u64> },
    /// The guest powered the machine off (0 = success, as the test device's FAIL code otherwise).
    PowerOff(u32),
    /// The guest asked for a reset.
    Reset,
}

/// Result of running a guest to its end with virtual time (tests, benchmarks).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub exit: Exit,
    pub console: Vec<u8>,
    pub icount: u64,
}

pub struct Machine {}

impl Machine {
    /// A bare-metal ELF (ISA tests) started in M-mode at its entry point with `a0` = hart id and
    /// `a1` = device tree address, like QEMU's `-bios none -kernel test.elf`.
    pub fn bare_metal(elf: &[u8], ram_size: u64) -> Result<Machine, BootError> {
        let _ = (elf, ram_size);
        Err(BootError::Invalid("stub".into()))
    }

    /// Runs with the clock fast-forwarded over idle time until the guest powers off or resets,
    /// or `max_icount` instructions have run (then `exit` is `Reached`).
    pub fn run_to_end(&mut self, max_icount: u64) -> Outcome {
        let _ = max_icount;
        unimplemented!("stub")
    }
}
