#![no_main]
//! Any bytes as an F/D instruction and its operands: the guest chooses both.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ftvm_fpu::fuzz_execute(data);
});
