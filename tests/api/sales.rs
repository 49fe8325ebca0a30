//! `/api/sales`: admin creation, listing, status.

use serde_json::json;

use crate::helpers::{assert_error, rfc3339_in, Options, TestServer, ADMIN_TOKEN};

#[tokio::test]
async fn creating_a_sale_requires_the_admin_token() {
    let app = TestServer::spawn().await;
    let body = json!({ "name": "phone", "stock": 10 });
    let none = app.client.post(app.url("/api/sales")).json(&body).send().await.unwrap();
    let status = none.status().as_u16();
    assert_error(status, &none.json().await.unwrap(), 401, "unauthorized");
    let wrong = app
        .client
        .post(app.url("/api/sales"))
        .bearer_auth("not-the-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = wrong.status().as_u16();
    assert_error(status, &wrong.json().await.unwrap(), 403, "forbidden");
    let right = app
        .client
        .post(app.url("/api/sales"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 201);
    let sale: serde_json::Value = right.json().await.unwrap();
    assert_eq!(
        (
            sale["stock"].as_u64(),
            sale["remaining"].as_u64(),
            sale["per_user_limit"].as_u64()
        ),
        (Some(10), Some(10), Some(1))
    );
    assert_eq!(sale["status"], "live");
}

#[tokio::test]
async fn without_a_configured_token_admin_routes_are_refused() {
    let app = TestServer::spawn_with(Options {
        admin_token: None,
        ..Options::new()
    })
    .await;
    let resp = app
        .client
        .post(app.url("/api/sales"))
        .bearer_auth("anything")
        .json(&json!({"name":"x","stock":1}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_error(status, &resp.json().await.unwrap(), 403, "admin_disabled");
}

#[tokio::test]
async fn sales_are_listed_and_read_with_their_status() {
    let app = TestServer::spawn().await;
    let (_, upcoming) = app
        .create_sale(json!({ "name": "later", "stock": 5, "starts_at": rfc3339_in(3600) }))
        .await;
    let (_, ended) = app
        .create_sale(
            json!({ "name": "past", "stock": 5, "starts_at": rfc3339_in(-7200), "ends_at": rfc3339_in(-3600) }),
        )
        .await;
    let (_, empty) = app.create_sale(json!({ "name": "none", "stock": 0 })).await;
    assert_eq!(upcoming["status"], "upcoming");
    assert_eq!(ended["status"], "ended");
    assert_eq!(empty["status"], "sold_out");

    let (status, list) = app.get("/api/sales").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["sales"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "demo sale plus three: {names:?}");
    assert!(names.contains(&"later") && names.contains(&"past"));

    let (status, one) = app.get(&format!("/api/sales/{}", upcoming["id"])).await;
    assert_eq!(status, 200);
    assert_eq!(one["name"], "later");
    assert!(one["starts_at"].as_str().is_some());
}

#[tokio::test]
async fn invalid_sales_are_refused_with_400() {
    let app = TestServer::spawn().await;
    for body in [
        json!({ "name": "x", "stock": -1 }),
        json!({ "name": "x", "stock": 1e30 }),
        json!({ "name": "", "stock": 1 }),
        json!({ "name": "x", "stock": 1, "per_user_limit": 0 }),
        json!({ "name": "x", "stock": 1, "starts_at": rfc3339_in(10), "ends_at": rfc3339_in(5) }),
        json!({ "name": "x", "stock": 1, "starts_at": "tomorrow" }),
        json!({ "name": "x" }),
        json!({ "name": "x", "stock": 1, "surprise": true }),
    ] {
        let (status, error) = app.create_sale(body.clone()).await;
        assert_error(status, &error, 400, "invalid_sale");
    }
    let overflowing = app
        .client
        .post(app.url("/api/sales"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .body(r#"{"name":"x","stock":99999999999999999999999}"#)
        .send()
        .await
        .unwrap();
    let status = overflowing.status().as_u16();
    assert_error(status, &overflowing.json().await.unwrap(), 400, "invalid_sale");
}

#[tokio::test]
async fn unknown_sales_are_404() {
    let app = TestServer::spawn().await;
    for path in [
        "/api/sales/999",
        "/api/sales/abc",
        "/api/sales/-1",
        "/api/sales/999/audit",
    ] {
        let (status, body) = app.get(path).await;
        assert_error(status, &body, 404, "sale_not_found");
    }
}
