//! Bad input: a clear 4xx with a JSON body, never a 500, and the server keeps selling.

use crate::helpers::{assert_error, TestServer, ADMIN_TOKEN};

async fn post_raw(app: &TestServer, body: Vec<u8>) -> (u16, serde_json::Value) {
    let resp = app
        .client
        .post(app.url("/api/sales"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestServer::spawn().await;
    for body in [
        &b"{"[..],
        b"not json",
        b"",
        b"{\"name\": \"x\", \"stock\": 1,}",
        b"\xff\xfe\x00",
    ] {
        let (status, error) = post_raw(&app, body.to_vec()).await;
        assert_error(status, &error, 400, "malformed_json");
    }
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413() {
    let app = TestServer::spawn().await;
    let mut huge = b"{\"name\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 2 << 20));
    huge.extend(b"\",\"stock\":1}");
    let (status, error) = post_raw(&app, huge).await;
    assert_error(status, &error, 413, "payload_too_large");
    // Still selling afterwards.
    assert_eq!(app.seed_buy().await["ok"], true);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = TestServer::spawn().await;
    let (status, body) = app.get("/no/such/route").await;
    assert_error(status, &body, 404, "not_found");
    let resp = app.client.delete(app.url("/seckill/getCount")).send().await.unwrap();
    let status = resp.status().as_u16();
    assert_error(status, &resp.json().await.unwrap(), 405, "method_not_allowed");
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_count_purchases() {
    let app = TestServer::spawn().await;
    app.seed_buy().await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let success = text
        .lines()
        .find(|l| l.starts_with("seckill_purchases_total{outcome=\"success\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(success, Some(1), "{text}");
    assert!(text.contains("seckill_stock_remaining{sale=\"1\"} 999"), "{text}");
}
