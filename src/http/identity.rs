//! Who is buying: `X-User-Id` from a trusted gateway, or a signed JWT (HS256 or RS256) whose
//! `sub` is the user id.

use axum::http::{header, HeaderMap};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::error::ApiError;
use crate::config::{AuthMode, ServeConfig};
use crate::domain::UserId;

/// Why the JWT settings cannot work (a start-up error, never an HTTP answer).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAuthConfig(String);

/// Clock skew a token's `exp`/`nbf` are allowed.
const LEEWAY_SECS: u64 = 5;

pub struct Authenticator {
    mode: AuthMode,
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Authenticator {
    pub fn from_config(config: &ServeConfig) -> Result<Self, InvalidAuthConfig> {
        let hs256 = config
            .jwt_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose().as_bytes()));
        let rs256 = match &config.jwt_public_key_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    InvalidAuthConfig(format!("cannot read --jwt-public-key-file {}: {e}", path.display()))
                })?;
                Some(
                    DecodingKey::from_rsa_pem(&pem)
                        .map_err(|e| InvalidAuthConfig(format!("--jwt-public-key-file {}: {e}", path.display())))?,
                )
            }
            None => None,
        };
        if config.auth != AuthMode::Header && hs256.is_none() && rs256.is_none() {
            return Err(InvalidAuthConfig(
                "--auth jwt/either needs SECKILL_JWT_SECRET (HS256) or --jwt-public-key-file (RS256)".into(),
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = [(Algorithm::HS256, &hs256), (Algorithm::RS256, &rs256)]
            .into_iter()
            .filter(|(_, key)| key.is_some())
            .map(|(alg, _)| alg)
            .collect();
        validation.leeway = LEEWAY_SECS;
        // A token not valid yet is not valid: the library checks `nbf` only when asked.
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(issuer) = &config.jwt_issuer {
            validation.set_issuer(&[issuer]);
        }
        match &config.jwt_audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Ok(Authenticator {
            mode: config.auth,
            hs256,
            rs256,
            validation,
        })
    }

    /// Header mode only: what the engine did before JWTs existed.
    pub fn trusting_headers() -> Self {
        Authenticator {
            mode: AuthMode::Header,
            hs256: None,
            rs256: None,
            validation: Validation::new(Algorithm::HS256),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The buyer of a request; `Ok(None)` when it names none (the classic API's anonymous buyers).
    pub fn identify(&self, headers: &HeaderMap) -> Result<Option<UserId>, ApiError> {
        refuse_repeated_identity(headers)?;
        let bearer = || {
            headers
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim))
        };
        let user_header = || {
            headers
                .get("x-user-id")
                .map(|raw| -> Result<UserId, ApiError> {
                    let user = UserId::parse(raw.to_str().map_err(|_| ApiError::InvalidUserId)?)?;
                    if user.as_str().starts_with(UserId::ANONYMOUS_PREFIX) {
                        return Err(ApiError::ReservedUserId);
                    }
                    Ok(user)
                })
                .transpose()
        };
        match self.mode {
            AuthMode::Header => user_header(),
            AuthMode::Jwt => match bearer() {
                Some(token) => self.verify(token).map(Some),
                None => Ok(None),
            },
            AuthMode::Either => match bearer() {
                Some(token) => self.verify(token).map(Some),
                None => user_header(),
            },
        }
    }

    /// The buyer of a request that must name one: naming nobody is 401, as the API's security
    /// schemes say.
    pub fn require(&self, headers: &HeaderMap) -> Result<UserId, ApiError> {
        self.identify(headers)?.ok_or(match self.mode {
            AuthMode::Header | AuthMode::Either => ApiError::IdentityRequired,
            AuthMode::Jwt => ApiError::TokenRequired,
        })
    }

    /// [`Self::require`] for the classic API, whose clients know a missing `X-User-Id` as 400
    /// `missing_user_id`.
    pub fn require_classic(&self, headers: &HeaderMap) -> Result<UserId, ApiError> {
        match self.require(headers) {
            Err(ApiError::IdentityRequired) => Err(ApiError::MissingUserId),
            other => other,
        }
    }

    fn verify(&self, token: Option<&str>) -> Result<UserId, ApiError> {
        let token =
            token.ok_or_else(|| ApiError::InvalidToken("the Authorization header is not `Bearer <JWT>`".into()))?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| ApiError::InvalidToken(e.to_string()))?;
        // `crit` names extensions the token's meaning depends on (RFC 7515, 4.1.11); we
        // understand none, and the library does not look, so any is refused here.
        if let Some(critical) = &header.crit {
            return Err(ApiError::InvalidToken(format!(
                "critical header extensions {critical:?} are not understood"
            )));
        }
        let algorithm = header.alg;
        let key = match algorithm {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => None,
        }
        .ok_or_else(|| ApiError::InvalidToken(format!("{algorithm:?} tokens are not accepted")))?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| ApiError::InvalidToken(e.to_string()))?
            .claims;
        let user =
            UserId::parse(&claims.sub).map_err(|_| ApiError::InvalidToken("`sub` is not a valid user id".into()))?;
        if user.as_str().starts_with(UserId::ANONYMOUS_PREFIX) {
            return Err(ApiError::InvalidToken(format!(
                "`sub` may not start with `{}`: those are anonymous buyers",
                UserId::ANONYMOUS_PREFIX
            )));
        }
        Ok(user)
    }
}

/// Two `X-User-Id` or two `Authorization` headers name two buyers (or two credentials): which
/// one a proxy, the gateway and we would each pick differs, so none is picked.
pub(crate) fn refuse_repeated_identity(headers: &HeaderMap) -> Result<(), ApiError> {
    for name in [header::AUTHORIZATION.as_str(), "x-user-id"] {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(ApiError::AmbiguousIdentity);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    fn authenticator(args: &[&str], secret: &str) -> Authenticator {
        let mut argv = vec!["seckill", "serve"];
        argv.extend_from_slice(args);
        let crate::config::Command::Serve(mut config) = crate::config::Cli::parse_from(argv).command else {
            panic!("serve");
        };
        config.jwt_secret = Some(secret.parse().expect("infallible"));
        Authenticator::from_config(&config).expect("valid config")
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    fn token(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode")
    }

    fn in_secs(delta: i64) -> i64 {
        chrono::Utc::now().timestamp() + delta
    }

    #[test]
    fn jwt_mode_takes_sub_and_ignores_the_header() {
        let auth = authenticator(&["--auth", "jwt"], "k");
        let good = token("k", json!({"sub": "alice", "exp": in_secs(60)}));
        let h = headers(&[
            ("authorization", format!("Bearer {good}")),
            ("x-user-id", "mallory".into()),
        ]);
        assert_eq!(auth.require(&h).expect("valid").as_str(), "alice");
        let only_header = headers(&[("x-user-id", "mallory".into())]);
        assert!(matches!(auth.require(&only_header), Err(ApiError::TokenRequired)));
    }

    #[test]
    fn forged_expired_and_malformed_tokens_are_refused() {
        let auth = authenticator(&["--auth", "jwt"], "k");
        for bad in [
            token("other-key", json!({"sub": "alice", "exp": in_secs(60)})),
            token("k", json!({"sub": "alice", "exp": in_secs(-60)})),
            token("k", json!({"sub": "bad user!", "exp": in_secs(60)})),
            token("k", json!({"sub": "anon-0123456789abcdef-3", "exp": in_secs(60)})),
            token("k", json!({"sub": "alice"})),
            "not.a.jwt".to_owned(),
        ] {
            let h = headers(&[("authorization", format!("Bearer {bad}"))]);
            assert!(matches!(auth.require(&h), Err(ApiError::InvalidToken(_))), "{bad}");
        }
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        let auth = authenticator(&["--auth", "jwt"], "k");
        let early = token("k", json!({"sub": "alice", "exp": in_secs(600), "nbf": in_secs(300)}));
        let h = headers(&[("authorization", format!("Bearer {early}"))]);
        assert!(matches!(auth.require(&h), Err(ApiError::InvalidToken(_))));
        let valid = token("k", json!({"sub": "alice", "exp": in_secs(600), "nbf": in_secs(-60)}));
        let h = headers(&[("authorization", format!("Bearer {valid}"))]);
        assert_eq!(auth.require(&h).expect("valid").as_str(), "alice");
    }

    #[test]
    fn a_token_with_critical_extensions_is_refused() {
        let auth = authenticator(&["--auth", "jwt"], "k");
        let claims = json!({"sub": "alice", "exp": in_secs(60)});
        for critical in [vec!["b64".to_owned()], vec!["exp".to_owned()], vec![]] {
            let header = Header {
                crit: Some(critical.clone()),
                ..Header::default()
            };
            let signed = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"k")).expect("encode");
            let h = headers(&[("authorization", format!("Bearer {signed}"))]);
            assert!(
                matches!(auth.require(&h), Err(ApiError::InvalidToken(_))),
                "{critical:?}"
            );
        }
    }

    #[test]
    fn either_mode_falls_back_to_the_header() {
        let auth = authenticator(&["--auth", "either"], "k");
        let h = headers(&[("x-user-id", "bob".into())]);
        assert_eq!(auth.require(&h).expect("valid").as_str(), "bob");
    }

    #[test]
    fn naming_nobody_is_401_on_the_api_and_400_on_the_classic_api() {
        let auth = authenticator(&["--auth", "either"], "k");
        let nobody = HeaderMap::new();
        assert!(matches!(auth.require(&nobody), Err(ApiError::IdentityRequired)));
        assert!(matches!(auth.require_classic(&nobody), Err(ApiError::MissingUserId)));
        let jwt = authenticator(&["--auth", "jwt"], "k");
        assert!(matches!(jwt.require_classic(&nobody), Err(ApiError::TokenRequired)));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let auth = authenticator(
            &["--auth", "jwt", "--jwt-issuer", "shop", "--jwt-audience", "seckill"],
            "k",
        );
        let right = token(
            "k",
            json!({"sub": "a", "exp": in_secs(60), "iss": "shop", "aud": "seckill"}),
        );
        let wrong = token(
            "k",
            json!({"sub": "a", "exp": in_secs(60), "iss": "elsewhere", "aud": "seckill"}),
        );
        assert!(auth
            .require(&headers(&[("authorization", format!("Bearer {right}"))]))
            .is_ok());
        assert!(auth
            .require(&headers(&[("authorization", format!("Bearer {wrong}"))]))
            .is_err());
    }
}
