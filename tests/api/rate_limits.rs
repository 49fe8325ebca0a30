//! Abuse control: token buckets per client IP (monitoring exempt) and per buyer, answering 429
//! `rate_limited` with `Retry-After` beyond them.

use std::collections::HashMap;

use crate::helpers::{assert_error, Options, TestServer};
use crate::prometheus::{sample, scrape};
use crate::requests::get_with;

#[tokio::test]
async fn a_burst_from_one_ip_gets_429_with_retry_after_and_monitoring_is_exempt() {
    let app = TestServer::spawn_with(Options {
        extra_args: vec!["--rate-limit-ip".into(), "5".into(), "--trust-forwarded-for".into()],
        ..Options::new()
    })
    .await;
    let burst = (0..40).map(|_| get_with(&app, "/api/sales", &[("x-forwarded-for", "203.0.113.7")]));
    let answers = futures::future::join_all(burst).await;
    let limited: Vec<_> = answers.iter().filter(|(status, _, _)| *status == 429).collect();
    let passed = answers.iter().filter(|(status, _, _)| *status == 200).count();
    assert!(
        (5..=7).contains(&passed),
        "a bucket of 5 lets about 5 through, not {passed}"
    );
    assert_eq!(limited.len() + passed, 40);
    for (status, headers, body) in &limited {
        assert_error(*status, body, 429, "rate_limited");
        let retry: u64 = headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!(retry >= 1, "Retry-After {retry}");
    }
    // Another client has its own bucket; health and metrics are never limited.
    let (status, _, _) = get_with(&app, "/api/sales", &[("x-forwarded-for", "198.51.100.1")]).await;
    assert_eq!(status, 200);
    for path in ["/healthz", "/metrics", "/readyz"] {
        let response = app
            .client
            .get(app.url(path))
            .header("x-forwarded-for", "203.0.113.7")
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 200, "{path}");
    }
    let metrics = scrape(&app).await;
    assert_eq!(
        sample(&metrics, "seckill_rate_limited_total", &[("scope", "ip")]),
        Some(limited.len() as f64)
    );
}

#[tokio::test]
async fn a_buyer_hammering_the_buy_path_is_limited_per_user() {
    let app = TestServer::spawn_with(Options {
        extra_args: vec!["--rate-limit-user".into(), "2".into()],
        ..Options::new()
    })
    .await;
    let sale = app.live_sale(100, 100).await;
    let mut statuses = HashMap::new();
    for _ in 0..20 {
        let (status, _) = app.buy(sale, "hammer").await;
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert!(statuses.get(&429).copied().unwrap_or(0) >= 15, "{statuses:?}");
    assert!(statuses.get(&201).copied().unwrap_or(0) >= 2, "{statuses:?}");
    let (status, _) = app.buy(sale, "someone-else").await;
    assert_eq!(status, 201, "other buyers are not limited by the hammer");
}
