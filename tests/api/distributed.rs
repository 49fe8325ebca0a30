//! `--backend distributed` against real Redis, MariaDB and a tansu broker: many instances sell
//! one stock together, and the consumer stores every confirmed order exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::helpers::{assert_error, Options, Services, TestServer};

/// Polls the audit (up to a minute) until the books balance with no reservation left open:
/// the consumer has drained and the reconciler has settled what a fault left uncertain.
async fn wait_settled(app: &TestServer, sale: i64) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let audit = app.audit(sale).await;
        let settled = audit["consistent"] == true && audit["open_reservations"] == 0;
        if settled || started.elapsed() > Duration::from_secs(60) {
            return audit;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// After a fault mid-sale, once the store has caught up (what the fault left uncertain is
/// settled by the reconciler): the books balance, no reservation is stranded, nothing is
/// oversold, and at least every confirmed purchase is stored. The audit, for more checks.
pub(crate) async fn books_balance_after_a_fault(
    app: &TestServer,
    sale: i64,
    stock: u64,
    confirmed: usize,
) -> serde_json::Value {
    let audit = wait_settled(app, sale).await;
    assert_eq!(audit["consistent"], true, "{audit}");
    assert_eq!(
        audit["open_reservations"], 0,
        "a reservation was left stranded: {audit}"
    );
    let stored = audit["stored"].as_u64().expect("stored");
    assert!(stored >= confirmed as u64 && stored <= stock, "{audit}");
    audit
}

/// Polls the audit until the store holds `expected` orders (the consumer drains the log) and
/// their confirmations have cleared the gate's pending reservations: an order stored before its
/// confirmation lands is counted both as stored and as open, which the audit reports as
/// unbalanced. Pending ones that only the reconciler will clear are waited for 5 s at most.
pub(crate) async fn wait_stored(app: &TestServer, sale: i64, expected: u64, within: Duration) -> serde_json::Value {
    let started = Instant::now();
    let mut stored_since = None;
    loop {
        let audit = app.audit(sale).await;
        if audit["stored"].as_u64() == Some(expected) {
            let since = *stored_since.get_or_insert_with(Instant::now);
            if audit["open_reservations"] == 0 || since.elapsed() > Duration::from_secs(5) {
                return audit;
            }
        } else {
            stored_since = None;
        }
        if started.elapsed() > within {
            return audit;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After a stampede on `sale` of `stock` units: every instance reads it sold out (the stock
/// is shared), MySQL holds each order once, the confirmations clear every pending reservation,
/// and the audit balances. (Until an order's confirmation lands, the audit counts it both as
/// stored and as open, so it is read once both have settled.)
pub(crate) async fn sold_out_everywhere_and_stored_once(apps: &[&TestServer], sale: i64, stock: u64) {
    for app in apps {
        assert_eq!(app.get(&format!("/api/sales/{sale}")).await.1["remaining"], 0);
    }
    let started = Instant::now();
    let audit = loop {
        let audit = apps[0].audit(sale).await;
        let settled = audit["stored"].as_u64() == Some(stock) && audit["open_reservations"] == 0;
        if settled || started.elapsed() > Duration::from_secs(60) {
            break audit;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (
            audit["stored"].as_u64(),
            audit["duplicates"].as_u64(),
            audit["open_reservations"].as_u64()
        ),
        (Some(stock), Some(0), Some(0)),
        "{audit}"
    );
    assert_eq!(audit["consistent"], true, "{audit}");
}

/// 32 buyers in a loop, each request a new buyer, until stopped or sold out: the load a fault
/// test keeps on while it breaks a backend. Records every 201 as (buyer, order id) and the
/// slowest 503.
pub(crate) struct Stampede {
    confirmed: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    slowest_refusal: Arc<std::sync::Mutex<Duration>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Stampede {
    pub(crate) fn start(app: &Arc<TestServer>, sale: i64, prefix: &'static str) -> Self {
        let confirmed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let slowest_refusal = Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..32)
            .map(|w| {
                let (app, confirmed, slowest, stop) = (
                    Arc::clone(app),
                    Arc::clone(&confirmed),
                    Arc::clone(&slowest_refusal),
                    Arc::clone(&stop),
                );
                tokio::spawn(async move {
                    for i in 0.. {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let user = format!("{prefix}{w}-{i}");
                        let started = Instant::now();
                        let (status, body) = app.buy(sale, &user).await;
                        match status {
                            201 => {
                                let order = body["order_id"].as_str().expect("order id").to_owned();
                                confirmed.lock().unwrap().push((user, order));
                            }
                            503 => {
                                let mut slowest = slowest.lock().unwrap();
                                *slowest = (*slowest).max(started.elapsed());
                            }
                            410 => break,
                            other => panic!("unexpected {other}: {body}"),
                        }
                    }
                })
            })
            .collect();
        Stampede {
            confirmed,
            slowest_refusal,
            stop,
            workers,
        }
    }

    pub(crate) fn confirmed(&self) -> usize {
        self.confirmed.lock().unwrap().len()
    }

    /// Whether `at_least` purchases were confirmed within `within`.
    pub(crate) async fn reaches(&self, at_least: usize, within: Duration) -> bool {
        let started = Instant::now();
        while self.confirmed() < at_least {
            if started.elapsed() > within {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Stops the buyers: every confirmed (buyer, order id), and the slowest 503.
    pub(crate) async fn stop(self) -> (Vec<(String, String)>, Duration) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        let confirmed = std::mem::take(&mut *self.confirmed.lock().unwrap());
        let slowest = *self.slowest_refusal.lock().unwrap();
        (confirmed, slowest)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_sell_exactly_the_stock_and_mysql_holds_each_order_once() {
    let services = Services::start().await;
    let a = Arc::new(TestServer::spawn_with(Options::distributed(&services)).await);
    let b = Arc::new(
        TestServer::spawn_with(Options {
            no_consumer: true,
            ..Options::distributed(&services)
        })
        .await,
    );
    let sale = a.live_sale(1000, 1).await;

    let answers = join_all((0..4000).map(|i| {
        let app = Arc::clone(if i % 2 == 0 { &a } else { &b });
        tokio::spawn(async move { app.buy(sale, &format!("buyer-{i}")).await.0 })
    }))
    .await;
    let statuses: Vec<u16> = answers.into_iter().map(|s| s.unwrap()).collect();
    let won = statuses.iter().filter(|s| **s == 201).count();
    let gone = statuses.iter().filter(|s| **s == 410).count();
    assert_eq!(
        (won, gone),
        (1000, 3000),
        "other statuses: {:?}",
        statuses.iter().filter(|s| !matches!(s, 201 | 410)).collect::<Vec<_>>()
    );

    // Both instances see the same stock, from Redis.
    sold_out_everywhere_and_stored_once(&[&a, &b], sale, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_classic_api_works_in_distributed_mode() {
    let services = Services::start().await;
    let app = TestServer::spawn_with(Options {
        demo_stock: 3,
        ..Options::distributed(&services)
    })
    .await;
    assert_eq!(app.count().await, 3);
    assert_eq!(app.classic_buy().await["messages"], "购买成功，还剩下2个");
    // A second instance on the same services finds the demo sale instead of creating another.
    let other = TestServer::spawn_with(Options {
        demo_stock: 50,
        no_consumer: true,
        ..Options::distributed(&services)
    })
    .await;
    assert_eq!(other.count().await, 2);
    let (_, sales) = other.get("/api/sales").await;
    assert_eq!(
        sales["sales"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["demo"] == true)
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_killed_mid_stream_loses_and_doubles_nothing() {
    let services = Services::start().await;
    let app = Arc::new(
        TestServer::spawn_with(Options {
            no_consumer: true,
            ..Options::distributed(&services)
        })
        .await,
    );
    let sale = app.live_sale(3000, 1).await;
    let mut consumer = services.consumer();

    let load = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let answers = join_all((0..3000).map(|i| {
                let app = Arc::clone(&app);
                async move { app.buy(sale, &format!("c-{i}")).await.0 }
            }))
            .await;
            answers.into_iter().filter(|s| *s == 201).count() as u64
        })
    };
    // Kill the consumer once it has stored part of the stream.
    let started = Instant::now();
    while app.audit(sale).await["stored"].as_u64().unwrap() < 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the consumer stored nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.start_kill().unwrap();
    let _ = consumer.wait().await;
    let confirmed = load.await.unwrap();
    assert_eq!(confirmed, 3000);

    // Two consumers in the same group take over (a rebalance between them).
    let _first = services.consumer();
    let _second = services.consumer();
    let audit = wait_stored(&app, sale, confirmed, Duration::from_secs(90)).await;
    assert_eq!(
        (audit["stored"].as_u64(), audit["duplicates"].as_u64()),
        (Some(confirmed), Some(0)),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_broker_gets_503_promptly_and_loses_nothing_confirmed() {
    let mut services = Services::start().await;
    services.kafka_timeout_ms = 1500;
    services.reconcile_after_ms = 3000;
    let app = Arc::new(TestServer::spawn_with(Options::distributed(&services)).await);
    let sale = app.live_sale(500, 1).await;
    for i in 0..20 {
        assert_eq!(app.buy(sale, &format!("before-{i}")).await.0, 201);
    }

    services.broker.pause();
    let started = Instant::now();
    let purchases = join_all((0..50).map(|i| {
        let app = Arc::clone(&app);
        async move { app.buy(sale, &format!("during-{i}")).await }
    }));
    // Meanwhile the unacknowledged orders show in /metrics (librdkafka's statistics, each second).
    let queued = app.wait_metric(
        "seckill_kafka_producer_queue_messages",
        Duration::from_millis(1400),
        |q| q >= 1.0,
    );
    let (during, queued) = tokio::join!(purchases, queued);
    let waited = started.elapsed();
    assert!(
        queued.is_some_and(|q| q >= 1.0),
        "producer queue while the broker is paused: {queued:?}"
    );
    for (status, body) in &during {
        assert_eq!(*status, 503, "{body}");
        assert!(
            matches!(body["error"]["code"].as_str(), Some("unavailable" | "outcome_unknown")),
            "{body}"
        );
    }
    assert!(
        waited < Duration::from_secs(8),
        "503 took {waited:?}; server log:\n{}",
        app.log_tail(40)
    );
    services.broker.resume();

    // After the broker is back, new buyers are confirmed again.
    let mut after = 0;
    for i in 0..20 {
        if app.buy(sale, &format!("after-{i}")).await.0 == 201 {
            after += 1;
        }
    }
    assert!(after > 0, "no purchase succeeded after the broker came back");

    // Every confirmed order is stored; reservations left uncertain by the pause are
    // re-published by the reconciler, so the books balance: remaining + stored == stock.
    let audit = wait_settled(&app, sale).await;
    assert!(audit["stored"].as_u64().unwrap() >= 20 + after, "{audit}");
    assert_eq!(audit["duplicates"], 0, "{audit}");
    assert_eq!(audit["consistent"], true, "{audit}");
    assert_eq!(
        audit["open_reservations"], 0,
        "a reservation was left stranded: {audit}"
    );
    for i in 0..20 {
        assert_eq!(app.get(&format!("/api/sales/{sale}/orders/before-{i}")).await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_killed_mid_sale_leaves_no_stock_stranded() {
    let mut services = Services::start().await;
    services.kafka_timeout_ms = 1000;
    services.reconcile_after_ms = 2000;
    let survivor = TestServer::spawn_with(Options::distributed(&services)).await;
    // Every order waits 20 ms between the gate and the log, so the kill always strands some.
    let victim_options = Options {
        no_consumer: true,
        commit_delay_ms: 20,
        ..Options::distributed(&services)
    };
    let mut victim = TestServer::spawn_with(victim_options).await;
    let sale = survivor.live_sale(100_000, 1).await;

    let confirmed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (base, client) = (victim.base.clone(), victim.client.clone());
    let workers: Vec<_> = (0..64)
        .map(|w| {
            let (confirmed, base, client) = (Arc::clone(&confirmed), base.clone(), client.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let user = format!("v{w}-{i}");
                    let Ok(resp) = client
                        .post(format!("{base}/api/sales/{sale}/purchase"))
                        .header("x-user-id", &user)
                        .send()
                        .await
                    else {
                        break;
                    };
                    if resp.status() == 201 {
                        confirmed.lock().unwrap().push(user);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    while confirmed.lock().unwrap().len() < 1000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the victim sold too little"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    victim.kill9().await;
    for w in workers {
        let _ = w.await;
    }
    let confirmed = std::mem::take(&mut *confirmed.lock().unwrap());

    // The survivor's reconciler re-publishes what the victim reserved but never confirmed:
    // every unit taken from stock ends up stored (no open reservation left), none doubled.
    let audit = wait_settled(&survivor, sale).await;
    assert_eq!(audit["consistent"], true, "{audit}");
    assert_eq!(
        (audit["open_reservations"].as_u64(), audit["duplicates"].as_u64()),
        (Some(0), Some(0)),
        "{audit}"
    );
    assert_eq!(
        audit["remaining"].as_u64().unwrap() + audit["stored"].as_u64().unwrap(),
        100_000,
        "{audit}"
    );
    assert!(audit["stored"].as_u64().unwrap() >= confirmed.len() as u64, "{audit}");
    for user in confirmed.iter().step_by(50) {
        assert_eq!(
            survivor.get(&format!("/api/sales/{sale}/orders/{user}")).await.0,
            200,
            "{user} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_delivered_twice_are_stored_once() {
    let services = Services::start().await;
    let app = TestServer::spawn_with(Options::distributed(&services)).await;
    let sale = app.live_sale(100, 1).await;
    let mut orders = Vec::new();
    for i in 0..50 {
        let user = format!("twice-{i}");
        let (status, body) = app.buy(sale, &user).await;
        assert_eq!(status, 201, "{body}");
        orders.push(seckill::domain::Order {
            order_id: body["order_id"].as_str().unwrap().parse().unwrap(),
            sale_id: seckill::domain::SaleId(sale),
            user_id: seckill::domain::UserId::parse(&user).unwrap(),
            seq: 1,
            created_at: 0,
            state: seckill::domain::OrderState::Confirmed,
            pay_by: None,
            payment: None,
        });
    }
    assert_eq!(wait_stored(&app, sale, 50, Duration::from_secs(30)).await["stored"], 50);

    // The same events again, as a producer retry or a reconciler would send them.
    let log = seckill::log::KafkaLog::connect(&services.brokers, &services.topic, Duration::from_secs(5)).unwrap();
    for order in &orders {
        log.publish(order).await.unwrap();
    }
    // And one new order, so we know when the consumer has gone past the copies.
    assert_eq!(app.buy(sale, "after-the-copies").await.0, 201);
    wait_stored(&app, sale, 51, Duration::from_secs(30)).await;
    // The copies may sit in other partitions than the new order: the count must also stay put.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let audit = app.audit(sale).await;
        assert_eq!(
            (audit["stored"].as_u64(), audit["duplicates"].as_u64()),
            (Some(51), Some(0)),
            "{audit}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_and_restarted_mid_sale_answers_503_fast_and_never_oversells() {
    let mut redis = crate::services::redis_server().await;
    let mut services = Services::start().await;
    services.redis_url = redis.redis_url();
    services.backend_timeout_ms = 500;
    services.kafka_timeout_ms = 1000;
    services.reconcile_after_ms = 2000;
    let app = Arc::new(TestServer::spawn_with(Options::distributed(&services)).await);
    const STOCK: u64 = 3000;
    let sale = app.live_sale(STOCK, 1).await;

    let stampede = Stampede::start(&app, sale, "r");
    assert!(
        stampede.reaches(300, Duration::from_secs(60)).await,
        "no load got through"
    );
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = stampede.confirmed();
    redis.restart().await;
    // Selling resumes once Redis is back (the connection manager reconnects).
    assert!(
        stampede.reaches(during + 300, Duration::from_secs(60)).await,
        "selling did not resume after Redis came back"
    );
    let (confirmed, slowest) = stampede.stop().await;
    assert!(slowest > Duration::ZERO, "Redis being down never showed");
    assert!(slowest < Duration::from_secs(3), "a 503 took {slowest:?}");

    // The books balance once the store has caught up (reservations left uncertain by the kill
    // are published by the reconciler): nothing oversold, nothing doubled, nothing lost.
    books_balance_after_a_fault(&app, sale, STOCK, confirmed.len()).await;
    for (user, _) in confirmed.iter().step_by(25) {
        assert_eq!(
            app.get(&format!("/api/sales/{sale}/orders/{user}")).await.0,
            200,
            "{user} lost"
        );
    }
}

/// Redis replicates asynchronously: with `--redis-wait-replicas 1` a purchase is answered only
/// once a replica has its reservation (`WAIT`), so a replica that stops taking writes turns
/// purchases into 503 `outcome_unknown` instead of sales a failover could forget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_wait_replicas_no_purchase_is_confirmed_before_a_replica_has_it() {
    let master = crate::services::redis_server().await;
    let replica = crate::services::RedisReplica::of(master.port).await;
    let mut services = Services::start().await;
    services.redis_url = master.redis_url();
    services.backend_timeout_ms = 1000;
    let app = TestServer::spawn_with(Options {
        extra_args: vec!["--redis-wait-replicas".into(), "1".into()],
        ..Options::distributed(&services)
    })
    .await;
    let sale = app.live_sale(100, 1).await;
    assert_eq!(app.buy(sale, "replicated").await.0, 201);
    // Answered, so the replica has it.
    // Seq 1 and one unit held (`seq × 2^20 + held`).
    let buyers = services.gate_key(sale, "buyers");
    assert_eq!(replica.hget(&buyers, "replicated").await, Some((1 << 20) + 1));

    replica.pause();
    let (status, body) = app.buy(sale, "unreplicated").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
    replica.resume();
    // Once the replica has caught up, purchases are answered again.
    let mut after = 0;
    for i in 0..50 {
        after = app.buy(sale, &format!("after-{i}")).await.0;
        if after == 201 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(after, 201, "no purchase answered after the replica resumed");
    let waits = app.metric("seckill_redis_calls_total{script=\"wait\"}").await;
    assert!(waits.is_some_and(|w| w >= 3.0), "WAIT calls: {waits:?}");
}

/// The broker keeps its log in a SQLite file: killed with SIGKILL mid-sale and restarted, it
/// still has every order it acknowledged, and the engine answers 503 while it is gone.
///
/// Ignored until the test broker can take it: after a broker dies with produce requests in
/// flight, librdkafka's idempotent producer bumps its epoch (InitProducerId with its known
/// producer id), and tansu 0.6's durable engines (sqlite and postgres) answer that with
/// `todo!()`; its sqlite engine then panics on the next produce and stops serving. Run it with
/// `cargo test --all-features --test api -- --ignored a_durable_broker` against a broker that
/// supports the epoch bump.
#[ignore = "tansu 0.6's durable engines cannot take an idempotent producer's epoch bump"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_durable_broker_killed_mid_sale_loses_and_doubles_no_acknowledged_order() {
    let mut services = Services::with_durable_broker().await;
    services.kafka_timeout_ms = 2000;
    services.reconcile_after_ms = 4000;
    let app = Arc::new(TestServer::spawn_with(Options::distributed(&services)).await);
    const STOCK: u64 = 2000;
    let sale = app.live_sale(STOCK, 1).await;

    let stampede = Stampede::start(&app, sale, "k");
    assert!(
        stampede.reaches(300, Duration::from_secs(60)).await,
        "no load got through"
    );
    services.broker.kill();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let during = stampede.confirmed();
    services.broker.restart().await;
    assert!(
        stampede.reaches(during + 300, Duration::from_secs(90)).await,
        "selling did not resume after the broker came back; server log:\n{}",
        app.log_tail(40)
    );
    let (confirmed, slowest) = stampede.stop().await;
    // Buyers are told 503 within the Kafka timeout (plus slack for a busy machine), not left hanging.
    assert!(slowest > Duration::ZERO, "the broker being down never showed");
    assert!(slowest < Duration::from_millis(2000 + 4000), "a 503 took {slowest:?}");

    // At rest every acknowledged order is in MySQL, once, under the id its buyer was given;
    // what the kill left uncertain was settled by the reconciler, and the books balance.
    let audit = books_balance_after_a_fault(&app, sale, STOCK, confirmed.len()).await;
    assert_eq!(audit["duplicates"], 0, "{audit}");
    for (user, order) in &confirmed {
        let (status, orders) = app.get(&format!("/api/sales/{sale}/orders/{user}")).await;
        assert_eq!(status, 200, "{user}'s acknowledged order {order} is lost");
        let ids: Vec<&str> = orders["orders"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["order_id"].as_str())
            .collect();
        assert_eq!(ids, [order.as_str()], "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_down_mid_stream_delays_storage_but_loses_and_doubles_nothing() {
    let mut mysql = crate::services::mariadb_server().await;
    let mut services = Services::start().await;
    services.database_url = mysql.mysql_url("seckill_outage");
    let app = Arc::new(TestServer::spawn_with(Options::distributed(&services)).await);
    let sale = app.live_sale(2000, 1).await;
    let buy_many = |from: usize, to: usize| {
        let app = Arc::clone(&app);
        async move {
            let answers = join_all((from..to).map(|i| {
                let app = Arc::clone(&app);
                async move { app.buy(sale, &format!("m-{i}")).await.0 }
            }))
            .await;
            answers.iter().filter(|s| **s == 201).count() as u64
        }
    };
    let first = buy_many(0, 500).await;
    assert_eq!(first, 500);
    wait_stored(&app, sale, 500, Duration::from_secs(30)).await;

    // MySQL is not on the buy path: with it dead, buyers are still confirmed (by the log).
    mysql.kill();
    let records_before = app.metric("seckill_kafka_records_total").await.unwrap_or(0.0);
    let during = buy_many(500, 1000).await;
    assert_eq!(during, 500, "purchases must not need MySQL");
    // The consumer retries meanwhile, committing nothing: /metrics shows the lag building up,
    // at least by the records (groups of orders) published during the outage.
    let published = app.metric("seckill_kafka_records_total").await.unwrap_or(0.0) - records_before;
    assert!(published >= 1.0, "{published} records for 500 orders");
    let lag = app
        .wait_metric("seckill_kafka_consumer_lag_messages", Duration::from_secs(10), |l| {
            l >= published
        })
        .await;
    assert!(
        lag.is_some_and(|l| l >= published),
        "consumer lag during the outage: {lag:?}\n{}",
        app.log_tail(60)
    );
    // Not on the buy path: the instance still sells, so it stays in the load balancer, degraded.
    let (status, ready) = app.get("/readyz").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("degraded")), "{ready}");
    assert!(
        ready["checks"]["mysql"]
            .as_str()
            .is_some_and(|m| m.starts_with("unavailable")),
        "{ready}"
    );
    assert_eq!(ready["checks"]["kafka"], "ok", "{ready}");
    mysql.restart().await;

    let audit = wait_stored(&app, sale, 1000, Duration::from_secs(60)).await;
    assert_eq!(
        (audit["stored"].as_u64(), audit["duplicates"].as_u64()),
        (Some(1000), Some(0)),
        "{audit}"
    );
    assert_eq!(audit["consistent"], true, "{audit}");
    let lag = app
        .wait_metric("seckill_kafka_consumer_lag_messages", Duration::from_secs(10), |l| {
            l == 0.0
        })
        .await;
    assert_eq!(lag, Some(0.0), "the lag drains once MySQL is back");
}

/// A sale left in Redis by an older version, which counted a buyer's units and last seq in two
/// hashes (`holders`, `seqs`), keeps both when an instance of this one loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_in_the_older_two_hash_layout_keeps_its_buyers_limits_and_seqs() {
    let services = Services::start().await;
    let app = TestServer::spawn_with(Options::distributed(&services)).await;
    let sale = app.live_sale(10, 2).await;
    for _ in 0..2 {
        let (status, body) = app.buy(sale, "holder").await;
        assert_eq!(status, 201, "{body}");
    }
    wait_stored(&app, sale, 2, Duration::from_secs(30)).await;

    // As the older version leaves it: `holder` at the limit after seq 2, `returner` holding
    // nothing after seq 3 (its units went back).
    let [buyers, holders, seqs] = ["buyers", "holders", "seqs"].map(|name| services.gate_key(sale, name));
    services.redis_del(std::slice::from_ref(&buyers)).await;
    let _: i64 = services
        .redis(redis::cmd("HSET").arg(&holders).arg("holder").arg(2))
        .await;
    let _: i64 = services
        .redis(
            redis::cmd("HSET")
                .arg(&seqs)
                .arg("holder")
                .arg(2)
                .arg("returner")
                .arg(3),
        )
        .await;

    let app = app.restart(Options::distributed(&services)).await;
    let (status, body) = app.buy(sale, "holder").await;
    assert_error(status, &body, 409, "already_purchased");
    let (status, body) = app.buy(sale, "returner").await;
    assert_eq!((status, body["seq"].as_u64()), (201, Some(4)), "{body}");
    let merged: std::collections::HashMap<String, i64> = services.redis(redis::cmd("HGETALL").arg(&buyers)).await;
    let expected = [("holder", (2 << 20) + 2), ("returner", (4 << 20) + 1)];
    assert_eq!(
        merged,
        expected.map(|(u, f)| (u.to_owned(), f)).into(),
        "seq × 2^20 + held"
    );
    let older: i64 = services.redis(redis::cmd("EXISTS").arg(&holders).arg(&seqs)).await;
    assert_eq!(older, 0, "the older hashes are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_buyer_whose_count_redis_lost_gets_a_new_seq_and_every_order_is_kept() {
    let services = Services::start().await;
    let app = TestServer::spawn_with(Options::distributed(&services)).await;
    let sale = app.live_sale(10, 1).await;
    let (status, first) = app.buy(sale, "forgotten").await;
    assert_eq!((status, first["seq"].as_u64()), (201, Some(1)), "{first}");
    wait_stored(&app, sale, 1, Duration::from_secs(30)).await;

    // Redis loses the buyer's unit count, not their last seq: the next unit gets seq 2, the
    // order is stored, and the auditor reports the buyer over the limit.
    let _: i64 = services
        .redis(
            redis::cmd("HSET")
                .arg(services.gate_key(sale, "buyers"))
                .arg("forgotten")
                .arg(1 << 20),
        )
        .await;
    let (status, second) = app.buy(sale, "forgotten").await;
    assert_eq!((status, second["seq"].as_u64()), (201, Some(2)), "{second}");
    let audit = wait_stored(&app, sale, 2, Duration::from_secs(30)).await;
    assert_eq!(
        (audit["over_limit"].as_u64(), audit["consistent"].as_bool()),
        (Some(1), Some(false)),
        "{audit}"
    );

    // Redis loses everything about the buyer: seq 1 is handed out again. The store keeps the
    // order apart as a conflict, and the auditor counts it; nothing answered 201 is dropped.
    services.redis_del(&[services.gate_key(sale, "buyers")]).await;
    let (status, third) = app.buy(sale, "forgotten").await;
    assert_eq!(status, 201, "{third}");
    let started = Instant::now();
    let audit = loop {
        let audit = app.audit(sale).await;
        if audit["conflicts"] == 1 || started.elapsed() > Duration::from_secs(30) {
            break audit;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (audit["conflicts"].as_u64(), audit["consistent"].as_bool()),
        (Some(1), Some(false)),
        "{audit}"
    );
    let stored = services.stored_order_ids(sale, "orders").await;
    let conflicts = services.stored_order_ids(sale, "order_conflicts").await;
    for answer in [&first, &second] {
        assert!(
            stored.contains(answer["order_id"].as_str().unwrap()),
            "{answer} not stored"
        );
    }
    assert!(
        conflicts.contains(third["order_id"].as_str().unwrap()),
        "{third} not kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn units_released_during_broker_outages_never_make_a_buyer_reuse_a_seq() {
    let (mut services, proxy) = Services::behind_proxy().await;
    services.kafka_timeout_ms = 1500;
    services.reconcile_after_ms = 3000;
    let app = Arc::new(TestServer::spawn_with(Options::distributed(&services)).await);
    let sale = app.live_sale(100_000, 3).await;

    // The network to the broker fails three times for 2 s: orders queued meanwhile are not
    // persisted, so their units go back while the same buyers' other orders are stored.
    let outages = tokio::spawn(async move {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(800)).await;
            proxy.cut();
            tokio::time::sleep(Duration::from_millis(2000)).await;
            proxy.restore();
        }
        proxy
    });
    // 400 buyers, each sending 3 purchases 100–1,200 ms apart on a schedule (not waiting for
    // the previous answer, as a client retrying does), starting over the first 4 s: during an
    // outage one buyer's purchases overlap, and a lower seq is released while a higher one is
    // stored.
    let answers = join_all((0..400u64).map(|i| {
        let app = Arc::clone(&app);
        async move {
            let user = format!("out-{i}");
            let mut at = (i % 40) * 100;
            let mut purchases = Vec::new();
            for k in 0..3u64 {
                at += 100 + (i * 7_919 + k * 104_729) % 1_100;
                let (app, user) = (&app, &user);
                purchases.push(async move {
                    tokio::time::sleep(Duration::from_millis(at)).await;
                    let (status, body) = app.buy(sale, user).await;
                    (user.clone(), status, body)
                });
            }
            join_all(purchases).await
        }
    }))
    .await;
    let _proxy = outages.await.unwrap();

    let confirmed: Vec<&(String, u16, serde_json::Value)> = answers
        .iter()
        .flatten()
        .filter(|(_, status, _)| *status == 201)
        .collect();
    let refused = answers.iter().flatten().filter(|(_, status, _)| *status == 503).count();
    assert!(refused > 0, "no purchase met an outage: the test proves nothing");
    let mut seqs = std::collections::HashSet::new();
    for (user, _, body) in &confirmed {
        let seq = body["seq"].as_u64().unwrap();
        assert!(seqs.insert((user.clone(), seq)), "{user} was answered seq {seq} twice");
    }
    let audit = wait_settled(&app, sale).await;
    assert_eq!(audit["consistent"], true, "{audit}");
    assert_eq!(audit["conflicts"], 0, "{audit}");
    let stored = services.stored_order_ids(sale, "orders").await;
    for (user, _, body) in &confirmed {
        assert!(
            stored.contains(body["order_id"].as_str().unwrap()),
            "{user}'s confirmed order {body} is not stored"
        );
    }
}

/// Redis loses a live sale (a restart without persistence, a `FLUSHALL`): the sale answers 503,
/// never 404 or "sold out", and `/readyz` is 503 naming it, until the gate is rebuilt from MySQL
/// once the log is drained into it; then selling resumes and the stock is sold exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_redis_lost_answers_503_until_rebuilt_from_the_store_and_never_oversells() {
    let services = Services::start().await;
    let app = TestServer::spawn_with(Options::distributed(&services)).await;
    let sale = app.live_sale(300, 1).await;
    for i in 0..100 {
        let (status, body) = app.buy(sale, &format!("before-loss-{i}")).await;
        assert_eq!(status, 201, "{body}");
    }
    let keys: Vec<String> = ["meta", "buyers", "pending", "released", "holds", "deadlines", "settled"]
        .iter()
        .map(|name| services.gate_key(sale, name))
        .collect();
    services.redis_del(&keys).await;

    let (status, body) = app.buy(sale, "during-loss").await;
    assert_error(status, &body, 503, "unavailable");
    let (status, view) = app.get(&format!("/api/sales/{sale}")).await;
    assert_eq!(status, 503, "the sale is neither missing nor sold out: {view}");
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert!(ready.to_string().contains("gate-state"), "{ready}");

    // Rebuilt once the log is drained (after the log's longest delivery wait).
    let started = Instant::now();
    loop {
        let (status, _) = app.get("/readyz").await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never rebuilt: {}",
            app.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A buyer from before the loss still holds their unit; the rest of the stock sells once.
    let (status, body) = app.buy(sale, "before-loss-7").await;
    assert_error(status, &body, 409, "already_purchased");
    let answers = join_all((0..400).map(|i| {
        let app = &app;
        async move { app.buy(sale, &format!("after-loss-{i}")).await.0 }
    }))
    .await;
    let sold_after = answers.iter().filter(|s| **s == 201).count();
    assert_eq!(
        sold_after,
        200,
        "answers: {:?}",
        answers.iter().filter(|s| **s != 201 && **s != 410).collect::<Vec<_>>()
    );
    let audit = wait_stored(&app, sale, 300, Duration::from_secs(30)).await;
    assert_eq!(audit["stored"], 300, "{audit}");
    assert_eq!(audit["remaining"], 0, "{audit}");
    assert_eq!(audit["consistent"], true, "{audit}");
}

/// A table dropped behind the engine's back (the migrations stay recorded as applied, so
/// nothing recreates it) is named: by `/readyz` while running, and by the start-up error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_mysql_table_is_named_by_readyz_and_at_start() {
    use sqlx::Connection;
    let services = Services::start().await;
    let mut app = TestServer::spawn_with(Options::distributed(&services)).await;
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["mysql"], "ok", "{ready}");

    let mut conn = sqlx::mysql::MySqlConnection::connect(&services.database_url)
        .await
        .expect("mysql");
    sqlx::query("DROP TABLE orders").execute(&mut conn).await.expect("drop");
    // The answer names the role; the log names the table.
    let (_, ready) = app.get("/readyz").await;
    assert_eq!(ready["checks"]["mysql"], "unavailable", "{ready}");
    let log = app.log_tail(50);
    assert!(
        log.contains("table orders is missing"),
        "the log does not name the dropped table: {log}"
    );

    app.terminate().await;
    let started = tokio::process::Command::new(env!("CARGO_BIN_EXE_seckill"))
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--backend")
        .arg("distributed")
        .args(services.args())
        .env("SECKILL_LOG", "warn")
        .output()
        .await
        .expect("run seckill");
    assert!(!started.status.success());
    let stderr = String::from_utf8_lossy(&started.stderr);
    assert!(stderr.contains("table orders is missing"), "{stderr}");
}

/// Purchases of one sale on one instance go to Redis in groups (one script call for all that
/// queued while the previous call was in flight), and a group decides each buyer as if alone:
/// 400 buyers each asking twice at once on 300 units with a limit of 1, and 300 buyers each
/// asking three times at once on 500 units with a limit of 2, both sales at once on one
/// instance. Exactly the stock is sold, nobody gets more than the limit or a `seq` twice, every
/// answered order is stored once and nothing else is, and `/metrics` shows more than one
/// purchase per script call (one per call, as without grouping, fails the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grouped_reservations_sell_exactly_the_stock_within_the_limit_and_lose_nothing() {
    let services = Services::start().await;
    let app = Arc::new(TestServer::spawn_with(Options::distributed(&services)).await);
    let (one, two) = (app.live_sale(300, 1).await, app.live_sale(500, 2).await);
    let calls = r#"seckill_redis_calls_total{script="reserve"}"#;
    let sent = r#"seckill_redis_call_items_total{script="reserve"}"#;
    let (records, events) = ("seckill_kafka_records_total", "seckill_kafka_record_events_total");
    let (calls_before, sent_before) = (
        app.metric(calls).await.expect("reserve calls exported"),
        app.metric(sent).await.expect("reserve items exported"),
    );
    let (records_before, events_before) = (
        app.metric(records).await.expect("records exported"),
        app.metric(events).await.expect("record events exported"),
    );

    // The two sales' buyers interleaved, each buyer's requests fired together.
    let asks: Vec<(i64, u32, String)> = (0..400)
        .flat_map(|i| [(one, 1, format!("one-{i}")), (one, 1, format!("one-{i}"))])
        .chain((0..300).flat_map(|i| std::iter::repeat_n((two, 2, format!("two-{i}")), 3)))
        .collect();
    let answers = join_all(asks.into_iter().map(|(sale, limit, user)| {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let (status, body) = app.buy(sale, &user).await;
            (sale, limit, user, status, body)
        })
    }))
    .await;

    let mut won: std::collections::HashMap<(i64, String), Vec<u64>> = std::collections::HashMap::new();
    let mut order_ids = std::collections::HashMap::<i64, std::collections::HashSet<String>>::new();
    for answer in answers {
        let (sale, limit, user, status, body) = answer.expect("buyer task");
        match status {
            201 => {
                let seq = body["seq"].as_u64().expect("seq");
                assert!((1..=u64::from(limit)).contains(&seq), "{user}: {body}");
                let seqs = won.entry((sale, user.clone())).or_default();
                assert!(!seqs.contains(&seq), "{user} got seq {seq} twice");
                seqs.push(seq);
                assert!(seqs.len() <= limit as usize, "{user} over the limit of {limit}");
                let id = body["order_id"].as_str().expect("order id").to_owned();
                assert!(
                    order_ids.entry(sale).or_default().insert(id),
                    "an order id twice: {body}"
                );
            }
            409 => assert_error(status, &body, 409, "already_purchased"),
            410 => assert_error(status, &body, 410, "sold_out"),
            _ => panic!("{user} on sale {sale}: {status} {body}"),
        }
    }
    for (sale, stock) in [(one, 300), (two, 500)] {
        let sold = order_ids.get(&sale).map_or(0, |ids| ids.len());
        assert_eq!(sold, stock, "sale {sale} sold {sold} of {stock}");
        assert_eq!(app.get(&format!("/api/sales/{sale}")).await.1["remaining"], 0);
        let audit = wait_settled(&app, sale).await;
        assert_eq!(audit["stored"].as_u64(), Some(stock as u64), "{audit}");
        assert_eq!(audit["consistent"], true, "{audit}");
        assert_eq!(
            (
                audit["duplicates"].as_u64(),
                audit["conflicts"].as_u64(),
                audit["over_limit"].as_u64()
            ),
            (Some(0), Some(0), Some(0)),
            "{audit}"
        );
        // Nothing lost and nothing extra: MySQL holds exactly the orders answered 201.
        assert_eq!(services.stored_order_ids(sale, "orders").await, order_ids[&sale]);
    }

    let calls = app.metric(calls).await.expect("reserve calls") - calls_before;
    let sent = app.metric(sent).await.expect("reserve items") - sent_before;
    assert!(calls >= 1.0 && sent >= 800.0, "{sent} purchases in {calls} calls");
    assert!(
        sent / calls > 1.0,
        "{sent} purchases went to Redis in {calls} script calls: not grouped"
    );
    // The buyers one script call answered publish together: their orders share log records.
    let records = app.metric(records).await.expect("records") - records_before;
    let events = app.metric(events).await.expect("record events") - events_before;
    assert_eq!(events, 800.0, "one event per order");
    assert!(
        events / records >= 3.0,
        "{events} orders went to the log in {records} records: not grouped"
    );
}

/// Buyer ids are case-sensitive everywhere, as the gate counts them: MySQL stores the orders of
/// `Alice`, `alice` and `ALICE` as three buyers' orders (not two conflicts), the audit
/// balances, and each reads only their own order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buyers_whose_ids_differ_only_in_case_are_three_buyers_in_mysql() {
    let services = Services::start().await;
    let app = TestServer::spawn_with(Options::distributed(&services)).await;
    let sale = app.live_sale(10, 1).await;
    let buyers = ["Alice", "alice", "ALICE"];
    let mut order_ids = Vec::new();
    for user in buyers {
        let (status, body) = app.buy(sale, user).await;
        assert_eq!(status, 201, "{user}: {body}");
        order_ids.push(body["order_id"].as_str().expect("order_id").to_owned());
    }

    let audit = wait_stored(&app, sale, 3, Duration::from_secs(20)).await;
    assert_eq!(audit["stored"], 3, "{audit}");
    assert_eq!(
        (audit["conflicts"].as_u64(), audit["over_limit"].as_u64()),
        (Some(0), Some(0)),
        "{audit}"
    );
    assert_eq!(audit["consistent"], true, "{audit}");
    for (user, order_id) in buyers.iter().zip(&order_ids) {
        let (status, body) = app.get(&format!("/api/sales/{sale}/orders/{user}")).await;
        assert_eq!(status, 200, "{user}: {body}");
        let theirs: Vec<&str> = body["orders"]
            .as_array()
            .expect("orders")
            .iter()
            .filter_map(|o| o["order_id"].as_str())
            .collect();
        assert_eq!(theirs, [order_id.as_str()], "{user} reads {body}");
    }
}

/// The distributed gate alone on the test's Redis, with sale 1 loaded: `stock` units, one per
/// buyer, no window.
async fn gate_with_a_sale(services: &Services, stock: u64) -> (seckill::gate::RedisGate, seckill::domain::SaleId) {
    use seckill::domain::{now_millis, GateState, Sale, SaleId, SaleSpec};
    use seckill::gate::{RedisGate, RedisTarget, StockGate};

    let target = RedisTarget::parse(&services.redis_url, false).unwrap();
    let gate = RedisGate::connect(&target, &services.redis_prefix, Duration::from_secs(5))
        .await
        .unwrap();
    let spec = SaleSpec {
        name: "gate alone".into(),
        stock,
        starts_at: None,
        ends_at: None,
        per_user_limit: 1,
        demo: false,
        payment_window_secs: 0,
        waiting_room: None,
        stock_shards: 1,
    };
    let sale = Sale {
        id: SaleId(1),
        spec,
        created_at: now_millis(),
    };
    gate.load_sale(Arc::new(sale), GateState::default()).await.unwrap();
    (gate, SaleId(1))
}

/// The gate keeps one script call's reservations pending under one Redis member until each is
/// confirmed or released. A reservation released while others of its call stay pending (their
/// instance died) is never re-published by the reconciler; the others are, each once, and
/// forgetting them leaves no release behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_released_while_its_group_stays_pending_is_not_re_published() {
    use seckill::domain::{now_millis, UserId};
    use seckill::gate::StockGate;

    let services = Services::start().await;
    let (gate, sale) = gate_with_a_sale(&services, 100).await;

    // Asked together, most of them go to Redis in one call.
    let buyers: Vec<UserId> = (0..20)
        .map(|i| UserId::parse(&format!("grouped-{i}")).unwrap())
        .collect();
    let reservations: Vec<_> = join_all(buyers.iter().map(|user| gate.reserve(sale, user, now_millis())))
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let largest = reservations
        .iter()
        .max_by_key(|r| reservations.iter().filter(|o| o.pending == r.pending).count())
        .unwrap();
    let shared = reservations.iter().filter(|r| r.pending == largest.pending).count();
    assert!(shared > 1, "no two reservations shared a script call");

    // One of the largest group is given back; nobody confirms the others.
    gate.release(largest).await.unwrap();
    assert_eq!(gate.open_reservations(sale).await.unwrap(), 19);

    let stale = gate.stale(sale, now_millis() + 1).await.unwrap();
    let mut republished: Vec<uuid::Uuid> = stale.iter().flat_map(|s| &s.orders).map(|o| o.order_id).collect();
    republished.sort();
    let mut expected: Vec<uuid::Uuid> = reservations
        .iter()
        .map(|r| r.order_id)
        .filter(|id| *id != largest.order_id)
        .collect();
    expected.sort();
    assert_eq!(
        republished, expected,
        "each unreleased reservation once, the released one never"
    );

    for s in &stale {
        gate.forget(s).await.unwrap();
    }
    assert_eq!(gate.open_reservations(sale).await.unwrap(), 0);
    let released: i64 = services
        .redis(redis::cmd("EXISTS").arg(services.gate_key(1, "released")))
        .await;
    assert_eq!(released, 0, "the releases went with their member");
    assert_eq!(
        gate.remaining(sale).await.unwrap(),
        Some(81),
        "the released unit is back, once"
    );
}

/// Upgrading: a reservation an older version left pending (one `order_id:seq:user` member per
/// reservation) is counted as open, re-published by the reconciler like any other, and
/// forgotten after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_an_older_version_left_pending_is_re_published() {
    use seckill::domain::now_millis;
    use seckill::gate::StockGate;

    let services = Services::start().await;
    let (gate, sale) = gate_with_a_sale(&services, 10).await;
    let order_id = uuid::Uuid::now_v7();
    let reserved_at = now_millis() - 60_000;
    let _: i64 = services
        .redis(
            redis::cmd("ZADD")
                .arg(services.gate_key(1, "pending"))
                .arg(reserved_at)
                .arg(format!("{}:1:older-buyer", order_id.hyphenated())),
        )
        .await;
    assert_eq!(gate.open_reservations(sale).await.unwrap(), 1);

    let stale = gate.stale(sale, now_millis()).await.unwrap();
    let orders: Vec<_> = stale.iter().flat_map(|s| &s.orders).collect();
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(
        (
            orders[0].order_id,
            orders[0].seq,
            orders[0].user_id.as_str(),
            orders[0].created_at
        ),
        (order_id, 1, "older-buyer", reserved_at)
    );
    for s in &stale {
        gate.forget(s).await.unwrap();
    }
    assert_eq!(gate.open_reservations(sale).await.unwrap(), 0);
}
