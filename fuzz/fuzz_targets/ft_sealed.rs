#![no_main]
//! Any byte string as what a peer host sends on the sealed FT channel: as its handshake, and as
//! the frames after one. A peer host is untrusted.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ftvm_ft::fuzz_sealed(data);
});
