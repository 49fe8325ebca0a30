#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| seckill_fuzz::purchase_token(data));
