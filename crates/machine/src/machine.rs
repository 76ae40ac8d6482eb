//! The machine: hart + RAM + devices, driven by [`Machine::run`] and [`Machine::apply`].

use ftvm_board::test_device::TestAction;
use ftvm_cpu::{Hart, Ram, Stop};
use ftvm_virtio::{Request, VirtioMmio};

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
    /// A device handed the host work (`EffectKind::Io` effects): the run stops at once so the
    /// host can start it, since the guest usually waits for its completion.
    Io,
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
        m.attach_virtio(cfg.virtio.clone())?;
        boot::load_linux(cfg, &mut m.ram, &mut m.hart)?;
        if matches!(cfg.firmware, Firmware::Builtin) {
            m.hart.sbi_intercept = true;
        }
        Ok(m)
    }

    /// A machine with zeroed RAM and the hart at reset, running nothing (tests and tools).
    pub fn blank(ram_size: u64) -> Result<Machine, BootError> {
        boot::check_ram_size(ram_size)?;
        Ok(Machine::empty(ram_size))
    }

    /// A bare-metal ELF (ISA tests) started in M-mode at its entry point with `a0` = hart id and
    /// `a1` = device tree address, like QEMU's `-bios none -kernel test.elf`.
    pub fn bare_metal(elf: &[u8], ram_size: u64) -> Result<Machine, BootError> {
        Machine::bare_metal_with(elf, ram_size, Vec::new())
    }

    /// [`Machine::bare_metal`] with virtio devices in its slots (the simulator's guest).
    pub fn bare_metal_with(
        elf: &[u8],
        ram_size: u64,
        virtio: Vec<ftvm_virtio::Device>,
    ) -> Result<Machine, BootError> {
        let mut m = Machine::empty(ram_size);
        m.attach_virtio(virtio)?;
        boot::load_bare_metal(elf, &mut m.ram, &mut m.hart)?;
        Ok(m)
    }

    fn attach_virtio(&mut self, virtio: Vec<ftvm_virtio::Device>) -> Result<(), BootError> {
        if virtio.len() > ftvm_board::memmap::VIRTIO_SLOTS as usize {
            return Err(BootError::Invalid(format!(
                "{} virtio devices, but the board has {} slots",
                virtio.len(),
                ftvm_board::memmap::VIRTIO_SLOTS
            )));
        }
        self.dev.virtio = virtio.into_iter().map(VirtioMmio::new).collect();
        Ok(())
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
    /// or resets. Never executes past `until`. A run to where the machine already stands changes
    /// nothing (not even the interrupt lines, which the next run brings up to date first): a
    /// replay that has nothing to run does not call it, so a recording must not see a change.
    pub fn run(&mut self, until: u64) -> Exit {
        if self.halted.is_none() && self.hart.icount() >= until {
            return Exit::Reached;
        }
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
                Stop::Mmio => {
                    if self.after_mmio() {
                        return Exit::Io;
                    }
                }
                Stop::SbiCall => {
                    if let Some(kind) = sbi::call(&mut self.hart, &self.ram, &mut self.dev) {
                        self.halt(kind);
                    }
                }
            }
        }
    }

    /// Returns whether a device produced I/O requests.
    fn after_mmio(&mut self) -> bool {
        // Console bytes leave tagged with the exact instruction that wrote them, however the
        // host slices the run: replay compares outputs instruction for instruction.
        self.collect_console();
        if let Some(t) = self.dev.set_mtime.take() {
            let icount = self.hart.icount();
            self.hart.clock_mut().anchor(icount, t);
        }
        // A QueueNotify is taken here, right after the instruction that wrote it.
        let mut io = false;
        for (slot, dev) in self.dev.virtio.iter_mut().enumerate() {
            for request in dev.process(&mut self.ram) {
                io = true;
                self.effects.push(Effect {
                    icount: self.hart.icount(),
                    kind: EffectKind::Io {
                        slot: slot as u8,
                        request,
                    },
                });
            }
        }
        match self.dev.action.take() {
            Some(TestAction::PowerOff(code)) => self.halt(EffectKind::PowerOff(code)),
            Some(TestAction::Reset) => self.halt(EffectKind::Reset),
            None => {}
        }
        io
    }

    /// Whether the NIC in `slot` has a receive buffer posted: a host holds frames until then
    /// rather than have them dropped.
    pub fn rx_ready(&self, slot: u8) -> bool {
        self.dev
            .virtio
            .get(slot as usize)
            .is_some_and(|d| d.rx_ready(&self.ram))
    }

    /// What the interpreter did so far (built with the `cpu-stats` feature).
    #[cfg(feature = "cpu-stats")]
    pub fn cpu_stats(&self) -> ftvm_cpu::Stats {
        self.hart.stats
    }

    /// Requests the devices took and the host has not completed, per slot, oldest first: what
    /// a backup going live issues again.
    pub fn outstanding_io(&self) -> Vec<(u8, Request)> {
        self.dev
            .virtio
            .iter()
            .enumerate()
            .flat_map(|(slot, d)| d.outstanding().into_iter().map(move |r| (slot as u8, r)))
            .collect()
    }

    /// The error state of each virtio device that is in one: (slot, reason).
    pub fn device_errors(&self) -> Vec<(u8, String)> {
        self.dev
            .virtio
            .iter()
            .enumerate()
            .filter_map(|(slot, d)| d.error().map(|e| (slot as u8, e.to_string())))
            .collect()
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
            // Completions for a slot without the right device are ignored: a log or host that
            // names a wrong slot cannot hurt the machine.
            InputEvent::BlockDone {
                slot,
                id,
                status,
                data,
            } => {
                if let Some(d) = self.dev.virtio.get_mut(*slot as usize) {
                    d.complete_block(*id, *status, data.clone(), &mut self.ram);
                }
            }
            InputEvent::NetRx { slot, frame } => {
                if let Some(d) = self.dev.virtio.get_mut(*slot as usize) {
                    d.deliver_rx(frame, &mut self.ram);
                }
            }
            InputEvent::Entropy { slot, id, bytes } => {
                if let Some(d) = self.dev.virtio.get_mut(*slot as usize) {
                    d.complete_entropy(*id, bytes, &mut self.ram);
                }
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
                // No host here to serve devices: their requests stay unanswered.
                Exit::Io => {}
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
