//! `--backend distributed` with the gate on a three-master Redis Cluster: sales whose keys live
//! on different shards sell exactly their stock across instances, and unpaid holds expire back
//! on sale, as on one Redis node.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};

use crate::distributed::{books_balance_after_a_fault, sold_out_everywhere_and_stored_once, Stampede};
use crate::helpers::{Options, Services, TestServer};
use crate::services::RedisCluster;

/// The test's services with the gate on `cluster`.
async fn on_cluster(cluster: &RedisCluster) -> Services {
    let mut services = Services::start().await;
    services.redis_url = cluster.url();
    services.redis_cluster = true;
    services
}

/// Two instances on `services`, the second without a consumer of its own.
async fn two_instances(services: &Services) -> (Arc<TestServer>, Arc<TestServer>) {
    let a = Arc::new(TestServer::spawn_with(Options::distributed(services)).await);
    let b = Arc::new(
        TestServer::spawn_with(Options {
            no_consumer: true,
            ..Options::distributed(services)
        })
        .await,
    );
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_a_redis_cluster_sell_exactly_the_stock_of_sales_on_different_shards() {
    let cluster = RedisCluster::start().await;
    let services = on_cluster(&cluster).await;
    let (a, b) = two_instances(&services).await;
    assert_eq!(a.get("/readyz").await.0, 200);

    // Two sales whose keys are served by different masters (a new sale until one is).
    let first = a.live_sale(300, 1).await;
    let first_shard = cluster.owner_of(&services.gate_key(first, "meta")).await;
    let mut second = None;
    for _ in 0..10 {
        let sale = a.live_sale(300, 1).await;
        if cluster.owner_of(&services.gate_key(sale, "meta")).await != first_shard {
            second = Some(sale);
            break;
        }
    }
    let second = second.expect("a sale on another shard");

    // Each of 600 buyers tries each sale twice, once through each instance.
    let attempts = join_all(
        (0..600)
            .flat_map(|i| {
                [first, second]
                    .into_iter()
                    .flat_map(move |sale| [0, 1].into_iter().map(move |n| (sale, i, n)))
            })
            .map(|(sale, i, n)| {
                let app = Arc::clone(if (i + n) % 2 == 0 { &a } else { &b });
                tokio::spawn(async move { (sale, i, app.buy(sale, &format!("buyer-{i}")).await.0) })
            }),
    )
    .await;
    for sale in [first, second] {
        let answers: Vec<(usize, u16)> = attempts
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|(s, _, _)| *s == sale)
            .map(|(_, i, status)| (*i, *status))
            .collect();
        assert_eq!(answers.len(), 1200, "every attempt answered");
        let winners: Vec<usize> = answers.iter().filter(|(_, s)| *s == 201).map(|(i, _)| *i).collect();
        assert_eq!(winners.len(), 300, "sale {sale} sold its stock exactly");
        assert_eq!(winners.iter().collect::<HashSet<_>>().len(), 300, "one unit per buyer");
        let failed: Vec<u16> = answers.iter().map(|(_, s)| *s).filter(|s| *s >= 500).collect();
        assert!(failed.is_empty(), "sale {sale}: {failed:?}");
        sold_out_everywhere_and_stored_once(&[&b, &a], sale, 300).await;
        // The gate lives on the cluster: the master of the sale's slot holds its keys.
        let meta = services.gate_key(sale, "meta");
        let owner = cluster.owner_of(&meta).await;
        let exists: i64 = cluster.query(owner, redis::cmd("EXISTS").arg(&meta)).await;
        assert_eq!(exists, 1, "{meta} on its master {owner}");
    }
    // Confirmations cleared every pending reservation (long before the reconciler's 30 s):
    // their pipelines, one per sale, each reached the sale's own shard.
    for sale in [first, second] {
        let started = Instant::now();
        let audit = loop {
            let audit = a.audit(sale).await;
            if audit["open_reservations"] == 0 || started.elapsed() > Duration::from_secs(10) {
                break audit;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(audit["open_reservations"], 0, "{audit}");
    }
}

/// One hot sale split over three hash tags lands one shard per master, and two instances sell
/// exactly its stock, one unit per buyer, whatever shard each buyer's home is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_of_three_stock_shards_spreads_over_the_masters_and_sells_exactly_its_stock() {
    let cluster = RedisCluster::start().await;
    let services = on_cluster(&cluster).await;
    let (a, b) = two_instances(&services).await;
    let (status, sale) = a
        .create_sale(json!({"name": "hot item", "stock": 300, "per_user_limit": 1, "stock_shards": 3}))
        .await;
    assert_eq!(status, 201, "{sale}");
    let sale = sale["id"].as_i64().expect("id");
    let mut owners = HashSet::new();
    for tag in seckill::gate::shards::tags(seckill::domain::SaleId(sale), 3) {
        let meta = format!("{}:{{{tag}}}:meta", services.redis_prefix);
        let owner = cluster.owner_of(&meta).await;
        let exists: i64 = cluster.query(owner, redis::cmd("EXISTS").arg(&meta)).await;
        assert_eq!(exists, 1, "{meta} on its master {owner}");
        owners.insert(owner);
    }
    assert_eq!(owners.len(), 3, "one shard per master");

    // 500 buyers try twice each, through both instances.
    let attempts = join_all((0..500).flat_map(|i| [0, 1].map(|n| (i, n))).map(|(i, n)| {
        let app = Arc::clone(if (i + n) % 2 == 0 { &a } else { &b });
        tokio::spawn(async move { (i, app.buy(sale, &format!("buyer-{i}")).await.0) })
    }))
    .await;
    let answers: Vec<(usize, u16)> = attempts.into_iter().map(|r| r.expect("task")).collect();
    let winners: Vec<usize> = answers.iter().filter(|(_, s)| *s == 201).map(|(i, _)| *i).collect();
    assert_eq!(winners.len(), 300, "the stock sold exactly");
    assert_eq!(winners.iter().collect::<HashSet<_>>().len(), 300, "one unit per buyer");
    let failed: Vec<u16> = answers.iter().map(|(_, s)| *s).filter(|s| *s >= 500).collect();
    assert!(failed.is_empty(), "{failed:?}");
    sold_out_everywhere_and_stored_once(&[&b, &a], sale, 300).await;
}

async fn order(app: &TestServer, order_id: &str, user: &str) -> Value {
    let (status, _, body) =
        crate::requests::get_with(app, &format!("/api/orders/{order_id}"), &[("x-user-id", user)]).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unpaid_hold_on_a_redis_cluster_expires_back_on_sale() {
    let cluster = RedisCluster::start().await;
    let services = on_cluster(&cluster).await;
    let mut options = Options::distributed(&services);
    options.env.push((
        "SECKILL_PAYMENT_WEBHOOK_SECRET".into(),
        "webhook-secret-for-tests".into(),
    ));
    let app = TestServer::spawn_with(options).await;
    let (status, sale) = app
        .create_sale(json!({"name": "held item", "stock": 1, "per_user_limit": 1, "payment_window_secs": 1}))
        .await;
    assert_eq!(status, 201, "{sale}");
    let sale = sale["id"].as_i64().expect("id");

    let (status, won) = app.buy(sale, "holder").await;
    assert_eq!(status, 201, "{won}");
    assert_eq!(won["state"], "awaiting_payment", "{won}");
    let order_id = won["order_id"].as_str().expect("order_id").to_owned();

    let started = Instant::now();
    let held = loop {
        let held = order(&app, &order_id, "holder").await;
        if held["state"] == "expired" || started.elapsed() > Duration::from_secs(15) {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(held["state"], "expired", "{held}");
    // Its unit is on sale again.
    let started = Instant::now();
    let (status, body) = loop {
        let (status, body) = app.buy(sale, "late").await;
        if status == 201 || started.elapsed() > Duration::from_secs(10) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_redis_cluster_master_makes_readyz_and_its_purchases_503_promptly() {
    let mut cluster = RedisCluster::start().await;
    let services = on_cluster(&cluster).await;
    let app = TestServer::spawn_with(Options::distributed(&services)).await;
    let sale = app.live_sale(100, 1).await;
    assert_eq!(app.buy(sale, "before").await.0, 201);
    let (status, ready) = app.get("/readyz").await;
    assert_eq!((status, &ready["checks"]["redis"]), (200, &json!("ok")), "{ready}");

    cluster.kill(cluster.owner_of(&services.gate_key(sale, "meta")).await);
    let started = Instant::now();
    let (status, body) = app.buy(sale, "during").await;
    let waited = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(
        matches!(body["error"]["code"].as_str(), Some("unavailable" | "outcome_unknown")),
        "{body}"
    );
    assert!(waited < Duration::from_secs(8), "503 took {waited:?}");
    let started = Instant::now();
    let (status, ready) = loop {
        let (status, ready) = app.get("/readyz").await;
        if status == 503 || started.elapsed() > Duration::from_secs(15) {
            break (status, ready);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["error"]["message"].as_str().is_some_and(|m| m.contains("redis")),
        "{ready}"
    );
}

/// A master killed mid-sale: a replica takes over and selling resumes. Replication is
/// asynchronous, so the engine runs with `--redis-wait-replicas 1`: every answered purchase was
/// on a replica before it was answered (the most up-to-date replica is the one promoted), and
/// the books balance after the failover. Two replicas per master, so the promoted one still has
/// a replica to wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_killed_mid_sale_fails_over_to_its_replica_and_loses_no_answered_purchase() {
    let mut cluster = RedisCluster::with_replicas(2).await;
    let mut services = on_cluster(&cluster).await;
    services.backend_timeout_ms = 1000;
    services.kafka_timeout_ms = 1000;
    services.reconcile_after_ms = 2000;
    let app = Arc::new(
        TestServer::spawn_with(Options {
            extra_args: vec!["--redis-wait-replicas".into(), "1".into()],
            ..Options::distributed(&services)
        })
        .await,
    );
    const STOCK: u64 = 3000;
    let sale = app.live_sale(STOCK, 1).await;
    let stampede = Stampede::start(&app, sale, "f");
    assert!(
        stampede.reaches(300, Duration::from_secs(60)).await,
        "no load got through"
    );
    cluster.kill(cluster.owner_of(&services.gate_key(sale, "meta")).await);
    let during = stampede.confirmed();
    // The replica is promoted once the others declare its master failed (node timeout 2 s).
    assert!(
        stampede.reaches(during + 300, Duration::from_secs(60)).await,
        "selling did not resume on the promoted replica"
    );
    let (confirmed, slowest) = stampede.stop().await;
    assert!(slowest > Duration::ZERO, "the failover never showed");

    books_balance_after_a_fault(&app, sale, STOCK, confirmed.len()).await;
    // Every answered purchase is in MySQL and in the promoted replica's count.
    let stored = services.stored_order_ids(sale, "orders").await;
    for (user, order) in &confirmed {
        assert!(stored.contains(order), "{user}'s order {order} was lost");
    }
}
