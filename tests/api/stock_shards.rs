//! `stock_shards: K`: one sale's stock split over K Redis hash tags. Buyers all homed on one
//! shard still buy the whole stock (units move to their dry shard), the per-user limit holds,
//! a move cut off halfway is finished by the reconciler, and a sharded sale Redis lost is
//! rebuilt over its shards and never oversold.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use seckill::domain::SaleId;
use seckill::gate::shards::{home_shard, tags};
use serde_json::{json, Value};

use crate::distributed::wait_stored;
use crate::helpers::{Options, Services, TestServer};

/// Buyer names whose home is `shard` of `count`, `n` of them.
fn buyers_homed_on(shard: usize, count: u16, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("homed-{shard}-{i}"))
        .filter(|user| home_shard(user, count) == shard)
        .take(n)
        .collect()
}

async fn sharded_sale(app: &TestServer, stock: u64, per_user_limit: u32, shards: u16) -> i64 {
    let (status, sale) = app
        .create_sale(json!({
            "name": "hot item", "stock": stock, "per_user_limit": per_user_limit, "stock_shards": shards
        }))
        .await;
    assert_eq!(status, 201, "{sale}");
    assert_eq!(sale["stock_shards"], shards, "{sale}");
    sale["id"].as_i64().expect("id")
}

/// The Redis key `name` of shard `k` of a sale of `count` shards.
fn shard_key(services: &Services, sale: i64, count: u16, k: usize, name: &str) -> String {
    format!("{}:{{{}}}:{name}", services.redis_prefix, tags(SaleId(sale), count)[k])
}

async fn redis(services: &Services) -> redis::aio::MultiplexedConnection {
    redis::Client::open(services.redis_url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buyers_all_homed_on_one_shard_buy_the_whole_stock_within_their_limit() {
    let services = Services::start().await;
    let app = TestServer::spawn_with(Options::distributed(&services)).await;
    let sale = sharded_sale(&app, 30, 2, 3).await;
    // Each shard holds 10; every buyer lives on shard 0, so 20 units must move to it.
    let mut conn = redis(&services).await;
    for k in 0..3 {
        let left: i64 = redis::cmd("HGET")
            .arg(shard_key(&services, sale, 3, k, "meta"))
            .arg("remaining")
            .query_async(&mut conn)
            .await
            .expect("HGET");
        assert_eq!(left, 10, "shard {k}");
    }

    // 25 buyers, 3 attempts each, all at once: 75 tries at 30 units, at most 2 per buyer.
    let buyers = buyers_homed_on(0, 3, 25);
    let answers = join_all(
        buyers
            .iter()
            .flat_map(|user| std::iter::repeat_n(user, 3))
            .map(|user| async { (user.clone(), app.buy(sale, user).await) }),
    )
    .await;
    let mut won: HashMap<&str, u32> = HashMap::new();
    for (user, (status, body)) in &answers {
        match status {
            201 => *won.entry(user.as_str()).or_default() += 1,
            409 | 410 => {}
            _ => panic!("{user}: {status} {body}"),
        }
    }
    assert_eq!(won.values().sum::<u32>(), 30, "the whole stock sold: {won:?}");
    assert!(won.values().all(|n| *n <= 2), "a buyer over the limit: {won:?}");
    let (_, view) = app.get(&format!("/api/sales/{sale}")).await;
    assert_eq!(
        (view["remaining"].as_u64(), view["status"].as_str()),
        (Some(0), Some("sold_out")),
        "{view}"
    );
    // Exactly the 20 units of shards 1 and 2 moved, each counted when taken and when given.
    let moved = app.metric("seckill_redis_call_items_total{script=\"transfer\"}").await;
    assert_eq!(moved, Some(40.0));

    let audit = wait_stored(&app, sale, 30, Duration::from_secs(60)).await;
    assert_eq!(audit["consistent"], true, "{audit}");
    // Every unit was sold from shard 0, where its buyer's count lives.
    let buyers: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(shard_key(&services, sale, 3, 0, "buyers"))
        .query_async(&mut conn)
        .await
        .expect("HGETALL");
    // Each field is `seq × 2^20 + held`.
    let held: i64 = buyers.values().map(|field| field % (1 << 20)).sum();
    assert_eq!(held, 30, "{buyers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_cut_off_between_two_shards_is_finished_by_the_reconciler() {
    let mut services = Services::start().await;
    services.kafka_timeout_ms = 1000;
    services.reconcile_after_ms = 2000;
    let app = TestServer::spawn_with(Options::distributed(&services)).await;
    let sale = sharded_sale(&app, 9, 1, 3).await;

    // An instance took shard 1's three units for shard 0 and died before giving them: what
    // the first half of a move leaves behind.
    let mut conn = redis(&services).await;
    let long_ago = seckill::domain::now_millis() - 60_000;
    let _: () = redis::pipe()
        .atomic()
        .cmd("HINCRBY")
        .arg(shard_key(&services, sale, 3, 1, "meta"))
        .arg("remaining")
        .arg(-3)
        .ignore()
        .cmd("HSET")
        .arg(shard_key(&services, sale, 3, 1, "outbox"))
        .arg("cut-off-move")
        .arg(format!("0|3|{long_ago}"))
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("half a move");

    // The reconciler gives them to shard 0: all nine units are on sale again.
    let started = Instant::now();
    loop {
        let (_, view) = app.get(&format!("/api/sales/{sale}")).await;
        if view["remaining"] == 9 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the move was never finished: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let outbox: i64 = redis::cmd("HLEN")
        .arg(shard_key(&services, sale, 3, 1, "outbox"))
        .query_async(&mut conn)
        .await
        .expect("HLEN");
    assert_eq!(outbox, 0, "the finished move is cleared");

    let buyers = buyers_homed_on(2, 3, 12);
    let answers = join_all(buyers.iter().map(|user| app.buy(sale, user))).await;
    let sold = answers.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(sold, 9, "{answers:?}");
    let audit = wait_stored(&app, sale, 9, Duration::from_secs(60)).await;
    assert_eq!(audit["consistent"], true, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sharded_sale_redis_lost_is_rebuilt_over_its_shards_and_never_oversold() {
    let services = Services::start().await;
    let app = TestServer::spawn_with(Options::distributed(&services)).await;
    let sale = sharded_sale(&app, 60, 1, 3).await;
    for i in 0..20 {
        let (status, body) = app.buy(sale, &format!("before-loss-{i}")).await;
        assert_eq!(status, 201, "{body}");
    }
    wait_stored(&app, sale, 20, Duration::from_secs(60)).await;
    let keys: Vec<String> = (0..3)
        .flat_map(|k| {
            [
                "meta",
                "buyers",
                "pending",
                "released",
                "holds",
                "deadlines",
                "settled",
                "outbox",
                "inbox",
            ]
            .map(|name| shard_key(&services, sale, 3, k, name))
        })
        .collect();
    services.redis_del(&keys).await;

    // Rebuilt from the store over its three shards, each buyer's units on their home shard.
    let started = Instant::now();
    let answers: Vec<(u16, Value)> = loop {
        let (status, body) = app.buy(sale, "before-loss-7").await;
        if status != 503 {
            assert_eq!(
                (status, &body["error"]["code"]),
                (409, &json!("already_purchased")),
                "{body}"
            );
            break join_all((0..80).map(|i| {
                let app = &app;
                async move { app.buy(sale, &format!("after-loss-{i}")).await }
            }))
            .await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never rebuilt: {}",
            app.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let sold_after = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(
        sold_after,
        40,
        "{:?}",
        answers
            .iter()
            .filter(|(s, _)| *s != 201 && *s != 410)
            .collect::<Vec<_>>()
    );
    let audit = wait_stored(&app, sale, 60, Duration::from_secs(60)).await;
    assert_eq!(
        (audit["stored"].as_u64(), audit["remaining"].as_u64()),
        (Some(60), Some(0)),
        "{audit}"
    );
    assert_eq!(audit["consistent"], true, "{audit}");
}
