#![no_main]
//! Any byte string as the FT logging channel's messages, both ways: a peer host is untrusted.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ftvm_ft::fuzz_wire(data);
});
