//! The payment provider's webhook signature, the scheme Stripe uses:
//! `Seckill-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
//!
//! The timestamp is inside the signed text, so a captured request cannot be replayed after the
//! tolerance; the comparison is constant-time; several `v1` values are accepted (a provider
//! rotating its secret signs with both).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a signature's timestamp may be from our clock, either way.
pub const TOLERANCE_SECS: i64 = 300;

/// The header carrying the signature.
pub const HEADER: &str = "seckill-signature";

/// Why a webhook's signature was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Seckill-Signature header")]
    Missing,
    #[error("the Seckill-Signature header is not `t=<unix seconds>,v1=<hex>`")]
    Malformed,
    #[error("the signature's timestamp is more than {TOLERANCE_SECS} s from now")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// Verifies webhooks with one shared secret.
pub struct WebhookKey {
    key: Hmac<Sha256>,
}

impl WebhookKey {
    pub fn new(secret: &[u8]) -> Self {
        WebhookKey {
            // HMAC takes keys of any length.
            key: Hmac::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length")),
        }
    }

    fn mac(&self, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.key.clone();
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The header value a provider sends for `body` at `now_secs`.
    pub fn sign(&self, now_secs: i64, body: &[u8]) -> String {
        let t = now_secs.to_string();
        let tag = self.mac(&t, body).finalize().into_bytes();
        format!("t={t},v1={}", hex(&tag))
    }

    /// Accepts `header` for `body` at `now_secs`, or says why not.
    pub fn verify(&self, header: Option<&str>, body: &[u8], now_secs: i64) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let mut timestamp = None;
        let mut tags = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", t)) => timestamp = Some(t),
                Some(("v1", tag)) => tags.push(unhex(tag).ok_or(SignatureError::Malformed)?),
                Some(_) => {} // other schemes: ignored, as a provider may add them
                None => return Err(SignatureError::Malformed),
            }
        }
        let t = timestamp.ok_or(SignatureError::Malformed)?;
        let seconds: i64 = t.parse().map_err(|_| SignatureError::Malformed)?;
        if tags.is_empty() {
            return Err(SignatureError::Malformed);
        }
        // `abs_diff`: a timestamp near `i64::MIN` or `MAX` must not overflow the subtraction.
        if now_secs.abs_diff(seconds) > TOLERANCE_SECS.unsigned_abs() {
            return Err(SignatureError::Stale);
        }
        let expected = self.mac(t, body);
        // `verify_slice` compares in constant time.
        if tags.iter().any(|tag| expected.clone().verify_slice(tag).is_ok()) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)] as char, DIGITS[usize::from(b & 15)] as char])
        .collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"order_id":"x","payment_id":"p1"}"#;

    #[test]
    fn a_signed_body_verifies_within_the_tolerance_only() {
        let key = WebhookKey::new(b"whsec");
        let header = key.sign(1_000_000, BODY);
        assert_eq!(key.verify(Some(&header), BODY, 1_000_000), Ok(()));
        assert_eq!(key.verify(Some(&header), BODY, 1_000_300), Ok(()));
        assert_eq!(key.verify(Some(&header), BODY, 1_000_301), Err(SignatureError::Stale));
        assert_eq!(key.verify(Some(&header), BODY, 999_699), Err(SignatureError::Stale));
    }

    #[test]
    fn forged_tampered_and_malformed_signatures_are_refused() {
        let key = WebhookKey::new(b"whsec");
        let forged = WebhookKey::new(b"other").sign(100, BODY);
        assert_eq!(key.verify(Some(&forged), BODY, 100), Err(SignatureError::Mismatch));
        let header = key.sign(100, BODY);
        assert_eq!(
            key.verify(Some(&header), br#"{"order_id":"y","payment_id":"p1"}"#, 100),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = header.replacen("t=100", "t=101", 1);
        assert_eq!(key.verify(Some(&moved), BODY, 100), Err(SignatureError::Mismatch));
        assert_eq!(key.verify(None, BODY, 100), Err(SignatureError::Missing));
        for bad in [
            "",
            "t=100",
            "v1=00",
            "t=x,v1=00",
            "t=100,v1=zz",
            "t=100,v1=abc",
            "garbage",
        ] {
            assert_eq!(
                key.verify(Some(bad), BODY, 100),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn timestamps_at_the_ends_of_the_range_are_stale_not_a_panic() {
        let key = WebhookKey::new(b"whsec");
        for (t, now) in [
            (i64::MIN, 1_000_000),
            (i64::MAX, -1),
            (i64::MIN, i64::MAX),
            (1_000_000 + i64::MIN, 1_000_000),
        ] {
            let header = key.sign(t, BODY);
            assert_eq!(
                key.verify(Some(&header), BODY, now),
                Err(SignatureError::Stale),
                "t={t} now={now}"
            );
        }
    }

    #[test]
    fn a_rotating_provider_may_send_two_signatures() {
        let (old, new) = (WebhookKey::new(b"old"), WebhookKey::new(b"new"));
        let v1_old = old.sign(100, BODY);
        let v1_new = new.sign(100, BODY).replacen("t=100,", "", 1);
        let both = format!("{v1_old},{v1_new}");
        assert_eq!(new.verify(Some(&both), BODY, 100), Ok(()));
        assert_eq!(old.verify(Some(&both), BODY, 100), Ok(()));
    }
}
