//! A win is a hold: paid within the sale's payment window, or the unit goes back on sale.
//! Every test runs against the embedded engine, and (with the `distributed` feature) against
//! Redis + Kafka + MySQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{assert_error, Options, TestServer, ADMIN_TOKEN};
use crate::requests::{get_with, post};
#[cfg(feature = "distributed")]
use crate::services::Services;

const SECRET: &str = "webhook-secret-for-tests";

fn with_payments(mut options: Options) -> Options {
    options
        .env
        .push(("SECKILL_PAYMENT_WEBHOOK_SECRET".into(), SECRET.into()));
    options
}

async fn embedded() -> TestServer {
    TestServer::spawn_with(with_payments(Options::new())).await
}

#[cfg(feature = "distributed")]
async fn distributed(services: &Services) -> TestServer {
    TestServer::spawn_with(with_payments(Options::distributed(services))).await
}

async fn sale_with_window(app: &TestServer, stock: u64, limit: u32, window_secs: u32) -> i64 {
    let (status, sale) = app
        .create_sale(json!({"name": "held item", "stock": stock, "per_user_limit": limit,
                            "payment_window_secs": window_secs}))
        .await;
    assert_eq!(status, 201, "{sale}");
    assert_eq!(sale["payment_window_secs"], window_secs, "{sale}");
    sale["id"].as_i64().expect("id")
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// The provider's webhook, signed with `secret` at `at` (unix seconds).
async fn notify(app: &TestServer, body: &str, secret: &str, at: i64) -> (u16, Value) {
    let signature = seckill::payment::webhook::WebhookKey::new(secret.as_bytes()).sign(at, body.as_bytes());
    let resp = app
        .client
        .post(app.url("/api/payments/webhook"))
        .header("content-type", "application/json")
        .header("seckill-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .expect("POST webhook");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn pay(app: &TestServer, order_id: &str, payment_id: &str) -> (u16, Value) {
    let body = json!({"order_id": order_id, "payment_id": payment_id, "amount": "19.99"}).to_string();
    notify(app, &body, SECRET, now_secs()).await
}

async fn order(app: &TestServer, order_id: &str, user: &str) -> (u16, Value) {
    let (status, _, body) = get_with(app, &format!("/api/orders/{order_id}"), &[("x-user-id", user)]).await;
    (status, body)
}

async fn cancel(app: &TestServer, order_id: &str, user: &str) -> (u16, Value) {
    let (status, _, body) = post(app, &format!("/api/orders/{order_id}/cancel"), &[("x-user-id", user)]).await;
    (status, body)
}

/// Polls the order until it is in `state` or `within` passes; returns the last answer.
async fn wait_state(app: &TestServer, order_id: &str, user: &str, state: &str, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = order(app, order_id, user).await;
        assert_eq!(status, 200, "{body}");
        if body["state"] == state || started.elapsed() > within {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the audit until `done` holds (the distributed store lags the log) or `within` passes.
async fn wait_audit(app: &TestServer, sale: i64, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let audit = app.audit(sale).await;
        if done(&audit) || started.elapsed() > within {
            return audit;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn id_of(purchase: &Value) -> String {
    purchase["order_id"].as_str().expect("order_id").to_owned()
}

// ---- an unpaid hold expires and its unit is sold again ----

async fn an_unpaid_hold_expires_and_its_unit_is_sold_again(app: &TestServer) {
    let sale = sale_with_window(app, 1, 1, 1).await;
    let (status, won) = app.buy(sale, "payer-late").await;
    assert_eq!(status, 201, "{won}");
    assert_eq!(won["state"], "awaiting_payment", "{won}");
    assert!(won["pay_by"].is_string(), "{won}");
    let (status, body) = app.buy(sale, "second-buyer").await;
    assert_error(status, &body, 410, "sold_out");

    let expired = wait_state(app, &id_of(&won), "payer-late", "expired", Duration::from_secs(15)).await;
    assert_eq!(expired["state"], "expired", "{expired}");
    // The unit is on sale again; the sold-out answer another instance cached lasts ≤ 1 s.
    let started = Instant::now();
    let (status, again) = loop {
        let (status, body) = app.buy(sale, "second-buyer").await;
        if status != 410 || started.elapsed() > Duration::from_secs(10) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 201, "{again}");
    // The expired buyer's late payment is refused and kept for a refund.
    let (status, body) = pay(app, &id_of(&won), "pay-too-late").await;
    assert_error(status, &body, 409, "payment_window_closed");

    let audit = wait_audit(app, sale, Duration::from_secs(30), |a| {
        a["expired"] == 1 && a["late_payments"] == 1 && a["consistent"] == true
    })
    .await;
    assert_eq!(audit["expired"], 1, "{audit}");
    assert_eq!(audit["stored"], 1, "{audit}");
    assert_eq!(audit["late_payments"], 1, "{audit}");
    assert_eq!(audit["consistent"], true, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_an_unpaid_hold_expires_and_its_unit_is_sold_again() {
    an_unpaid_hold_expires_and_its_unit_is_sold_again(&embedded().await).await;
}

#[cfg(feature = "distributed")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributed_an_unpaid_hold_expires_and_its_unit_is_sold_again() {
    let services = Services::start().await;
    an_unpaid_hold_expires_and_its_unit_is_sold_again(&distributed(&services).await).await;
}

// ---- payments racing the deadline: exactly one of pay and expire wins, as answered ----

async fn payments_racing_the_deadline_are_never_paid_and_returned(apps: &[Arc<TestServer>]) {
    const BUYERS: usize = 1_000;
    let app = &apps[0];
    let sale = sale_with_window(app, BUYERS as u64, 1, 2).await;
    let won = join_all((0..BUYERS).map(|i| {
        let app = Arc::clone(&apps[i % apps.len()]);
        async move { app.buy(sale, &format!("racer-{i}")).await }
    }))
    .await;
    let mut orders = Vec::new();
    for (i, (status, body)) in won.iter().enumerate() {
        assert_eq!(*status, 201, "{body}");
        orders.push((format!("racer-{i}"), id_of(body)));
    }
    let pay_by = won[0].1["pay_by"].as_str().expect("pay_by").to_owned();
    // Sleep to a little before the deadline, then pay everyone spread across it.
    let deadline = chrono_millis(&pay_by);
    let wait_ms = deadline - now_millis() - 250;
    if wait_ms > 0 {
        tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
    }
    let answers = join_all(orders.iter().enumerate().map(|(i, (_, id))| {
        let app = Arc::clone(&apps[i % apps.len()]);
        let id = id.clone();
        async move {
            // Spread over ~500 ms around the deadline.
            tokio::time::sleep(Duration::from_millis((i as u64 * 7) % 500)).await;
            pay(&app, &id, &format!("pay-{id}")).await
        }
    }))
    .await;

    let (mut paid, mut refused) = (0u64, 0u64);
    for ((user, id), (status, body)) in orders.iter().zip(&answers) {
        let (_, settled) = order(app, id, user).await;
        match status {
            // Paid in time, and it stays paid: the expiry never takes a paid unit back.
            200 => {
                paid += 1;
                assert_eq!(body["state"], "paid", "{body}");
                assert_eq!(settled["state"], "paid", "answered paid, now {settled}");
            }
            // Too late: refused, kept for a refund, and the hold expires.
            409 => {
                refused += 1;
                assert_eq!(body["error"]["code"], "payment_window_closed", "{body}");
                let closed = wait_state(app, id, user, "expired", Duration::from_secs(10)).await;
                assert_eq!(closed["state"], "expired", "refused, but {closed}");
            }
            other => panic!("payment of {id}: {other} {body}"),
        }
    }
    assert_eq!(paid + refused, BUYERS as u64);

    let audit = wait_audit(app, sale, Duration::from_secs(30), |a| {
        a["paid"] == paid && a["expired"] == refused && a["consistent"] == true
    })
    .await;
    assert_eq!(audit["paid"], paid, "{audit}");
    assert_eq!(audit["expired"], refused, "{audit}");
    assert_eq!(audit["stored"], paid, "{audit}");
    assert_eq!(audit["remaining"], refused, "{audit}");
    assert_eq!(audit["late_payments"], refused, "{audit}");
    assert_eq!(audit["consistent"], true, "{audit}");
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Unix milliseconds of an RFC 3339 time the engine wrote (`...Z`).
fn chrono_millis(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_payments_racing_the_deadline_are_never_paid_and_returned() {
    payments_racing_the_deadline_are_never_paid_and_returned(&[Arc::new(embedded().await)]).await;
}

#[cfg(feature = "distributed")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributed_two_instances_racing_payments_and_expiry_never_pay_and_return() {
    let services = Services::start().await;
    let a = Arc::new(distributed(&services).await);
    let b = Arc::new(
        TestServer::spawn_with(with_payments(Options {
            no_consumer: true,
            ..Options::distributed(&services)
        }))
        .await,
    );
    payments_racing_the_deadline_are_never_paid_and_returned(&[a, b]).await;
}

// ---- the webhook: forged, stale, replayed, unknown ----

async fn the_webhook_refuses_forged_stale_and_unknown_and_replays_are_one_payment(app: &TestServer) {
    let sale = sale_with_window(app, 5, 1, 600).await;
    let (status, won) = app.buy(sale, "webhook-buyer").await;
    assert_eq!(status, 201, "{won}");
    let id = id_of(&won);
    let body = json!({"order_id": id, "payment_id": "p-1"}).to_string();

    let (status, answer) = notify(app, &body, "not-the-secret", now_secs()).await;
    assert_error(status, &answer, 401, "invalid_signature");
    let (status, answer) = notify(app, &body, SECRET, now_secs() - 3600).await;
    assert_error(status, &answer, 401, "invalid_signature");
    let unsigned = app
        .client
        .post(app.url("/api/payments/webhook"))
        .body(body.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(unsigned.status(), 401);
    // Not paid by any of those.
    assert_eq!(order(app, &id, "webhook-buyer").await.1["state"], "awaiting_payment");

    let (status, first) = notify(app, &body, SECRET, now_secs()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["state"], "paid", "{first}");
    assert_eq!(first["payment_id"], "p-1", "{first}");
    // The provider retries: the same payment, the same answer.
    let (status, again) = notify(app, &body, SECRET, now_secs()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first);
    // A second, different payment of a paid order is refused.
    let (status, other) = pay(app, &id, "p-2").await;
    assert_error(status, &other, 409, "already_paid");
    // A paid order cannot be cancelled.
    let (status, body) = cancel(app, &id, "webhook-buyer").await;
    assert_error(status, &body, 409, "not_cancellable");
    // An order nobody has.
    let (status, body) = pay(app, "0192f1c4-5b7a-7c3e-9a51-000000000001", "p-3").await;
    assert_error(status, &body, 404, "order_not_found");
    // Another buyer cannot read it.
    let (status, body) = order(app, &id, "someone-else").await;
    assert_error(status, &body, 404, "order_not_found");
    let audit = wait_audit(app, sale, Duration::from_secs(30), |a| a["paid"] == 1).await;
    assert_eq!(audit["paid"], 1, "{audit}");
    assert_eq!(audit["late_payments"], 0, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_the_webhook_refuses_forged_stale_and_unknown_and_replays_are_one_payment() {
    the_webhook_refuses_forged_stale_and_unknown_and_replays_are_one_payment(&embedded().await).await;
}

#[cfg(feature = "distributed")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributed_the_webhook_refuses_forged_stale_and_unknown_and_replays_are_one_payment() {
    let services = Services::start().await;
    the_webhook_refuses_forged_stale_and_unknown_and_replays_are_one_payment(&distributed(&services).await).await;
}

#[tokio::test]
async fn without_a_webhook_secret_payments_are_disabled() {
    let app = TestServer::spawn().await;
    let (status, body) = pay(&app, "0192f1c4-5b7a-7c3e-9a51-000000000001", "p").await;
    assert_error(status, &body, 403, "payments_disabled");
}

// ---- cancel, then buy again: the unit is back, the buyer's seq is new ----

async fn cancelled_units_are_sold_again_and_never_reuse_a_seq(app: &TestServer) {
    const BUYERS: usize = 60;
    let sale = sale_with_window(app, (BUYERS * 2) as u64, 2, 600).await;
    let rounds = join_all((0..BUYERS).map(|i| async move {
        let user = format!("canceller-{i}");
        let (_, first) = app.buy(sale, &user).await;
        let (_, second) = app.buy(sale, &user).await;
        let (status, third) = app.buy(sale, &user).await;
        assert_error(status, &third, 409, "already_purchased");
        // Someone else cannot cancel it, and cannot learn it exists.
        let (status, body) = cancel(app, &id_of(&first), "a-stranger").await;
        assert_error(status, &body, 404, "order_not_found");
        // Give the first back and buy again, concurrently with everyone else.
        let (status, cancelled) = cancel(app, &id_of(&first), &user).await;
        assert_eq!(status, 200, "{cancelled}");
        assert_eq!(cancelled["state"], "cancelled");
        let (status, body) = cancel(app, &id_of(&first), &user).await;
        assert_error(status, &body, 409, "not_cancellable");
        let (status, rebought) = app.buy(sale, &user).await;
        assert_eq!(status, 201, "{rebought}");
        [first, second, rebought]
    }))
    .await;
    for round in &rounds {
        let seqs: Vec<u64> = round.iter().map(|o| o["seq"].as_u64().expect("seq")).collect();
        assert_eq!(seqs, [1, 2, 3], "{round:?}");
    }
    let audit = wait_audit(app, sale, Duration::from_secs(30), |a| {
        a["cancelled"] == BUYERS && a["stored"] == BUYERS * 2 && a["consistent"] == true
    })
    .await;
    assert_eq!(audit["cancelled"], BUYERS, "{audit}");
    assert_eq!(audit["awaiting_payment"], BUYERS * 2, "{audit}");
    assert_eq!(audit["remaining"], 0, "{audit}");
    assert_eq!(audit["conflicts"], 0, "{audit}");
    assert_eq!(audit["consistent"], true, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_cancelled_units_are_sold_again_and_never_reuse_a_seq() {
    cancelled_units_are_sold_again_and_never_reuse_a_seq(&embedded().await).await;
}

#[cfg(feature = "distributed")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributed_cancelled_units_are_sold_again_and_never_reuse_a_seq() {
    let services = Services::start().await;
    cancelled_units_are_sold_again_and_never_reuse_a_seq(&distributed(&services).await).await;
}

// ---- holds survive a crash ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_holds_survive_a_kill_and_still_expire() {
    let mut app = embedded().await;
    let sale = sale_with_window(&app, 3, 1, 5).await;
    let (status, won) = app.buy(sale, "crash-holder").await;
    assert_eq!(status, 201, "{won}");
    let (status, paid) = app.buy(sale, "crash-payer").await;
    assert_eq!(status, 201, "{paid}");
    assert_eq!(pay(&app, &id_of(&paid), "before-crash").await.0, 200);
    app.kill9().await;
    let app = app.restart(with_payments(Options::new())).await;
    let (_, view) = app.get(&format!("/api/sales/{sale}")).await;
    assert_eq!(view["awaiting_payment"], 1, "{view}");
    assert_eq!(view["paid"], 1, "{view}");
    assert_eq!(view["remaining"], 1, "{view}");
    let expired = wait_state(&app, &id_of(&won), "crash-holder", "expired", Duration::from_secs(15)).await;
    assert_eq!(expired["state"], "expired", "{expired}");
    // Back on sale once the expiry is durable.
    let started = Instant::now();
    let view = loop {
        let (_, view) = app.get(&format!("/api/sales/{sale}")).await;
        if view["remaining"] == 2 || started.elapsed() > Duration::from_secs(10) {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["remaining"], 2, "{view}");
    // The paid order stays paid; paying it again is the same payment.
    let (status, again) = pay(&app, &id_of(&paid), "before-crash").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["state"], "paid");
}

/// A sale without a payment window answers orders that are final, as before.
#[tokio::test]
async fn a_sale_without_a_window_has_final_orders() {
    let app = embedded().await;
    let sale = app.live_sale(2, 1).await;
    let (status, won) = app.buy(sale, "final-buyer").await;
    assert_eq!(status, 201, "{won}");
    assert_eq!(won["state"], "confirmed", "{won}");
    assert!(won.get("pay_by").is_none_or(Value::is_null), "{won}");
    let (status, body) = cancel(&app, &id_of(&won), "final-buyer").await;
    assert_error(status, &body, 409, "not_cancellable");
    let (status, body) = pay(&app, &id_of(&won), "p").await;
    assert_error(status, &body, 409, "payment_window_closed");
    // The admin reads any order.
    let resp = app
        .client
        .get(app.url(&format!("/api/orders/{}", id_of(&won))))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
}

// ---- kill -9 in the middle of a storm of expiries ----

/// 1,200 holds, a quarter paid, the engine killed while the rest expire (some expired before the
/// kill, some deadlines pass while it is down): after a restart every unpaid hold expires once,
/// every paid one stays paid, and every returned unit is back exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_a_kill_during_a_storm_of_expiries_loses_and_doubles_nothing() {
    use futures::StreamExt;
    const BUYERS: usize = 1_200;
    let mut app = embedded().await;
    let sale = sale_with_window(&app, BUYERS as u64, 1, 6).await;
    let won: Vec<(usize, Value)> = futures::stream::iter(0..BUYERS)
        .map(|i| {
            let app = &app;
            async move {
                let (status, body) = app.buy(sale, &format!("storm-{i}")).await;
                assert_eq!(status, 201, "{body}");
                // A quarter pay at once, well inside the window however slow the machine is.
                if i % 4 == 0 {
                    let (status, paid) = pay(app, &id_of(&body), &format!("storm-pay-{}", id_of(&body))).await;
                    assert_eq!(status, 200, "{paid}");
                }
                (i, body)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let paid: Vec<&Value> = won.iter().filter(|(i, _)| i % 4 == 0).map(|(_, o)| o).collect();
    let first_deadline = won
        .iter()
        .map(|(_, o)| chrono_millis(o["pay_by"].as_str().expect("pay_by")))
        .min()
        .expect("orders");
    let wait = first_deadline + 300 - now_millis();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    app.kill9().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let app = app.restart(with_payments(Options::new())).await;

    let unpaid = (BUYERS - paid.len()) as u64;
    let audit = wait_audit(&app, sale, Duration::from_secs(30), |a| a["awaiting_payment"] == 0).await;
    assert_eq!(audit["awaiting_payment"], 0, "{audit}");
    assert_eq!(audit["paid"], paid.len(), "{audit}");
    assert_eq!(audit["expired"], unpaid, "{audit}");
    assert_eq!(audit["stored"], paid.len(), "{audit}");
    assert_eq!(audit["remaining"], unpaid, "{audit}");
    assert_eq!(audit["consistent"], true, "{audit}");
    for order in &paid {
        let user = order["user_id"].as_str().expect("user");
        assert_eq!(order_state(&app, &id_of(order), user).await, "paid");
    }
}

async fn order_state(app: &TestServer, order_id: &str, user: &str) -> String {
    let (status, body) = order(app, order_id, user).await;
    assert_eq!(status, 200, "{body}");
    body["state"].as_str().expect("state").to_owned()
}

/// A hold cancelled is bought by the next buyer at once.
#[tokio::test]
async fn a_cancelled_unit_goes_to_the_next_buyer() {
    let app = embedded().await;
    let sale = sale_with_window(&app, 1, 1, 600).await;
    let (status, won) = app.buy(sale, "giver").await;
    assert_eq!(status, 201, "{won}");
    let (status, body) = app.buy(sale, "taker").await;
    assert_error(status, &body, 410, "sold_out");
    assert_eq!(cancel(&app, &id_of(&won), "giver").await.0, 200);
    let (status, taken) = app.buy(sale, "taker").await;
    assert_eq!(status, 201, "{taken}");
}

// ---- distributed: the log carries every transition, in any order ----

/// The consumer merges an order's events in any order: a replayed `awaiting_payment` copy after
/// `paid` or `expired` changes nothing in MySQL.
#[cfg(feature = "distributed")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributed_a_replayed_older_event_never_overwrites_a_newer_state() {
    let services = Services::start().await;
    let app = distributed(&services).await;
    // One sale whose hold is paid at once (a long window: the machine may be slow), one whose
    // hold expires.
    let paying = sale_with_window(&app, 10, 1, 600).await;
    let expiring = sale_with_window(&app, 10, 1, 1).await;
    let (_, paid) = app.buy(paying, "replay-payer").await;
    assert_eq!(pay(&app, &id_of(&paid), "replay-pay").await.0, 200);
    let (_, idle) = app.buy(expiring, "replay-idler").await;
    let expired = wait_state(&app, &id_of(&idle), "replay-idler", "expired", Duration::from_secs(15)).await;
    assert_eq!(expired["state"], "expired");
    wait_audit(&app, paying, Duration::from_secs(30), |a| a["paid"] == 1).await;
    let audit = wait_audit(&app, expiring, Duration::from_secs(30), |a| a["expired"] == 1).await;
    assert_eq!(audit["expired"], 1, "{audit}");

    // Both purchases again, as they first went through the log.
    let log = seckill::log::KafkaLog::connect(&services.brokers, &services.topic, Duration::from_secs(5)).expect("log");
    for (body, user, sale) in [(&paid, "replay-payer", paying), (&idle, "replay-idler", expiring)] {
        let order = seckill::domain::Order {
            order_id: id_of(body).parse().expect("uuid"),
            sale_id: seckill::domain::SaleId(sale),
            user_id: seckill::domain::UserId::parse(user).expect("user"),
            seq: 1,
            created_at: 0,
            state: seckill::domain::OrderState::AwaitingPayment,
            pay_by: Some(0),
            payment: None,
        };
        log.publish(&order).await.expect("publish");
    }
    // A new order behind them tells when the consumer has gone past the copies.
    let (status, marker) = app.buy(paying, "replay-marker").await;
    assert_eq!(status, 201, "{marker}");
    let audit = wait_audit(&app, paying, Duration::from_secs(30), |a| a["awaiting_payment"] == 1).await;
    assert_eq!(audit["awaiting_payment"], 1, "only the marker awaits payment: {audit}");
    assert_eq!(audit["paid"], 1, "{audit}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let audit = app.audit(expiring).await;
    assert_eq!(audit["expired"], 1, "{audit}");
    assert_eq!(audit["awaiting_payment"], 0, "{audit}");
    for (user, state, sale) in [("replay-payer", "paid", paying), ("replay-idler", "expired", expiring)] {
        let (status, stored) = app.get(&format!("/api/sales/{sale}/orders/{user}")).await;
        assert_eq!(status, 200, "{stored}");
        assert_eq!(stored["orders"][0]["state"], state, "{stored}");
    }
}

/// Holds expire while the broker is away: Redis decides and returns the units at once; the
/// expiries reach MySQL once the broker is back (recorded again from the gate's list of
/// unconfirmed transitions).
#[cfg(feature = "distributed")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributed_expiries_decided_while_the_broker_is_away_reach_mysql_later() {
    let services = Services::start().await;
    let app = distributed(&services).await;
    let sale = sale_with_window(&app, 20, 1, 1).await;
    let mut won = Vec::new();
    for i in 0..20 {
        let (status, body) = app.buy(sale, &format!("away-{i}")).await;
        assert_eq!(status, 201, "{body}");
        won.push(body);
    }
    wait_audit(&app, sale, Duration::from_secs(30), |a| a["awaiting_payment"] == 20).await;
    services.broker.pause();
    // Every hold expires in the gate, and its unit is back on sale, though the log is away.
    for (i, order) in won.iter().enumerate() {
        let expired = wait_state(
            &app,
            &id_of(order),
            &format!("away-{i}"),
            "expired",
            Duration::from_secs(15),
        )
        .await;
        assert_eq!(expired["state"], "expired", "{expired}");
    }
    let (_, view) = app.get(&format!("/api/sales/{sale}")).await;
    assert_eq!(view["remaining"], 20, "{view}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    services.broker.resume();
    let audit = wait_audit(&app, sale, Duration::from_secs(60), |a| {
        a["expired"] == 20 && a["consistent"] == true
    })
    .await;
    assert_eq!(audit["expired"], 20, "{audit}");
    assert_eq!(audit["awaiting_payment"], 0, "{audit}");
    assert_eq!(audit["consistent"], true, "{audit}");
}

/// Any instance expires any hold: the instance that sold them is killed, and another one,
/// which never served that sale, expires them and puts the units back.
#[cfg(feature = "distributed")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributed_holds_of_a_dead_instance_expire_on_another() {
    let mut services = Services::start().await;
    // A kill right after an answer can leave that reservation pending (its confirmation not yet
    // sent): its hold expires once the reconciler has settled it, so the waits below outlast
    // --reconcile-after-ms.
    services.reconcile_after_ms = 2 * services.kafka_timeout_ms;
    let survivor = distributed(&services).await;
    let mut seller = TestServer::spawn_with(with_payments(Options {
        no_consumer: true,
        ..Options::distributed(&services)
    }))
    .await;
    let sale = sale_with_window(&seller, 10, 1, 2).await;
    let mut won = Vec::new();
    for i in 0..10 {
        let (status, body) = seller.buy(sale, &format!("orphan-{i}")).await;
        assert_eq!(status, 201, "{body}");
        won.push(body);
    }
    seller.kill9().await;
    for (i, order) in won.iter().enumerate() {
        let expired = wait_state(
            &survivor,
            &id_of(order),
            &format!("orphan-{i}"),
            "expired",
            Duration::from_secs(40),
        )
        .await;
        assert_eq!(expired["state"], "expired", "{expired}");
    }
    let audit = wait_audit(&survivor, sale, Duration::from_secs(30), |a| {
        a["expired"] == 10 && a["remaining"] == 10 && a["consistent"] == true
    })
    .await;
    assert_eq!(audit["expired"], 10, "{audit}");
    assert_eq!(audit["remaining"], 10, "{audit}");
    assert_eq!(audit["consistent"], true, "{audit}");
}
