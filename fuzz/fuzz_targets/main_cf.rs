#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| conf::fuzz::main_cf(data));
