//! `POST /api/sales/{id}/purchase` and the order lookup.

use serde_json::json;

use crate::helpers::{assert_error, rfc3339_in, TestServer};

#[tokio::test]
async fn a_buyer_gets_201_then_409_and_others_410_when_gone() {
    let app = TestServer::spawn().await;
    let sale = app.live_sale(1, 1).await;
    let (status, order) = app.buy(sale, "alice").await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["user_id"], "alice");
    assert_eq!(order["remaining"], 0);
    let (status, again) = app.buy(sale, "alice").await;
    assert_error(status, &again, 409, "already_purchased");
    let (status, late) = app.buy(sale, "bob").await;
    assert_error(status, &late, 410, "sold_out");
    let (_, view) = app.get(&format!("/api/sales/{sale}")).await;
    assert_eq!(
        (
            view["remaining"].as_u64(),
            view["sold"].as_u64(),
            view["status"].as_str()
        ),
        (Some(0), Some(1), Some("sold_out"))
    );
}

#[tokio::test]
async fn the_order_can_be_looked_up_by_buyer() {
    let app = TestServer::spawn().await;
    let sale = app.live_sale(5, 2).await;
    let (_, first) = app.buy(sale, "carol").await;
    let (_, second) = app.buy(sale, "carol").await;
    let (status, orders) = app.get(&format!("/api/sales/{sale}/orders/carol")).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = orders["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            first["order_id"].as_str().unwrap(),
            second["order_id"].as_str().unwrap()
        ]
    );
    let (status, none) = app.get(&format!("/api/sales/{sale}/orders/dave")).await;
    assert_error(status, &none, 404, "order_not_found");
    let (status, bad) = app.get(&format!("/api/sales/{sale}/orders/no%20spaces")).await;
    assert_error(status, &bad, 400, "invalid_user_id");
}

#[tokio::test]
async fn purchases_outside_the_window_are_refused_and_sell_nothing() {
    let app = TestServer::spawn().await;
    let (_, upcoming) = app
        .create_sale(json!({ "name": "soon", "stock": 3, "starts_at": rfc3339_in(3600) }))
        .await;
    let (_, ended) = app
        .create_sale(json!({ "name": "gone", "stock": 3, "starts_at": rfc3339_in(-60), "ends_at": rfc3339_in(-1) }))
        .await;
    let (status, body) = app.buy(upcoming["id"].as_i64().unwrap(), "eve").await;
    assert_error(status, &body, 403, "not_started");
    let (status, body) = app.buy(ended["id"].as_i64().unwrap(), "eve").await;
    assert_error(status, &body, 403, "ended");
    for sale in [&upcoming, &ended] {
        assert_eq!(app.audit(sale["id"].as_i64().unwrap()).await["stored"], 0);
    }
}

#[tokio::test]
async fn the_sale_opens_at_its_start_time() {
    let app = TestServer::spawn().await;
    let (_, sale) = app
        .create_sale(json!({ "name": "soon", "stock": 3, "starts_at": rfc3339_in(1) }))
        .await;
    let id = sale["id"].as_i64().unwrap();
    assert_eq!(app.buy(id, "early").await.0, 403);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(app.buy(id, "on-time").await.0, 201);
}

#[tokio::test]
async fn the_buyer_id_is_required_and_validated() {
    let app = TestServer::spawn().await;
    let sale = app.live_sale(10, 1).await;
    let url = app.url(&format!("/api/sales/{sale}/purchase"));
    // Naming nobody is 401, as the document's security says; a malformed id is 400.
    let resp = app.client.post(&url).send().await.unwrap();
    let status = resp.status().as_u16();
    assert!(resp.headers().contains_key("www-authenticate"));
    assert_error(status, &resp.json().await.unwrap(), 401, "identity_required");
    for bad in ["", "has space", &"x".repeat(65), &"x".repeat(10_000), "ユーザー", "a/b"] {
        let resp = app.client.post(&url).header("x-user-id", bad).send().await.unwrap();
        let status = resp.status().as_u16();
        let expected = if bad.is_empty() {
            "missing_user_id"
        } else {
            "invalid_user_id"
        };
        assert_error(status, &resp.json().await.unwrap(), 400, expected);
    }
    let resp = app
        .client
        .post(&url)
        .header(
            "x-user-id",
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_error(status, &resp.json().await.unwrap(), 400, "invalid_user_id");
    assert_eq!(app.audit(sale).await["stored"], 0);
}

#[tokio::test]
async fn purchase_of_an_unknown_sale_is_404() {
    let app = TestServer::spawn().await;
    for sale in ["424242", "zero", "0"] {
        let resp = app
            .client
            .post(app.url(&format!("/api/sales/{sale}/purchase")))
            .header("x-user-id", "u1")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert_error(status, &resp.json().await.unwrap(), 404, "sale_not_found");
    }
}
