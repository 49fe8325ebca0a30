#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| seckill_fuzz::webhook_signature(data));
