//! The machine: hart + RAM + devices, driven by [`Machine::run`] and [`Machine::apply`].

use ftvm_board::test_device::TestAction;
use ftvm_cpu::{Hart, Ram, Stop};

use crate::boot;
use crate::config::{Firmware, MachineConfig};
use crate::devices::Devices;
use crate::events::{Effect, EffectKind, InputEvent};
use crate::hash::PageHashes;
use crate::{BootError, sbi};

/// Why [`Machine::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The instruction count reached the target.
    Reached,
    /// The hart waits for an interrupt and nothing is due before `next_deadline` (an `mtime`
    /// value; `None`: no timer armed). The host advances the clock or delivers input.
    Idle { next_deadline: Option<u64> },
    /// The guest powered the machine off (0 = success, the test device's failure code otherwise).
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

pub struct Machine {
    pub(crate) hart: Hart,
    pub(crate) ram: Ram,
    pub(crate) dev: Devices,
    pub(crate) effects: Vec<Effect>,
    /// A power-off or reset reported by the last run, repeated by every later run.
    pub(crate) halted: Option<Exit>,
    pub(crate) page_hashes: PageHashes,
}

impl Machine {
    pub(crate) fn empty(ram_size: u64) -> Machine {
        Machine {
            hart: Hart::new(0),
            ram: Ram::new(ftvm_board::memmap::RAM_BASE, ram_size as usize),
            dev: Devices::new(),
            effects: Vec::new(),
            halted: None,
            page_hashes: PageHashes::default(),
        }
    }

    /// A machine ready to boot a Linux guest.
    pub fn new(cfg: &MachineConfig) -> Result<Machine, BootError> {
        let mut m = Machine::empty(cfg.ram_size);
        boot::load_linux(cfg, &mut m.ram, &mut m.hart)?;
        if matches!(cfg.firmware, Firmware::Builtin) {
            m.hart.sbi_intercept = true;
        }
        Ok(m)
    }

    /// A bare-metal ELF (ISA tests) started in M-mode at its entry point with `a0` = hart id and
    /// `a1` = device tree address, like QEMU's `-bios none -kernel test.elf`.
    pub fn bare_metal(elf: &[u8], ram_size: u64) -> Result<Machine, BootError> {
        let mut m = Machine::empty(ram_size);
        boot::load_bare_metal(elf, &mut m.ram, &mut m.hart)?;
        Ok(m)
    }

    pub fn icount(&self) -> u64 {
        self.hart.icount()
    }

    /// The machine timer now.
    pub fn mtime(&self) -> u64 {
        self.hart.mtime()
    }

    pub fn hart(&self) -> &Hart {
        &self.hart
    }

    pub fn ram(&self) -> &Ram {
        &self.ram
    }

    /// Runs until the instruction count reaches `until`, the hart idles, or the guest powers off
    /// or resets. Never executes past `until`.
    pub fn run(&mut self, until: u64) -> Exit {
        let exit = self.run_inner(until);
        self.collect_console();
        exit
    }

    fn run_inner(&mut self, until: u64) -> Exit {
        loop {
            if let Some(exit) = self.halted {
                return exit;
            }
            let now = self.hart.mtime();
            let lines = self.dev.irq_lines(now);
            self.hart.set_irq_lines(lines);
            if self.hart.icount() >= until {
                return Exit::Reached;
            }
            if self.hart.is_waiting() && !self.hart.interrupt_pending() {
                return Exit::Idle {
                    next_deadline: self.dev.next_deadline(now),
                };
            }
            let stop_at = match self.dev.next_deadline(now) {
                Some(t) => until.min(self.hart.clock().icount_when(t).max(self.hart.icount() + 1)),
                None => until,
            };
            match self.hart.run(&mut self.ram, &mut self.dev, stop_at) {
                Stop::Reached | Stop::Wfi => {}
                Stop::Mmio => self.after_mmio(),
                Stop::SbiCall => {
                    if let Some(kind) = sbi::call(&mut self.hart, &self.ram, &mut self.dev) {
                        self.halt(kind);
                    }
                }
            }
        }
    }

    fn after_mmio(&mut self) {
        // Console bytes leave tagged with the exact instruction that wrote them, however the
        // host slices the run: replay compares outputs instruction for instruction.
        self.collect_console();
        if let Some(t) = self.dev.set_mtime.take() {
            let icount = self.hart.icount();
            self.hart.clock_mut().anchor(icount, t);
        }
        match self.dev.action.take() {
            Some(TestAction::PowerOff(code)) => self.halt(EffectKind::PowerOff(code)),
            Some(TestAction::Reset) => self.halt(EffectKind::Reset),
            None => {}
        }
    }

    fn halt(&mut self, kind: EffectKind) {
        self.collect_console();
        self.halted = Some(match kind {
            EffectKind::PowerOff(code) => Exit::PowerOff(code),
            _ => Exit::Reset,
        });
        self.effects.push(Effect {
            icount: self.hart.icount(),
            kind,
        });
    }

    fn collect_console(&mut self) {
        if !self.dev.console_out.is_empty() {
            let bytes = std::mem::take(&mut self.dev.console_out);
            self.effects.push(Effect {
                icount: self.hart.icount(),
                kind: EffectKind::Console(bytes),
            });
        }
    }

    /// Applies an input event at the current instruction count.
    pub fn apply(&mut self, event: &InputEvent) {
        match event {
            InputEvent::ClockAnchor { mtime } => {
                let icount = self.hart.icount();
                self.hart.clock_mut().anchor(icount, *mtime);
            }
            InputEvent::ConsoleInput(bytes) => {
                self.dev.uart.push_input(bytes);
            }
        }
    }

    /// The outputs produced since the last call, oldest first.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Runs with the clock fast-forwarded over idle time until the guest powers off or resets,
    /// or `max_icount` instructions have run (then `exit` is `Reached`). An idle hart with no timer
    /// armed can never wake: that ends the run too, as `Idle`.
    pub fn run_to_end(&mut self, max_icount: u64) -> Outcome {
        let mut console = Vec::new();
        let exit = loop {
            let exit = self.run(max_icount);
            for e in self.take_effects() {
                if let EffectKind::Console(bytes) = e.kind {
                    console.extend_from_slice(&bytes);
                }
            }
            match exit {
                Exit::Idle {
                    next_deadline: Some(t),
                } => self.apply(&InputEvent::ClockAnchor { mtime: t }),
                other => break other,
            }
        };
        Outcome {
            exit,
            console,
            icount: self.icount(),
        }
    }
}
