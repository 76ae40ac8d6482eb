#![no_main]
//! Any byte string fed to the log reader: errors are fine, panics and runaway allocation are not.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(reader) = ftvm_log::Reader::new(data) {
        for record in reader {
            if record.is_err() {
                break;
            }
        }
    }
});
