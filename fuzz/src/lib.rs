//! The bodies of the fuzz targets (`fuzz_targets/*.rs`), one function per parser of untrusted
//! input. Each takes the fuzzer's bytes, must never panic, and checks what a successful parse
//! promises. `tests/properties.rs` runs the same functions over random inputs on stable Rust.

use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::Parser;
use hmac::{Hmac, Mac};
use seckill::config::ServeConfig;
use seckill::domain::{
    NewSaleRequest, SaleId, SaleSpec, UserId, MAX_PAYMENT_WINDOW_SECS, MAX_PER_USER_LIMIT, MAX_STOCK,
};
use seckill::http::identity::Authenticator;
use seckill::http::purchase_token::PurchaseTokens;
use seckill::payment::webhook::{WebhookKey, TOLERANCE_SECS};
use sha2::Sha256;

/// The HS256 key of the JWT target's authenticator.
pub const JWT_SECRET: &str = "fuzz-jwt-secret";

/// `seckill serve`'s settings as a parser of their own.
#[derive(Debug, Parser)]
#[command(name = "seckill")]
struct Serve {
    #[command(flatten)]
    config: ServeConfig,
}

/// Splits off the first 8 bytes as a number (zeros when the input is shorter).
fn take_i64(data: &[u8]) -> (i64, &[u8]) {
    let mut number = [0u8; 8];
    let n = data.len().min(8);
    number[..n].copy_from_slice(&data[..n]);
    (i64::from_le_bytes(number), &data[n..])
}

/// The alphabet a buyer id is made of.
fn is_user_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_-.:@".contains(&b)
}

/// `UserId::parse` (and `SaleId::parse`), directly and through the `X-User-Id` header.
pub fn user_id(data: &[u8]) {
    if let Ok(raw) = std::str::from_utf8(data) {
        if let Ok(id) = UserId::parse(raw) {
            assert_eq!(id.as_str(), raw);
            assert!((1..=UserId::MAX_LEN).contains(&raw.len()), "{raw:?}");
            assert!(raw.bytes().all(is_user_id_byte), "{raw:?}");
        }
        if let Some(sale) = SaleId::parse(raw) {
            assert!(sale.0 > 0);
        }
    }
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-user-id", value);
    if let Ok(Some(user)) = Authenticator::trusting_headers().identify(&headers) {
        assert!(user.as_str().bytes().all(is_user_id_byte));
        assert!(
            !user.as_str().starts_with("anon-"),
            "a reserved id was accepted: {user}"
        );
    }
}

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let serve = Serve::try_parse_from(["seckill", "--auth", "either", "--jwt-secret", JWT_SECRET])
            .expect("the fuzz target's settings parse");
        Authenticator::from_config(&serve.config).expect("the fuzz target's authenticator")
    })
}

/// `header.claims.signature` for these JSON texts, signed with [`JWT_SECRET`]: the fuzzer's
/// headers and claims get past the signature and reach the claims' validation.
pub fn signed_jwt(header: &[u8], claims: &[u8]) -> String {
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let mut mac = Hmac::<Sha256>::new_from_slice(JWT_SECRET.as_bytes()).expect("HMAC takes any key");
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// JWT validation (`Authenticator::identify` with `Authorization`, `--auth either`). An odd
/// first byte: the rest is `<header JSON>\n<claims JSON>`, signed with the right key; even:
/// the rest is the `Authorization` header as sent.
pub fn jwt(data: &[u8]) {
    let Some((selector, rest)) = data.split_first() else {
        return;
    };
    let value = if selector & 1 == 1 {
        let mut parts = rest.splitn(2, |b| *b == b'\n');
        let header = parts.next().unwrap_or_default();
        let claims = parts.next().unwrap_or_default();
        HeaderValue::from_str(&format!("Bearer {}", signed_jwt(header, claims)))
    } else {
        HeaderValue::from_bytes(rest)
    };
    let Ok(value) = value else { return };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    if let Ok(Some(user)) = authenticator().identify(&headers) {
        assert!(UserId::parse(user.as_str()).is_ok(), "{user}");
        assert!(
            !user.as_str().starts_with("anon-"),
            "a reserved id was accepted: {user}"
        );
    }
}

/// `PurchaseTokens::verify` of a made-up token, and issue → verify of a real one. Input: the
/// clock (8 bytes), the sale (8 bytes), then the token text.
pub fn purchase_token(data: &[u8]) {
    let tokens = PurchaseTokens::new(b"fuzz-purchase-token-key", Duration::from_secs(30));
    let (now, rest) = take_i64(data);
    let (sale, rest) = take_i64(rest);
    let sale = SaleId(sale);
    let user = UserId::parse("fuzz-buyer").expect("a valid id");
    if let Ok(token) = std::str::from_utf8(rest) {
        if tokens.verify(token, sale, &user, now).is_ok() {
            // Only a token this key issued verifies; the fuzzer can only find one by luck.
            let (expires, _) = token.split_once('.').expect("a verified token has a dot");
            let expires: i64 = expires.parse().expect("a verified token's expiry is a number");
            assert!(now <= expires, "an expired token verified: {token} at {now}");
        }
    }
    let (token, expires) = tokens.issue(sale, &user, now);
    assert!(tokens.verify(&token, sale, &user, now).is_ok(), "{token} at {now}");
    if let Some(later) = expires.checked_add(1) {
        assert!(
            tokens.verify(&token, sale, &user, later).is_err(),
            "{token} after its expiry"
        );
    }
    let other = UserId::parse("another-buyer").expect("a valid id");
    assert!(
        tokens.verify(&token, sale, &other, now).is_err(),
        "another buyer's token verified"
    );
}

/// `WebhookKey::verify` of a made-up `Seckill-Signature`, and sign → verify of a real one.
/// Input: the clock (8 bytes), the header up to the first newline, then the body.
pub fn webhook_signature(data: &[u8]) {
    let key = WebhookKey::new(b"fuzz-webhook-key");
    let (now, rest) = take_i64(data);
    let mut parts = rest.splitn(2, |b| *b == b'\n');
    let header = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    if let Ok(header) = std::str::from_utf8(header) {
        let _ = key.verify(Some(header), body, now);
        // The same body signed at the header's bytes read as a time: verified exactly within
        // the tolerance.
        let (signed_at, _) = take_i64(header.as_bytes());
        let signature = key.sign(signed_at, body);
        let within = now.abs_diff(signed_at) <= TOLERANCE_SECS.unsigned_abs();
        assert_eq!(
            key.verify(Some(&signature), body, now).is_ok(),
            within,
            "{signature} at {now}"
        );
    }
    assert!(key.verify(Some(&key.sign(now, body)), body, now).is_ok());
}

/// `SaleSpec::parse` of a `POST /api/sales` body: what it accepts is within the documented
/// bounds.
pub fn sale_spec(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<NewSaleRequest>(data) else {
        return;
    };
    let Ok(spec) = SaleSpec::parse(request, 60) else { return };
    let name_chars = spec.name.chars().count();
    assert!((1..=200).contains(&name_chars), "{:?}", spec.name);
    assert_eq!(spec.name.trim(), spec.name);
    assert!(spec.stock <= MAX_STOCK);
    assert!((1..=MAX_PER_USER_LIMIT).contains(&spec.per_user_limit));
    assert!(spec.payment_window_secs <= MAX_PAYMENT_WINDOW_SECS);
    assert!(!spec.demo);
    if let (Some(starts), Some(ends)) = (spec.starts_at, spec.ends_at) {
        assert!(starts < ends);
    }
    let now = seckill::domain::now_millis();
    let _ = (spec.pay_by(now), spec.window_refusal(now), spec.status(spec.stock, now));
}

/// The TOML config file (`--config`): parsed, checked key by key, and its values parsed as the
/// flags they stand for. Any error is an answer; a panic is a bug.
pub fn config_file(data: &[u8]) {
    static FILES: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "seckill-fuzz-config-{}-{}.toml",
        std::process::id(),
        FILES.fetch_add(1, Ordering::Relaxed) % 64
    ));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let args: Vec<OsString> = vec!["seckill".into(), "--config".into(), path.clone().into()];
    let _ = seckill::config::load::<Serve>(args);
    let _ = std::fs::remove_file(&path);
}
