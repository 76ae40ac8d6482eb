#![no_main]
//! Any byte string as an HTTP request head to a metrics server: its clients are untrusted.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ftvm_metrics::http::fuzz_head(data);
});
