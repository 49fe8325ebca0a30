//! What an operator sees: a request id on every response, `/metrics` as strict Prometheus text
//! that moves with purchases (also from a separate consumer), `/readyz` naming a backend that is
//! down, and the 5xx logged once as JSON with its request id and cause.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{assert_error, Options, TestServer};
use crate::prometheus::{assert_exposition_format, sample, scrape};
use crate::requests::{get_with, post, send};
#[cfg(feature = "distributed")]
use crate::services::{redis_server, Services};

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestServer::spawn().await;
    let mut seen = HashSet::new();
    for path in ["/", "/seckill/getCount", "/api/sales", "/nowhere", "/metrics"] {
        let response = app.client.get(app.url(path)).send().await.expect("GET");
        let id = response.headers()["x-request-id"].to_str().expect("ascii").to_owned();
        assert!(!id.is_empty() && seen.insert(id), "{path}: ids must be unique");
    }
    // A wrong method's 405 too.
    let (status, headers, _) = send(app.client.delete(app.url("/api/sales")), &[]).await;
    assert_eq!(status, 405);
    assert!(headers.contains_key("x-request-id"), "405 without a request id");
    let (_, headers, _) = post(&app, "/seckill/seckill", &[("x-request-id", "trace-abc-123")]).await;
    assert_eq!(headers["x-request-id"], "trace-abc-123", "a caller's id flows through");
    let too_long = "x".repeat(300);
    let (_, headers, _) = post(&app, "/seckill/seckill", &[("x-request-id", &too_long)]).await;
    assert_ne!(headers["x-request-id"], too_long.as_str(), "an unusable id is replaced");
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_with_purchases() {
    let app = TestServer::spawn().await;
    let sale = app.live_sale(10, 1).await;
    let scrape = || scrape(&app);
    let before = scrape().await;
    assert_exposition_format(&before);
    for user in ["m1", "m2", "m3"] {
        assert_eq!(app.buy(sale, user).await.0, 201);
    }
    assert_eq!(app.buy(sale, "m1").await.0, 409);
    let after = scrape().await;
    assert_exposition_format(&after);

    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels).unwrap_or(0.0) - sample(&before, name, labels).unwrap_or(0.0)
    };
    assert_eq!(delta("seckill_purchases_total", &[("outcome", "success")]), 3.0);
    assert_eq!(
        delta("seckill_purchases_total", &[("outcome", "already_purchased")]),
        1.0
    );
    let route = "/api/sales/{id}/purchase";
    assert_eq!(
        delta("seckill_http_requests_total", &[("route", route), ("status", "201")]),
        3.0
    );
    assert_eq!(
        delta("seckill_http_requests_total", &[("route", route), ("status", "409")]),
        1.0
    );
    assert_eq!(
        delta("seckill_http_request_duration_seconds_count", &[("route", route)]),
        4.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "seckill_stock_remaining", &[("sale", &sale.to_string())]),
        Some(7.0)
    );
    assert!(
        delta("seckill_commit_batch_size_count", &[]) >= 1.0,
        "group commits are counted"
    );
    assert_eq!(
        delta("seckill_commit_batch_size_sum", &[]),
        3.0,
        "rows committed: the 3 orders"
    );
    for gauge in [
        "seckill_purchases_in_flight",
        "seckill_store_queue_depth",
        "seckill_kafka_producer_queue_messages",
        "seckill_kafka_consumer_lag_messages",
    ] {
        assert!(sample(&after, gauge, &[]).is_some(), "{gauge} missing");
    }
}

#[cfg(feature = "distributed")]
#[tokio::test]
async fn readyz_turns_503_when_a_backend_is_down_and_logs_it_with_the_request_id() {
    let mut redis = redis_server().await;
    let mut services = Services::start().await;
    services.redis_url = redis.redis_url();
    let app = TestServer::spawn_with(Options {
        extra_args: vec!["--log-format".into(), "json".into()],
        ..Options::distributed(&services)
    })
    .await;
    let (status, _, body) = get_with(&app, "/readyz", &[]).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")), "{body}");

    redis.kill();
    let (status, headers, body) = get_with(&app, "/readyz", &[]).await;
    assert_error(status, &body, 503, "not_ready");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| m.contains("redis")),
        "{body}"
    );
    let (status, _, _) = get_with(&app, "/healthz", &[]).await;
    assert_eq!(status, 200, "alive, though not ready");

    let id = headers["x-request-id"].to_str().expect("ascii").to_owned();
    let mut logged = None;
    for _ in 0..50 {
        let log = std::fs::read_to_string(app.data_dir().join("server.log")).unwrap_or_default();
        logged = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["fields"]["request_id"].as_str().is_some_and(|r| r.contains(&id)));
        if logged.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logged = logged.unwrap_or_else(|| panic!("no JSON log line with request id {id}:\n{}", app.log_tail(20)));
    assert_eq!(logged["fields"]["status"], 503, "{logged}");
    assert!(
        logged["fields"]["cause"].as_str().is_some_and(|c| c.contains("redis")),
        "{logged}"
    );

    redis.restart().await;
    let mut ready = false;
    for _ in 0..50 {
        if get_with(&app, "/readyz", &[]).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "ready again once Redis is back");
}

#[cfg(feature = "distributed")]
#[tokio::test]
async fn a_separate_consumer_serves_its_own_metrics() {
    let services = Services::start().await;
    let app = TestServer::spawn_with(Options {
        no_consumer: true,
        ..Options::distributed(&services)
    })
    .await;
    let mut consumer = tokio::process::Command::new(env!("CARGO_BIN_EXE_seckill"))
        .arg("consumer")
        .args(services.args())
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("SECKILL_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn seckill consumer");
    let stdout = consumer.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the consumer announces its metrics address")
        .expect("read")
        .expect("a line");
    let base = line
        .strip_prefix("seckill consumer metrics on ")
        .expect("address line")
        .trim()
        .to_owned();

    let sale = app.live_sale(100, 1).await;
    for i in 0..30 {
        assert_eq!(app.buy(sale, &format!("c-{i}")).await.0, 201);
    }
    // The consumer, not the engine, commits these orders to MySQL: its /metrics shows them.
    let mut committed = 0.0;
    for _ in 0..100 {
        let text = app
            .client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("text");
        committed = sample(&text, "seckill_commit_batch_size_sum", &[]).unwrap_or(0.0);
        if committed >= 30.0 {
            assert!(
                sample(&text, "seckill_kafka_consumer_lag_messages", &[]).is_some(),
                "{text}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(committed, 30.0, "rows the consumer committed");
    let health = app.client.get(format!("{base}/healthz")).send().await.expect("GET");
    assert_eq!(health.status(), 200);
}

/// A sale that ended more than ten minutes ago leaves `/metrics`; live and recent ones stay.
#[tokio::test]
async fn sales_ended_long_ago_leave_metrics() {
    let app = TestServer::spawn().await;
    let ago = |secs: i64| {
        chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() - secs, 0)
            .expect("time")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let (status, old) = app
        .create_sale(serde_json::json!({"name": "old", "stock": 5, "starts_at": ago(7200), "ends_at": ago(3600)}))
        .await;
    assert_eq!(status, 201, "{old}");
    let (status, recent) = app
        .create_sale(serde_json::json!({"name": "recent", "stock": 5, "starts_at": ago(7200), "ends_at": ago(60)}))
        .await;
    assert_eq!(status, 201, "{recent}");
    let live = app.live_sale(5, 1).await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    let series = |id: &serde_json::Value| format!("seckill_stock_remaining{{sale=\"{id}\"}}");
    assert!(
        !text.contains(&series(&old["id"])),
        "a sale ended an hour ago is still exported"
    );
    assert!(
        text.contains(&series(&recent["id"])),
        "a sale ended a minute ago is gone too soon"
    );
    assert!(text.contains(&format!("seckill_stock_remaining{{sale=\"{live}\"}}")));
}
