//! `/api/sales`: admin creation, listing, status.

use serde_json::json;

use crate::helpers::{assert_error, rfc3339_in, Options, TestServer, ADMIN_TOKEN};

#[tokio::test]
async fn creating_a_sale_requires_the_admin_token() {
    let app = TestServer::spawn().await;
    let body = json!({ "name": "phone", "stock": 10 });
    let none = app.client.post(app.url("/api/sales")).json(&body).send().await.unwrap();
    let status = none.status().as_u16();
    assert_error(status, &none.json().await.unwrap(), 401, "unauthorized");
    let wrong = app
        .client
        .post(app.url("/api/sales"))
        .bearer_auth("not-the-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = wrong.status().as_u16();
    assert_error(status, &wrong.json().await.unwrap(), 403, "forbidden");
    let right = app
        .client
        .post(app.url("/api/sales"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 201);
    let sale: serde_json::Value = right.json().await.unwrap();
    assert_eq!(
        (
            sale["stock"].as_u64(),
            sale["remaining"].as_u64(),
            sale["per_user_limit"].as_u64()
        ),
        (Some(10), Some(10), Some(1))
    );
    assert_eq!(sale["status"], "live");
}

#[tokio::test]
async fn without_a_configured_token_admin_routes_are_refused() {
    let app = TestServer::spawn_with(Options {
        admin_token: None,
        ..Options::new()
    })
    .await;
    let resp = app
        .client
        .post(app.url("/api/sales"))
        .bearer_auth("anything")
        .json(&json!({"name":"x","stock":1}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_error(status, &resp.json().await.unwrap(), 403, "admin_disabled");
}

#[tokio::test]
async fn sales_are_listed_and_read_with_their_status() {
    let app = TestServer::spawn().await;
    let (_, upcoming) = app
        .create_sale(json!({ "name": "later", "stock": 5, "starts_at": rfc3339_in(3600) }))
        .await;
    let (_, ended) = app
        .create_sale(
            json!({ "name": "past", "stock": 5, "starts_at": rfc3339_in(-7200), "ends_at": rfc3339_in(-3600) }),
        )
        .await;
    let (_, empty) = app.create_sale(json!({ "name": "none", "stock": 0 })).await;
    assert_eq!(upcoming["status"], "upcoming");
    assert_eq!(ended["status"], "ended");
    assert_eq!(empty["status"], "sold_out");

    let (status, list) = app.get("/api/sales").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["sales"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "demo sale plus three: {names:?}");
    assert!(names.contains(&"later") && names.contains(&"past"));

    let (status, one) = app.get(&format!("/api/sales/{}", upcoming["id"])).await;
    assert_eq!(status, 200);
    assert_eq!(one["name"], "later");
    assert!(one["starts_at"].as_str().is_some());
}

#[tokio::test]
async fn invalid_sales_are_refused_with_400() {
    let app = TestServer::spawn().await;
    for body in [
        json!({ "name": "x", "stock": -1 }),
        json!({ "name": "x", "stock": 1e30 }),
        json!({ "name": "", "stock": 1 }),
        json!({ "name": "x", "stock": 1, "per_user_limit": 0 }),
        json!({ "name": "x", "stock": 1, "starts_at": rfc3339_in(10), "ends_at": rfc3339_in(5) }),
        json!({ "name": "x", "stock": 1, "starts_at": "tomorrow" }),
        json!({ "name": "x", "stock": 1, "starts_at": "0253-07-08T00:00:00Z" }),
        json!({ "name": "x", "stock": 1, "ends_at": "1969-12-31T23:59:59.999Z" }),
        json!({ "name": "x" }),
        json!({ "name": "x", "stock": 1, "surprise": true }),
    ] {
        let (status, error) = app.create_sale(body.clone()).await;
        assert_error(status, &error, 400, "invalid_sale");
    }
    let overflowing = app
        .client
        .post(app.url("/api/sales"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .body(r#"{"name":"x","stock":99999999999999999999999}"#)
        .send()
        .await
        .unwrap();
    let status = overflowing.status().as_u16();
    assert_error(status, &overflowing.json().await.unwrap(), 400, "invalid_sale");
}

#[tokio::test]
async fn unknown_sales_are_404() {
    let app = TestServer::spawn().await;
    for path in ["/api/sales/999", "/api/sales/abc", "/api/sales/-1"] {
        let (status, body) = app.get(path).await;
        assert_error(status, &body, 404, "sale_not_found");
    }
}

/// The audit counts every order of a sale: an operator's tool, behind the admin token. While
/// audits of a big sale run back to back, `/readyz` still answers 200: it has a connection of its
/// own and never queues behind the API's reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_is_admin_only_and_readyz_answers_while_audits_run() {
    let app = TestServer::spawn().await;
    let sale = app.live_sale(1_000_000, 1).await;
    let path = format!("/api/sales/{sale}/audit");
    let anonymous = app.client.get(app.url(&path)).send().await.unwrap();
    let status = anonymous.status().as_u16();
    assert_error(status, &anonymous.json().await.unwrap(), 401, "unauthorized");
    let wrong = app
        .client
        .get(app.url(&path))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    let status = wrong.status().as_u16();
    assert_error(status, &wrong.json().await.unwrap(), 403, "forbidden");
    let unknown = app
        .client
        .get(app.url("/api/sales/999/audit"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = unknown.status().as_u16();
    assert_error(status, &unknown.json().await.unwrap(), 404, "sale_not_found");
    let disabled = TestServer::spawn_with(Options {
        admin_token: None,
        ..Options::new()
    })
    .await;
    let (status, body) = disabled.get("/api/sales/1/audit").await;
    assert_error(status, &body, 403, "admin_disabled");

    // A sale with many stored orders makes each audit a long count.
    let conn = rusqlite::Connection::open(app.data_dir().join("seckill.sqlite3")).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)
         INSERT INTO orders (order_id, sale_id, user_id, seq, created_at)
         SELECT 'bulk-' || i, ?1, 'buyer-' || i, 1, 0 FROM n",
        [sale],
    )
    .unwrap();
    drop(conn);

    let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    let auditors: Vec<_> = (0..12)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url(&path));
            tokio::spawn(async move {
                let mut audits = 0u32;
                while std::time::Instant::now() < until {
                    let resp = client.get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
                    assert_eq!(resp.status(), 200);
                    audits += 1;
                }
                audits
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut probes = 0;
    while std::time::Instant::now() < until {
        let started = std::time::Instant::now();
        let (status, body) = app.get("/readyz").await;
        assert_eq!(status, 200, "{body}");
        // The engine gives a check 2.5 s; far less means readiness did not wait for the audits.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        probes += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut audits = 0;
    for auditor in auditors {
        audits += auditor.await.unwrap();
    }
    assert!(probes >= 10 && audits >= 12, "probes {probes}, audits {audits}");
}

/// `GET /api/sales` answers a page at a time (100 by default, at most 1,000), in id order, with
/// a cursor while more follow; following the cursors visits every sale once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_are_listed_a_page_at_a_time_and_the_cursor_visits_each_once() {
    let app = TestServer::spawn().await;
    for i in 0..250 {
        let (status, body) = app.create_sale(json!({"name": format!("item {i}"), "stock": 1})).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, first) = app.get("/api/sales").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["sales"].as_array().map(Vec::len), Some(100));
    let mut seen = Vec::new();
    let mut path = "/api/sales?limit=60".to_owned();
    loop {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let sales = page["sales"].as_array().expect("sales");
        assert!(sales.len() <= 60);
        seen.extend(sales.iter().map(|s| s["id"].as_i64().expect("id")));
        match page["next_after"].as_i64() {
            Some(after) => path = format!("/api/sales?limit=60&after={after}"),
            None => break,
        }
    }
    // The demo sale and the 250 new ones, each once, in id order.
    assert_eq!(seen.len(), 251);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    for bad in ["limit=0", "limit=1001", "limit=many", "after=-1"] {
        let (status, body) = app.get(&format!("/api/sales?{bad}")).await;
        assert_error(status, &body, 400, "invalid_query");
    }
}
