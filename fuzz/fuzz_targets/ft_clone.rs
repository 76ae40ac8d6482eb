#![no_main]
//! Any byte string as a live clone's page batch and final state: a peer host is untrusted.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ftvm_ft::clone::fuzz_clone(data);
});
