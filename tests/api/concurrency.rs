//! The invariants under a stampede: exact stock sold, per-user limit held, store == gate.

use std::sync::Arc;

use futures::future::join_all;

use crate::helpers::{Options, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_buyers_on_one_thousand_stock_sell_exactly_the_stock() {
    let app = Arc::new(
        TestServer::spawn_with(Options {
            demo_stock: 1000,
            ..Options::new()
        })
        .await,
    );
    let answers = join_all((0..2000).map(|_| {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.classic_buy().await })
    }))
    .await;
    let answers: Vec<_> = answers.into_iter().map(|a| a.expect("task")).collect();
    let successes = answers.iter().filter(|a| a["ok"] == true).count();
    let sold_out = answers.iter().filter(|a| a["messages"] == "抢完了").count();
    assert_eq!((successes, sold_out), (1000, 1000));
    let mut ids: Vec<&str> = answers.iter().filter_map(|a| a["order_id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "order ids are unique");
    assert_eq!(app.count().await, 0);
    let audit = app.audit(1).await;
    assert_eq!(
        (audit["stored"].as_u64(), audit["consistent"].as_bool()),
        (Some(1000), Some(true)),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_buyer_hammering_gets_at_most_the_limit() {
    let app = Arc::new(TestServer::spawn().await);
    for limit in [1u32, 3] {
        let sale = app.live_sale(100, limit).await;
        let statuses = join_all((0..1000).map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { app.buy(sale, "greedy").await.0 })
        }))
        .await;
        let won = statuses.iter().filter(|s| *s.as_ref().unwrap() == 201).count();
        let refused = statuses.iter().filter(|s| *s.as_ref().unwrap() == 409).count();
        assert_eq!((won, refused), (limit as usize, 1000 - limit as usize));
        let audit = app.audit(sale).await;
        assert_eq!(audit["stored"].as_u64(), Some(u64::from(limit)), "{audit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_buyers_racing_with_a_limit_of_two_never_exceed_it() {
    let app = Arc::new(TestServer::spawn().await);
    let sale = app.live_sale(500, 2).await;
    // 400 buyers × 4 attempts each = 1,600 requests for 500 units, limit 2 each.
    let answers = join_all((0..1600).map(|i| {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let user = format!("racer-{}", i % 400);
            let (status, _) = app.buy(sale, &user).await;
            (user, status)
        })
    }))
    .await;
    let mut per_user = std::collections::HashMap::new();
    for (user, status) in answers.into_iter().map(|a| a.unwrap()) {
        assert!(matches!(status, 201 | 409 | 410), "unexpected {status}");
        if status == 201 {
            *per_user.entry(user).or_insert(0) += 1;
        }
    }
    assert_eq!(per_user.values().sum::<u32>(), 500, "exactly the stock is sold");
    assert!(per_user.values().all(|&n| n <= 2));
    assert_eq!(app.audit(sale).await["consistent"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beyond_capacity_the_engine_sheds_load_and_stays_exact() {
    // 8 purchases in flight at most, each held 50 ms at its commit: 600 buyers at once are far
    // beyond what this engine will take.
    let options = Options {
        commit_delay_ms: 50,
        extra_args: vec!["--max-inflight-purchases".into(), "8".into()],
        ..Options::new()
    };
    let app = Arc::new(TestServer::spawn_with(options).await);
    let sale = app.live_sale(1000, 1).await;
    let answers = join_all((0..600).map(|i| {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.buy(sale, &format!("crowd-{i}")).await })
    }))
    .await;
    let (mut won, mut shed) = (0u64, 0u64);
    for answer in answers {
        let (status, body) = answer.unwrap();
        match status {
            201 => won += 1,
            503 => {
                assert_eq!(body["error"]["code"], "overloaded", "{body}");
                shed += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(shed > 0, "nothing was shed");
    assert!(won > 0, "nothing was sold");
    let audit = app.audit(sale).await;
    assert_eq!(audit["stored"].as_u64(), Some(won), "{audit}");
    assert_eq!(audit["remaining"].as_u64(), Some(1000 - won), "{audit}");
    // Shed buyers can come back and buy.
    assert_eq!(app.buy(sale, "crowd-returning").await.0, 201);
}
