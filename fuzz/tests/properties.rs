//! The fuzz targets' bodies over random inputs, on stable Rust: `cargo fuzz` explores far more
//! (coverage-guided), this keeps every target compiled and run by a plain `cargo test`.

use proptest::collection::vec;
use proptest::prelude::*;

/// A JSON value of the kinds the parsers meet, as text.
fn json_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[ -~]{0,12}".prop_map(|s| serde_json::Value::from(s).to_string()),
        Just("null".to_owned()),
        Just("\"2026-11-25T15:00:00Z\"".to_owned()),
        Just("1.5e300".to_owned()),
    ]
}

/// A JSON object with some of these keys.
fn json_object(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    vec((proptest::sample::select(keys), json_scalar()), 0..6).prop_map(|fields| {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn user_id(data in vec(any::<u8>(), 0..100), text in "[A-Za-z0-9_.:@-]{0,70}") {
        seckill_fuzz::user_id(&data);
        seckill_fuzz::user_id(text.as_bytes());
    }

    #[test]
    fn jwt(
        data in vec(any::<u8>(), 0..200),
        header in json_object(&["alg", "typ", "crit", "kid"]),
        claims in json_object(&["sub", "exp", "nbf", "iss", "aud", "iat"]),
    ) {
        seckill_fuzz::jwt(&data);
        seckill_fuzz::jwt(format!("\u{1}{header}\n{claims}").as_bytes());
        seckill_fuzz::jwt(format!("\u{1}{{\"alg\":\"HS256\"}}\n{claims}").as_bytes());
    }

    #[test]
    fn purchase_token(now in any::<i64>(), sale in any::<i64>(), token in "[0-9+-]{0,20}\\.[A-Za-z0-9_-]{0,50}", data in vec(any::<u8>(), 0..100)) {
        seckill_fuzz::purchase_token(&data);
        let mut input = now.to_le_bytes().to_vec();
        input.extend(sale.to_le_bytes());
        input.extend(token.as_bytes());
        seckill_fuzz::purchase_token(&input);
    }

    #[test]
    fn webhook_signature(now in any::<i64>(), header in "(t=-?[0-9]{1,20}|v1=[0-9a-f]{0,66}|[a-z0-9]=[ -~]{0,5})(,(t=-?[0-9]{1,20}|v1=[0-9a-f]{0,66}|[ -~]{0,5}))*", body in vec(any::<u8>(), 0..64), data in vec(any::<u8>(), 0..100)) {
        seckill_fuzz::webhook_signature(&data);
        let mut input = now.to_le_bytes().to_vec();
        input.extend(header.as_bytes());
        input.push(b'\n');
        input.extend(body);
        seckill_fuzz::webhook_signature(&input);
    }

    #[test]
    fn sale_spec(
        body in json_object(&["name", "stock", "starts_at", "ends_at", "per_user_limit", "payment_window_secs", "other"]),
        data in vec(any::<u8>(), 0..100),
    ) {
        seckill_fuzz::sale_spec(body.as_bytes());
        seckill_fuzz::sale_spec(&data);
    }

    #[test]
    fn config_file(
        lines in vec((prop_oneof![
            proptest::sample::select(&[
                "listen", "data_dir", "demo_stock", "admin_token", "auth", "jwt_secret", "rate_limit_ip",
                "max_connections", "payment_window_secs", "payment_provider", "backend", "no_consumer",
                "log_format", "config", "header_timeout_secs",
            ][..]).prop_map(str::to_owned),
            "[a-z_]{1,24}",
        ], json_scalar()), 0..5),
        data in vec(any::<u8>(), 0..100),
    ) {
        let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        seckill_fuzz::config_file(text.as_bytes());
        seckill_fuzz::config_file(&data);
    }
}
