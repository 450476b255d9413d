//! libFuzzer entry point; the property lives in `graphguard_fuzz::ids`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| graphguard_fuzz::ids(data));
