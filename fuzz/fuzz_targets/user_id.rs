#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| seckill_fuzz::user_id(data));
