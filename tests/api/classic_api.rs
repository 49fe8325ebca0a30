//! The classic API (`GET /seckill/getCount`, `POST /seckill/seckill`), answering as it always
//! did: miaosha-go's clients and its JMeter plan use it unchanged.

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
async fn classic_api_purchase_answers_the_classic_api_messages_then_sold_out() {
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
