#![no_main]
//! Any byte string as what an NBD server sends, in the handshake or as replies: a storage
//! host is untrusted.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ftvm_host::fuzz_nbd(data);
});
