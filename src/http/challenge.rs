//! A proof of work on joining a waiting room, in the ALTCHA protocol (PoW v2), self-hosted:
//! `GET /api/sales/{id}/challenge` hands the buyer a signed challenge, the buyer's browser (or
//! script) searches for the counter whose SHA-256 starts with `--altcha-difficulty` zero hex
//! digits, and `POST /api/sales/{id}/queue` carries the answer as `X-Altcha` (base64 JSON
//! `{challenge, solution}`). Checking costs one HMAC and one SHA-256; finding costs 16^N
//! SHA-256 on average, so one machine cannot cheaply take a queue's places for many names.
//!
//! A challenge is bound to its buyer and sale (in its signed data) and lives a few minutes.
//! It is not remembered once used: a buyer who joins again gets the ticket they already hold,
//! so a reused answer buys nothing. Nothing is stored, so any instance sharing the key checks
//! it.

use std::collections::BTreeMap;

use altcha::{Challenge, CreateChallengeOptions, Payload, VerifySolutionOptions};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::error::ApiError;
use crate::backend::{BackendError, Role};
use crate::domain::{Millis, SaleId, UserId};

/// How long a challenge may take to solve and send.
const CHALLENGE_TTL_SECS: i64 = 300;

/// The largest `X-Altcha` accepted: a payload is a few hundred bytes.
const MAX_PAYLOAD_LEN: usize = 4096;

pub struct Challenges {
    /// The HMAC key the challenges are signed with, as the crate takes it (hex).
    secret: String,
    /// The hex the derived key must start with: `--altcha-difficulty` zeros (none: no
    /// challenge asked).
    prefix: String,
}

impl Challenges {
    pub fn new(secret: &[u8], difficulty: u8) -> Self {
        Challenges {
            secret: secret.iter().map(|b| format!("{b:02x}")).collect(),
            prefix: "0".repeat(usize::from(difficulty)),
        }
    }

    /// Whether joining asks for a proof of work.
    pub fn enabled(&self) -> bool {
        !self.prefix.is_empty()
    }

    /// A challenge for this buyer on this sale.
    pub fn issue(&self, sale: SaleId, user: &UserId, now: Millis) -> Result<Challenge, ApiError> {
        if !self.enabled() {
            return Err(ApiError::NoChallenge);
        }
        let data = BTreeMap::from([
            ("buyer".to_owned(), serde_json::Value::from(user.as_str())),
            ("sale".to_owned(), serde_json::Value::from(sale.0)),
        ]);
        altcha::create_challenge(CreateChallengeOptions {
            // One SHA-256 per try: the browser's WebCrypto digest, cheap to check.
            algorithm: "SHA-256".to_owned(),
            cost: 1,
            key_prefix: self.prefix.clone(),
            data: Some(data),
            expires_at: Some(u64::try_from(now / 1000 + CHALLENGE_TTL_SECS).unwrap_or(0)),
            hmac_signature_secret: Some(self.secret.clone()),
            ..Default::default()
        })
        // Only its own random bytes could fail to encode: a fault of ours, never the buyer's.
        .map_err(|e| {
            ApiError::Backend(BackendError::fault(
                Role::WaitingRoom,
                format!("altcha: cannot create a challenge: {e}"),
            ))
        })
    }

    /// Checks a join's `X-Altcha`: issued here (signed), unexpired, for this buyer and sale, at
    /// today's difficulty, and solved.
    pub fn check(&self, header: Option<&str>, sale: SaleId, user: &UserId) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        let header = header.ok_or(ApiError::ChallengeRequired)?;
        if header.len() > MAX_PAYLOAD_LEN {
            return Err(ApiError::InvalidChallenge);
        }
        let payload: Payload = STANDARD
            .decode(header.trim())
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(ApiError::InvalidChallenge)?;
        let params = &payload.challenge.parameters;
        let data = params.data.as_ref();
        let bound = data.and_then(|d| d.get("buyer")).and_then(|b| b.as_str()) == Some(user.as_str())
            && data.and_then(|d| d.get("sale")).and_then(|s| s.as_i64()) == Some(sale.0);
        let asked = params.algorithm == "SHA-256"
            && params.cost == 1
            && params.key_prefix.starts_with(&self.prefix)
            && params.key_length <= 64;
        if !bound || !asked {
            return Err(ApiError::InvalidChallenge);
        }
        let verified = altcha::verify_solution(VerifySolutionOptions::new(
            &payload.challenge,
            &payload.solution,
            self.secret.clone(),
        ))
        .map(|result| result.verified)
        // A payload that does not parse as the protocol's (bad hex, say) is the buyer's fault.
        .unwrap_or(false);
        if verified {
            Ok(())
        } else {
            Err(ApiError::InvalidChallenge)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use altcha::SolveChallengeOptions;

    fn user(id: &str) -> UserId {
        UserId::parse(id).expect("valid id")
    }

    fn solved(challenges: &Challenges, sale: SaleId, buyer: &str) -> String {
        let challenge = challenges
            .issue(sale, &user(buyer), crate::domain::now_millis())
            .expect("issued");
        let solution = altcha::solve_challenge(SolveChallengeOptions::new(&challenge))
            .expect("solvable")
            .expect("solved in time");
        let json = serde_json::to_vec(&Payload { challenge, solution }).expect("json");
        STANDARD.encode(json)
    }

    #[test]
    fn a_solved_challenge_admits_its_buyer_on_its_sale_only() {
        let challenges = Challenges::new(b"key", 2);
        let payload = solved(&challenges, SaleId(3), "alice");
        assert!(challenges.check(Some(&payload), SaleId(3), &user("alice")).is_ok());
        for (sale, buyer) in [(SaleId(3), "bob"), (SaleId(4), "alice")] {
            assert!(matches!(
                challenges.check(Some(&payload), sale, &user(buyer)),
                Err(ApiError::InvalidChallenge)
            ));
        }
        assert!(matches!(
            challenges.check(None, SaleId(3), &user("alice")),
            Err(ApiError::ChallengeRequired)
        ));
    }

    #[test]
    fn another_key_a_lower_difficulty_or_a_forged_answer_is_refused() {
        let challenges = Challenges::new(b"key", 2);
        let alice = user("alice");
        let other_key = solved(&Challenges::new(b"other", 2), SaleId(3), "alice");
        let easier = solved(&Challenges::new(b"key", 1), SaleId(3), "alice");
        assert!(challenges.check(Some(&other_key), SaleId(3), &alice).is_err());
        assert!(challenges.check(Some(&easier), SaleId(3), &alice).is_err());
        let mut payload: Payload =
            serde_json::from_slice(&STANDARD.decode(solved(&challenges, SaleId(3), "alice")).expect("b64"))
                .expect("payload");
        payload.solution.counter += 1;
        let forged = STANDARD.encode(serde_json::to_vec(&payload).expect("json"));
        assert!(challenges.check(Some(&forged), SaleId(3), &alice).is_err());
        for junk in ["", "not base64!", "e30=", &"A".repeat(MAX_PAYLOAD_LEN + 1)] {
            assert!(challenges.check(Some(junk), SaleId(3), &alice).is_err(), "{junk:.20}");
        }
    }

    #[test]
    fn off_asks_nothing_and_issues_nothing() {
        let off = Challenges::new(b"key", 0);
        assert!(off.check(None, SaleId(1), &user("alice")).is_ok());
        assert!(matches!(
            off.issue(SaleId(1), &user("alice"), 0),
            Err(ApiError::NoChallenge)
        ));
    }
}
