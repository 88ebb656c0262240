#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rampwatch_fuzz::targets::jwt(data));
