//! The buyer's page (`GET /`): served self-contained, and in a real headless Chromium the
//! countdown, the button opening on time, buying, sold-out.

use std::time::Duration;

use serde_json::json;

use crate::browser::Browser;
use crate::helpers::{rfc3339_in, TestServer};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_waits_for_the_countdown_clicks_buy_and_sees_the_order() {
    let app = TestServer::spawn().await;
    let (_, sale) = app
        .create_sale(json!({ "name": "限量球鞋 sneakers", "stock": 1, "starts_at": rfc3339_in(6) }))
        .await;
    let id = sale["id"].as_i64().unwrap();
    let browser = Browser::start().await;

    browser.goto(&app.url(&format!("/?sale={id}&user=page-buyer"))).await;
    browser
        .wait_for("the sale to load", async |b| {
            b.text("#name").await == "限量球鞋 sneakers"
        })
        .await;
    assert!(
        browser.text("#countdown").await.contains("距开始"),
        "countdown shown before the start"
    );
    assert!(!browser.enabled("#buy").await, "buy is disabled before the start");
    assert!(browser.text("#remaining").await.contains('1'));

    browser
        .wait_for("the button to open at the start", async |b| b.enabled("#buy").await)
        .await;
    browser.click("#buy").await;
    browser
        .wait_for("the purchase result", async |b| {
            b.text("#result").await.contains("Success")
        })
        .await;
    let shown = browser.text("#result").await;

    let (status, orders) = app.get(&format!("/api/sales/{id}/orders/page-buyer")).await;
    assert_eq!(status, 200);
    assert!(
        shown.contains(orders["orders"][0]["order_id"].as_str().unwrap()),
        "the page shows the stored order: {shown}"
    );

    // A second buyer finds it sold out: the button stays disabled.
    browser.goto(&app.url(&format!("/?sale={id}&user=late-buyer"))).await;
    browser
        .wait_for("sold out", async |b| b.text("#status").await.contains("sold out"))
        .await;
    assert!(!browser.enabled("#buy").await);
    browser.close().await;
}

/// A win with a payment step: the page shows the deadline counting down, pays through the
/// test provider, and shows the order paid; a second hold, left alone, expires on screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_winner_sees_the_payment_deadline_pays_and_an_unpaid_hold_expires() {
    let app = TestServer::spawn_with(crate::helpers::Options {
        extra_args: vec!["--payment-provider".into(), "test".into()],
        ..crate::helpers::Options::new()
    })
    .await;
    let (_, sale) = app
        .create_sale(json!({ "name": "held sneakers", "stock": 2, "payment_window_secs": 4 }))
        .await;
    let id = sale["id"].as_i64().unwrap();
    let browser = Browser::start().await;

    browser.goto(&app.url(&format!("/?sale={id}&user=page-payer"))).await;
    browser
        .wait_for("the button to open", async |b| b.enabled("#buy").await)
        .await;
    browser.click("#buy").await;
    browser
        .wait_for("the payment deadline", async |b| {
            b.text("#deadline").await.contains("pay within")
        })
        .await;
    assert!(
        browser.displayed("#pay").await,
        "the test provider's Pay button is shown"
    );
    browser.click("#pay").await;
    browser
        .wait_for("the order paid", async |b| b.text("#hold-state").await.contains("paid"))
        .await;
    let (_, orders) = app.get(&format!("/api/sales/{id}/orders/page-payer")).await;
    assert_eq!(orders["orders"][0]["state"], "paid", "{orders}");

    // Another buyer wins and does not pay: the page shows the hold expire.
    browser.goto(&app.url(&format!("/?sale={id}&user=page-idler"))).await;
    browser
        .wait_for("the button to open", async |b| b.enabled("#buy").await)
        .await;
    browser.click("#buy").await;
    browser
        .wait_for("the deadline", async |b| {
            b.text("#deadline").await.contains("pay within")
        })
        .await;
    browser
        .wait_for("the hold to expire", async |b| {
            b.text("#hold-state").await.contains("expired")
        })
        .await;
    // The unit is back on sale: the stock shown rises and the buy button comes back.
    browser
        .wait_for("the stock to rise", async |b| {
            b.text("#remaining").await.contains("1 / 2")
        })
        .await;
    browser
        .wait_for("the button to come back", async |b| b.enabled("#buy").await)
        .await;
    browser.close().await;
}

/// A sale of 5 with a waiting room (one admission a second) starting in `starts_in` seconds.
async fn queued_sale(app: &TestServer, name: &str, starts_in: i64, mode: &str) -> i64 {
    let (status, sale) = app
        .create_sale(json!({
            "name": name, "stock": 5, "starts_at": rfc3339_in(starts_in),
            "waiting_room": { "admit_per_sec": 1, "mode": mode, "ticket_ttl_secs": 30 },
        }))
        .await;
    assert_eq!(status, 201, "{sale}");
    sale["id"].as_i64().expect("id")
}

/// A buyer's join of the sale's queue, without the page.
async fn join(app: &TestServer, sale: i64, user: &str) -> (u16, serde_json::Value) {
    let (status, _, body) =
        crate::requests::post(app, &format!("/api/sales/{sale}/queue"), &[("x-user-id", user)]).await;
    (status, body)
}

/// A sale with a waiting room: the page joins by itself, shows the buyers ahead, keeps the button
/// closed until the ticket is admitted, then buys with the admission token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_buyer_sees_the_queue_then_buys_once_admitted() {
    let app = TestServer::spawn().await;
    // Late enough that a slow Chromium still finds the queue before the start.
    let id = queued_sale(&app, "排队 queued", 12, "fifo").await;
    for user in ["ahead-1", "ahead-2"] {
        let (status, body) = join(&app, id, user).await;
        assert_eq!(status, 200, "{body}");
    }
    let browser = Browser::start().await;
    browser.goto(&app.url(&format!("/?sale={id}&user=queued-buyer"))).await;
    browser
        .wait_for("the queue to show", async |b| {
            b.text("#queue").await.contains("2 ahead of you")
        })
        .await;
    assert!(!browser.enabled("#buy").await, "closed while waiting");
    // Admitted two seconds after the start (one a second, behind the two ahead).
    browser
        .wait_for_within("admission to open the button", Duration::from_secs(30), async |b| {
            b.enabled("#buy").await
        })
        .await;
    browser.click("#buy").await;
    browser
        .wait_for("the purchase result", async |b| {
            b.text("#result").await.contains("Success")
        })
        .await;
    let (status, _) = app.get(&format!("/api/sales/{id}/orders/queued-buyer")).await;
    assert_eq!(status, 200);
    browser.close().await;
}

/// With `--altcha-difficulty`, the page solves the join's proof of work by itself (WebCrypto
/// SHA-256) and queues; a join that skips it is refused. Prints what the solve took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_solves_the_joins_proof_of_work_and_queues() {
    let app = crate::helpers::TestServer::spawn_with(crate::helpers::Options {
        extra_args: vec!["--altcha-difficulty".into(), "4".into()],
        ..crate::helpers::Options::new()
    })
    .await;
    let id = queued_sale(&app, "排队 proof of work", 3600, "random_at_start").await;
    let (status, body) = join(&app, id, "script").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("challenge_required")),
        "{body}"
    );

    let browser = Browser::start().await;
    browser.goto(&app.url(&format!("/?sale={id}&user=browser-buyer"))).await;
    browser
        .wait_for_within("the queue to show", Duration::from_secs(60), async |b| {
            b.text("#queue").await.contains("In the queue")
        })
        .await;
    let dataset = |key: &'static str| {
        let browser = &browser;
        async move {
            let value = browser
                .js(&format!("return document.getElementById('queue').dataset.{key};"))
                .await;
            value.as_str().and_then(|v| v.parse::<f64>().ok())
        }
    };
    let (ms, tries) = (dataset("challengeMs").await, dataset("challengeTries").await);
    let (Some(ms), Some(tries)) = (ms, tries) else {
        panic!("the page did not record its solve: {ms:?} ms, {tries:?} tries");
    };
    // What a browser pays: bench/README.md keeps these figures.
    eprintln!(
        "the page solved a difficulty-4 challenge in {ms} ms, {tries} tries: {:.2} µs per try",
        ms * 1000.0 / tries
    );
    browser.close().await;
}
