//! Purchase tokens: the hidden purchase path. A buyer fetches one while the sale is live
//! (`GET /api/sales/{id}/token`); it is `<expiry ms>.<HMAC-SHA256(sale, user, expiry)>`, so it
//! works for that buyer and sale only, and only until it expires. Nothing is stored: any
//! instance sharing the key verifies it with one HMAC and no round-trip.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error::ApiError;
use crate::domain::{Millis, SaleId, UserId};

type HmacSha256 = Hmac<Sha256>;

pub struct PurchaseTokens {
    key: HmacSha256,
    ttl_ms: i64,
}

impl PurchaseTokens {
    pub fn new(secret: &[u8], ttl: std::time::Duration) -> Self {
        PurchaseTokens {
            // HMAC takes keys of any length.
            key: HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length")),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// A key of 32 random bytes: tokens then verify only on this process.
    pub fn with_random_key(ttl: std::time::Duration) -> Self {
        Self::new(&crate::domain::random_key(), ttl)
    }

    fn mac(&self, sale: SaleId, user: &UserId, expires: Millis) -> HmacSha256 {
        let mut mac = self.key.clone();
        mac.update(&sale.0.to_be_bytes());
        mac.update(&expires.to_be_bytes());
        mac.update(user.as_str().as_bytes());
        mac
    }

    /// A token for this buyer and sale, and when it expires.
    pub fn issue(&self, sale: SaleId, user: &UserId, now: Millis) -> (String, Millis) {
        let expires = now.saturating_add(self.ttl_ms);
        let tag = self.mac(sale, user, expires).finalize().into_bytes();
        (format!("{expires}.{}", URL_SAFE_NO_PAD.encode(tag)), expires)
    }

    pub fn verify(&self, token: &str, sale: SaleId, user: &UserId, now: Millis) -> Result<(), ApiError> {
        if self.check(token, sale, user, now) {
            Ok(())
        } else {
            Err(ApiError::InvalidPurchaseToken)
        }
    }

    /// Whether the token was issued under this key for this buyer and sale and is still live.
    pub fn check(&self, token: &str, sale: SaleId, user: &UserId, now: Millis) -> bool {
        let Some((expires, tag)) = token.split_once('.') else {
            return false;
        };
        let Ok(expires) = expires.parse::<Millis>() else {
            return false;
        };
        let mut decoded = [0u8; 32];
        if !matches!(URL_SAFE_NO_PAD.decode_slice(tag, &mut decoded), Ok(32)) {
            return false;
        }
        // Constant-time comparison of the tag.
        self.mac(sale, user, expires).verify_slice(&decoded).is_ok() && now <= expires
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn user(id: &str) -> UserId {
        UserId::parse(id).expect("valid")
    }

    #[test]
    fn a_token_works_for_its_buyer_and_sale_until_it_expires() {
        let tokens = PurchaseTokens::new(b"key", Duration::from_secs(30));
        let (token, expires) = tokens.issue(SaleId(7), &user("alice"), 1_000);
        assert_eq!(expires, 31_000);
        assert!(tokens.verify(&token, SaleId(7), &user("alice"), 30_999).is_ok());
        assert!(
            tokens.verify(&token, SaleId(7), &user("alice"), 31_001).is_err(),
            "expired"
        );
        assert!(
            tokens.verify(&token, SaleId(7), &user("bob"), 2_000).is_err(),
            "another buyer"
        );
        assert!(
            tokens.verify(&token, SaleId(8), &user("alice"), 2_000).is_err(),
            "another sale"
        );
    }

    #[test]
    fn forged_tokens_fail() {
        let tokens = PurchaseTokens::new(b"key", Duration::from_secs(30));
        let (token, _) = tokens.issue(SaleId(7), &user("alice"), 1_000);
        let other_key = PurchaseTokens::new(b"other", Duration::from_secs(30));
        assert!(other_key.verify(&token, SaleId(7), &user("alice"), 2_000).is_err());
        // A later expiry with the same tag: the tag covers the expiry.
        let (_, tag) = token.split_once('.').expect("dot");
        let extended = format!("999999999.{tag}");
        assert!(tokens.verify(&extended, SaleId(7), &user("alice"), 2_000).is_err());
        for junk in ["", ".", "abc", "1.", "1.!!!!", "1.AAAA"] {
            assert!(tokens.verify(junk, SaleId(7), &user("alice"), 0).is_err(), "{junk}");
        }
    }
}
