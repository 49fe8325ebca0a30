//! The seed's API, unchanged for its clients.

use crate::helpers::{Options, TestServer};

#[tokio::test]
async fn get_count_reports_the_demo_stock() {
    let app = TestServer::spawn_with(Options {
        demo_stock: 7,
        ..Options::new()
    })
    .await;
    assert_eq!(app.count().await, 7);
}

#[tokio::test]
async fn seed_purchase_answers_the_seed_messages_then_sold_out() {
    let app = TestServer::spawn_with(Options {
        demo_stock: 2,
        ..Options::new()
    })
    .await;
    let first = app.classic_buy().await;
    assert_eq!(first["messages"], "购买成功，还剩下1个");
    assert_eq!(first["ok"], true);
    assert!(first["order_id"].as_str().is_some_and(|id| id.len() == 36));
    let second = app.classic_buy().await;
    assert_eq!(second["messages"], "购买成功，还剩下0个");
    // Each anonymous POST is a new buyer: two distinct buyers got the two units.
    assert_ne!(first["user_id"], second["user_id"]);
    let third = app.classic_buy().await;
    assert_eq!(third["messages"], "抢完了");
    assert_eq!(third["ok"], false);
    assert_eq!(app.count().await, 0);
}

#[tokio::test]
async fn the_page_is_served_self_contained() {
    let app = TestServer::spawn().await;
    let resp = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("id=\"buy\""));
    // No CDN, font or script from elsewhere: the machines have no internet.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "page references an external URL"
    );
}
