//! ftvm's built-in SBI: the supervisor binary interface answered in Rust, without M-mode firmware.
//!
//! Implements base, TIME, IPI, RFENCE, HSM, SRST and DBCN (plus the legacy console, timer and
//! shutdown calls) for one hart. Arguments come from the guest and are untrusted: unknown calls get
//! SBI_ERR_NOT_SUPPORTED, console buffers are bounded and must lie in RAM.

use ftvm_cpu::hart::irq;
use ftvm_cpu::{Hart, Ram};

use crate::devices::Devices;
use crate::events::EffectKind;

const SBI_SUCCESS: i64 = 0;
const SBI_ERR_NOT_SUPPORTED: i64 = -2;
const SBI_ERR_INVALID_PARAM: i64 = -3;
const SBI_ERR_INVALID_ADDRESS: i64 = -5;
const SBI_ERR_ALREADY_AVAILABLE: i64 = -6;

const EXT_BASE: u64 = 0x10;
const EXT_TIME: u64 = 0x5449_4d45;
const EXT_IPI: u64 = 0x0073_5049;
const EXT_RFENCE: u64 = 0x5246_4e43;
const EXT_HSM: u64 = 0x0048_534d;
const EXT_SRST: u64 = 0x5352_5354;
const EXT_DBCN: u64 = 0x4442_434e;

/// SBI specification 2.0.
const SPEC_VERSION: i64 = 2 << 24;
/// Not an assigned implementation id; tells a curious guest this is not OpenSBI.
const IMPL_ID: i64 = 0x4654;
/// Longest console write handled in one call: a guest asking for more gets a partial write, which
/// the DBCN spec allows.
const MAX_CONSOLE_WRITE: u64 = 4096;

/// Handles the ECALL the hart just stopped on. Returns a power-off or reset the guest asked for.
pub fn call(hart: &mut Hart, ram: &Ram, dev: &mut Devices) -> Option<EffectKind> {
    let a = |i: usize| hart.x(10 + i);
    let (ext, func) = (a(7), a(6));
    let mut effect = None;
    let (error, value): (i64, i64) = match (ext, func) {
        // Legacy extensions (v0.1): the result goes in a0 alone.
        (0x00, _) => {
            dev.sbi_timer = a(0);
            legacy(hart, 0);
            return None;
        }
        (0x01, _) => {
            dev.console_out.push(a(0) as u8);
            legacy(hart, 0);
            return None;
        }
        (0x02, _) => {
            legacy(hart, -1);
            return None;
        }
        (0x08, _) => {
            legacy(hart, 0);
            return Some(EffectKind::PowerOff(0));
        }
        (EXT_BASE, 0) => (SBI_SUCCESS, SPEC_VERSION),
        (EXT_BASE, 1) => (SBI_SUCCESS, IMPL_ID),
        (EXT_BASE, 2) => (SBI_SUCCESS, 1),
        (EXT_BASE, 3) => (SBI_SUCCESS, probe(a(0)) as i64),
        (EXT_BASE, 4..=6) => (SBI_SUCCESS, 0), // mvendorid, marchid, mimpid
        (EXT_TIME, 0) => {
            dev.sbi_timer = a(0);
            (SBI_SUCCESS, 0)
        }
        (EXT_IPI, 0) => {
            if targets_hart0(a(0), a(1)) {
                hart.set_software_pending(irq::SSIP, true);
            }
            (SBI_SUCCESS, 0)
        }
        (EXT_RFENCE, 0..=6) => {
            hart.flush_tlb();
            (SBI_SUCCESS, 0)
        }
        (EXT_HSM, 0) => (SBI_ERR_ALREADY_AVAILABLE, 0),
        (EXT_HSM, 2) => match a(0) {
            0 => (SBI_SUCCESS, 0), // started
            _ => (SBI_ERR_INVALID_PARAM, 0),
        },
        (EXT_SRST, 0) => match a(0) {
            0 => {
                effect = Some(EffectKind::PowerOff(a(1) as u32));
                (SBI_SUCCESS, 0)
            }
            1 | 2 => {
                effect = Some(EffectKind::Reset);
                (SBI_SUCCESS, 0)
            }
            _ => (SBI_ERR_INVALID_PARAM, 0),
        },
        (EXT_DBCN, 0) => {
            let len = a(0).min(MAX_CONSOLE_WRITE);
            let mut buf = vec![0; len as usize];
            match ram.read_bytes(a(1), &mut buf) {
                Some(()) if a(2) == 0 => {
                    dev.console_out.extend_from_slice(&buf);
                    (SBI_SUCCESS, len as i64)
                }
                _ => (SBI_ERR_INVALID_ADDRESS, 0),
            }
        }
        (EXT_DBCN, 1) => (SBI_SUCCESS, 0), // console read: nothing, input goes to the UART
        (EXT_DBCN, 2) => {
            dev.console_out.push(a(0) as u8);
            (SBI_SUCCESS, 0)
        }
        _ => (SBI_ERR_NOT_SUPPORTED, 0),
    };
    hart.set_x(10, error as u64);
    hart.set_x(11, value as u64);
    effect
}

fn legacy(hart: &mut Hart, a0: i64) {
    hart.set_x(10, a0 as u64);
}

fn probe(ext: u64) -> bool {
    matches!(
        ext,
        EXT_BASE | EXT_TIME | EXT_IPI | EXT_RFENCE | EXT_HSM | EXT_SRST | EXT_DBCN
    )
}

/// True if the (mask, base) pair of an SBI hart mask names hart 0 (base all-ones: every hart).
fn targets_hart0(mask: u64, base: u64) -> bool {
    base == u64::MAX || (base == 0 && mask & 1 != 0)
}
