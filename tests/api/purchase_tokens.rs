//! The hidden purchase path: with `--require-purchase-token`, a purchase needs a token that is
//! handed out only while the sale is live, bound to its buyer and sale, and dies after its TTL.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{assert_error, rfc3339_in, Options, TestServer};
use crate::requests::{get_with, post};

#[tokio::test]
async fn purchases_need_a_live_token_bound_to_the_buyer_and_sale() {
    let app = TestServer::spawn_with(Options {
        extra_args: vec![
            "--require-purchase-token".into(),
            "--purchase-token-ttl-secs".into(),
            "2".into(),
        ],
        env: vec![("SECKILL_PURCHASE_TOKEN_SECRET".into(), "shared-by-instances".into())],
        ..Options::new()
    })
    .await;
    let (status, sale) = app
        .create_sale(json!({ "name": "gated", "stock": 5, "starts_at": rfc3339_in(2) }))
        .await;
    assert_eq!(status, 201, "{sale}");
    let id = sale["id"].as_i64().expect("id");
    let token_path = format!("/api/sales/{id}/token");
    let buy_path = format!("/api/sales/{id}/purchase");

    // Before the start: no token, so no script can fire early.
    let (status, _, body) = get_with(&app, &token_path, &[("x-user-id", "alice")]).await;
    assert_error(status, &body, 403, "not_started");
    let (status, _, body) = get_with(&app, &token_path, &[]).await;
    assert_error(status, &body, 401, "identity_required");
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let (status, _, issued) = get_with(&app, &token_path, &[("x-user-id", "alice")]).await;
    assert_eq!(status, 200, "{issued}");
    let token = issued["token"].as_str().expect("token").to_owned();
    assert_eq!(
        (issued["user_id"].as_str(), issued["sale_id"].as_i64()),
        (Some("alice"), Some(id))
    );

    let (status, _, body) = post(&app, &buy_path, &[("x-user-id", "alice")]).await;
    assert_error(status, &body, 403, "purchase_token_required");
    let (status, _, body) = post(&app, &buy_path, &[("x-user-id", "bob"), ("x-purchase-token", &token)]).await;
    assert_error(status, &body, 403, "invalid_purchase_token");
    let (status, _, body) = post(
        &app,
        "/api/sales/1/purchase",
        &[("x-user-id", "alice"), ("x-purchase-token", &token)],
    )
    .await;
    assert_error(status, &body, 403, "invalid_purchase_token");
    let (status, _, body) = post(&app, "/seckill/seckill", &[]).await;
    assert_error(status, &body, 400, "missing_user_id");
    let (status, _, order) = post(&app, &buy_path, &[("x-user-id", "alice"), ("x-purchase-token", &token)]).await;
    assert_eq!(status, 201, "{order}");

    // Expired: fetch one for carol, wait out its 2 s.
    let (_, _, issued) = get_with(&app, &token_path, &[("x-user-id", "carol")]).await;
    let stale = issued["token"].as_str().expect("token").to_owned();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, _, body) = post(&app, &buy_path, &[("x-user-id", "carol"), ("x-purchase-token", &stale)]).await;
    assert_error(status, &body, 403, "invalid_purchase_token");
    assert_eq!(app.audit(id).await["stored"], 1);
}
