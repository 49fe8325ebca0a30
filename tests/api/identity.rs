//! Who is buying: a buyer is the JWT's `sub` (HS256, or RS256 from a PEM public key); forged,
//! expired, malformed or missing tokens get 401 and buy nothing; a buyer reads only their own
//! orders.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::helpers::{assert_error, Options, TestServer};
use crate::requests::{get_with, post};

const JWT_SECRET: &str = "test-jwt-secret";

fn with_jwt(mode: &str) -> Options {
    Options {
        extra_args: vec!["--auth".into(), mode.into()],
        env: vec![("SECKILL_JWT_SECRET".into(), JWT_SECRET.into())],
        ..Options::new()
    }
}

fn hs256(secret: &str, sub: &str, expires_in: i64) -> String {
    let claims = json!({ "sub": sub, "exp": chrono::Utc::now().timestamp() + expires_in });
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

#[tokio::test]
async fn a_signed_jwt_names_the_buyer_and_forged_or_expired_ones_get_401() {
    let app = TestServer::spawn_with(with_jwt("jwt")).await;
    let sale = app.live_sale(10, 1).await;
    let path = format!("/api/sales/{sale}/purchase");

    let good = format!("Bearer {}", hs256(JWT_SECRET, "alice", 60));
    let (status, _, order) = post(&app, &path, &[("authorization", &good), ("x-user-id", "mallory")]).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["user_id"], "alice", "the JWT's sub, not the header");

    let forged = format!("Bearer {}", hs256("guessed-secret", "bob", 60));
    let expired = format!("Bearer {}", hs256(JWT_SECRET, "bob", -120));
    for bad in [
        forged.as_str(),
        expired.as_str(),
        "Bearer not.a.jwt",
        "Basic Ym9iOmJvYg==",
    ] {
        let (status, headers, body) = post(&app, &path, &[("authorization", bad)]).await;
        assert_error(status, &body, 401, "invalid_token");
        assert!(headers.contains_key("www-authenticate"), "{bad}");
    }
    let (status, _, body) = post(&app, &path, &[("x-user-id", "bob")]).await;
    assert_error(status, &body, 401, "token_required");
    // The classic API's anonymous purchase cannot bypass identity either.
    let (status, _, body) = post(&app, "/seckill/seckill", &[]).await;
    assert_error(status, &body, 401, "token_required");
    let audit = app.audit(sale).await;
    assert_eq!(audit["stored"], 1, "only alice bought: {audit}");

    // Only alice reads alice's orders.
    let orders = format!("/api/sales/{sale}/orders/alice");
    let (status, _, body) = get_with(&app, &orders, &[("authorization", &good)]).await;
    assert_eq!(
        (status, body["orders"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{body}"
    );
    let mallory = format!("Bearer {}", hs256(JWT_SECRET, "mallory", 60));
    let (status, _, body) = get_with(&app, &orders, &[("authorization", &mallory)]).await;
    assert_error(status, &body, 403, "not_your_orders");
    let (status, _, body) = get_with(&app, &orders, &[("x-user-id", "alice")]).await;
    assert_error(status, &body, 401, "token_required");
}

#[tokio::test]
async fn rs256_tokens_verify_with_the_public_key_and_algorithm_confusion_fails() {
    let dir = tempfile::tempdir().expect("dir");
    let private = dir.path().join("private.pem");
    let public = dir.path().join("public.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .status()
        .expect("openssl")
        .success()
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .expect("openssl")
            .success();
    assert!(ok, "openssl could not make a key pair");
    let app = TestServer::spawn_with(Options {
        extra_args: vec![
            "--auth".into(),
            "either".into(),
            "--jwt-public-key-file".into(),
            public.display().to_string(),
        ],
        ..Options::new()
    })
    .await;
    let sale = app.live_sale(10, 1).await;
    let path = format!("/api/sales/{sale}/purchase");
    let claims = json!({ "sub": "rsa-user", "exp": chrono::Utc::now().timestamp() + 60 });
    let key = EncodingKey::from_rsa_pem(&std::fs::read(&private).expect("pem")).expect("rsa key");
    let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).expect("sign");
    let (status, _, order) = post(&app, &path, &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!((status, order["user_id"].as_str()), (201, Some("rsa-user")), "{order}");

    // HS256 "signed" with the public key: the classic confusion attack.
    let public_pem = std::fs::read(&public).expect("pem");
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&public_pem),
    )
    .expect("sign");
    let (status, _, body) = post(&app, &path, &[("authorization", &format!("Bearer {confused}"))]).await;
    assert_error(status, &body, 401, "invalid_token");
    // `either`: without a JWT, the gateway's header still names the buyer.
    let (status, _, order) = post(&app, &path, &[("x-user-id", "gateway-user")]).await;
    assert_eq!(
        (status, order["user_id"].as_str()),
        (201, Some("gateway-user")),
        "{order}"
    );
}

/// Two `X-User-Id` or two `Authorization` headers name two buyers; a proxy, the gateway and
/// the engine might each pick another, so the engine picks none: 400 `ambiguous_identity`.
#[tokio::test]
async fn two_identity_headers_are_refused_as_ambiguous() {
    let app = TestServer::spawn_with(with_jwt("either")).await;
    let sale = app.live_sale(10, 1).await;
    let path = format!("/api/sales/{sale}/purchase");
    let (alice, bob) = (
        format!("Bearer {}", hs256(JWT_SECRET, "alice", 60)),
        format!("Bearer {}", hs256(JWT_SECRET, "bob", 60)),
    );
    for headers in [
        vec![("x-user-id", "alice"), ("x-user-id", "bob")],
        vec![("authorization", alice.as_str()), ("authorization", bob.as_str())],
        vec![("authorization", alice.as_str()), ("authorization", alice.as_str())],
    ] {
        let (status, _, body) = post(&app, &path, &headers).await;
        assert_error(status, &body, 400, "ambiguous_identity");
        let (status, _, body) = post(&app, "/seckill/seckill", &headers).await;
        assert_error(status, &body, 400, "ambiguous_identity");
        let token_path = format!("/api/sales/{sale}/token");
        let (status, _, body) = get_with(&app, &token_path, &headers).await;
        assert_error(status, &body, 400, "ambiguous_identity");
    }
    assert_eq!(app.audit(sale).await["stored"], 0, "nobody bought");
    assert_eq!(app.count().await, 1000, "nobody bought the demo sale either");
}

/// `--auth either`: whoever reads a buyer's orders must name themselves (a JWT or the gateway's
/// `X-User-Id`) and be that buyer; naming nobody is 401, not a way round the check.
#[tokio::test]
async fn either_mode_reads_orders_only_for_a_caller_who_names_themselves() {
    let app = TestServer::spawn_with(with_jwt("either")).await;
    let sale = app.live_sale(10, 1).await;
    assert_eq!(app.buy(sale, "alice").await.0, 201);
    let orders = format!("/api/sales/{sale}/orders/alice");
    let (status, headers, body) = get_with(&app, &orders, &[]).await;
    assert_error(status, &body, 401, "identity_required");
    assert!(headers.contains_key("www-authenticate"), "{headers:?}");
    let (status, _, body) = get_with(&app, &orders, &[("x-user-id", "mallory")]).await;
    assert_error(status, &body, 403, "not_your_orders");
    let (status, _, body) = get_with(&app, &orders, &[("x-user-id", "alice")]).await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some("alice")), "{body}");
    let alice = format!("Bearer {}", hs256(JWT_SECRET, "alice", 60));
    let (status, _, body) = get_with(&app, &orders, &[("authorization", &alice)]).await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some("alice")), "{body}");
}

/// Anonymous buyers' ids (`anon-<prefix>-<n>`) are predictable from one's own; a named buyer who
/// sends the next one would share its limit and lock it out. Client-sent ids may not start with
/// `anon-`, so the anonymous buyer still buys.
#[tokio::test]
async fn a_named_buyer_cannot_take_an_anonymous_buyers_id() {
    let app = TestServer::spawn().await;
    let first = app.classic_buy().await;
    let first_id = first["user_id"].as_str().expect("anonymous id").to_owned();
    let prefix = first_id.strip_suffix("-1").expect("the first anonymous buyer is #1");
    let next = format!("{prefix}-2");
    let (status, _, body) = post(&app, "/seckill/seckill", &[("x-user-id", &next)]).await;
    assert_error(status, &body, 400, "invalid_user_id");
    let sale = app.live_sale(10, 1).await;
    let (status, body) = app.buy(sale, &next).await;
    assert_error(status, &body, 400, "invalid_user_id");
    let (status, body) = app.buy(sale, "anon-anything").await;
    assert_error(status, &body, 400, "invalid_user_id");
    let second = app.classic_buy().await;
    assert_eq!(
        (second["ok"].as_bool(), second["user_id"].as_str()),
        (Some(true), Some(next.as_str())),
        "{second}"
    );
    // An id that merely contains the word is anyone's.
    assert_eq!(app.buy(sale, "not-anon-1").await.0, 201);
}
