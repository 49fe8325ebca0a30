//! The production surface: JWT identity, rate limits, purchase tokens, request ids, `/metrics`,
//! `/readyz`, the config file and the secrets rule.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::{assert_error, redis_server, rfc3339_in, Options, Services, TestServer};

const JWT_SECRET: &str = "test-jwt-secret";

fn with_jwt(mode: &str) -> Options {
    Options {
        extra_args: vec!["--auth".into(), mode.into()],
        env: vec![("SECKILL_JWT_SECRET".into(), JWT_SECRET.into())],
        ..Options::new()
    }
}

fn hs256(secret: &str, sub: &str, expires_in: i64) -> String {
    let claims = json!({ "sub": sub, "exp": chrono::Utc::now().timestamp() + expires_in });
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

async fn scrape(app: &TestServer) -> String {
    let response = app.client.get(app.url("/metrics")).send().await.expect("GET");
    response.text().await.expect("text")
}

/// Status, headers and JSON body of a request with these headers.
async fn send(request: reqwest::RequestBuilder, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    let request = headers.iter().fold(request, |r, (name, value)| r.header(*name, *value));
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

async fn post(app: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    send(app.client.post(app.url(path)), headers).await
}

async fn get_with(app: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    send(app.client.get(app.url(path)), headers).await
}

#[tokio::test]
async fn a_signed_jwt_names_the_buyer_and_forged_or_expired_ones_get_401() {
    let app = TestServer::spawn_with(with_jwt("jwt")).await;
    let sale = app.live_sale(10, 1).await;
    let path = format!("/api/sales/{sale}/purchase");

    let good = format!("Bearer {}", hs256(JWT_SECRET, "alice", 60));
    let (status, _, order) = post(&app, &path, &[("authorization", &good), ("x-user-id", "mallory")]).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["user_id"], "alice", "the JWT's sub, not the header");

    let forged = format!("Bearer {}", hs256("guessed-secret", "bob", 60));
    let expired = format!("Bearer {}", hs256(JWT_SECRET, "bob", -120));
    for bad in [
        forged.as_str(),
        expired.as_str(),
        "Bearer not.a.jwt",
        "Basic Ym9iOmJvYg==",
    ] {
        let (status, headers, body) = post(&app, &path, &[("authorization", bad)]).await;
        assert_error(status, &body, 401, "invalid_token");
        assert!(headers.contains_key("www-authenticate"), "{bad}");
    }
    let (status, _, body) = post(&app, &path, &[("x-user-id", "bob")]).await;
    assert_error(status, &body, 401, "token_required");
    // The seed's anonymous purchase cannot bypass identity either.
    let (status, _, body) = post(&app, "/seckill/seckill", &[]).await;
    assert_error(status, &body, 401, "token_required");
    let audit = app.audit(sale).await;
    assert_eq!(audit["stored"], 1, "only alice bought: {audit}");

    // Only alice reads alice's orders.
    let orders = format!("/api/sales/{sale}/orders/alice");
    let (status, _, body) = get_with(&app, &orders, &[("authorization", &good)]).await;
    assert_eq!(
        (status, body["orders"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{body}"
    );
    let mallory = format!("Bearer {}", hs256(JWT_SECRET, "mallory", 60));
    let (status, _, body) = get_with(&app, &orders, &[("authorization", &mallory)]).await;
    assert_error(status, &body, 403, "not_your_orders");
    let (status, _, body) = get_with(&app, &orders, &[("x-user-id", "alice")]).await;
    assert_error(status, &body, 401, "token_required");
}

#[tokio::test]
async fn rs256_tokens_verify_with_the_public_key_and_algorithm_confusion_fails() {
    let dir = tempfile::tempdir().expect("dir");
    let private = dir.path().join("private.pem");
    let public = dir.path().join("public.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .status()
        .expect("openssl")
        .success()
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .expect("openssl")
            .success();
    assert!(ok, "openssl could not make a key pair");
    let app = TestServer::spawn_with(Options {
        extra_args: vec![
            "--auth".into(),
            "either".into(),
            "--jwt-public-key-file".into(),
            public.display().to_string(),
        ],
        ..Options::new()
    })
    .await;
    let sale = app.live_sale(10, 1).await;
    let path = format!("/api/sales/{sale}/purchase");
    let claims = json!({ "sub": "rsa-user", "exp": chrono::Utc::now().timestamp() + 60 });
    let key = EncodingKey::from_rsa_pem(&std::fs::read(&private).expect("pem")).expect("rsa key");
    let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).expect("sign");
    let (status, _, order) = post(&app, &path, &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!((status, order["user_id"].as_str()), (201, Some("rsa-user")), "{order}");

    // HS256 "signed" with the public key: the classic confusion attack.
    let public_pem = std::fs::read(&public).expect("pem");
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&public_pem),
    )
    .expect("sign");
    let (status, _, body) = post(&app, &path, &[("authorization", &format!("Bearer {confused}"))]).await;
    assert_error(status, &body, 401, "invalid_token");
    // `either`: without a JWT, the gateway's header still names the buyer.
    let (status, _, order) = post(&app, &path, &[("x-user-id", "gateway-user")]).await;
    assert_eq!(
        (status, order["user_id"].as_str()),
        (201, Some("gateway-user")),
        "{order}"
    );
}

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

#[tokio::test]
async fn purchases_need_a_live_token_bound_to_the_buyer_and_sale() {
    let app = TestServer::spawn_with(Options {
        extra_args: vec![
            "--require-purchase-token".into(),
            "--purchase-token-ttl-secs".into(),
            "2".into(),
        ],
        env: vec![("SECKILL_PURCHASE_TOKEN_SECRET".into(), "shared-by-instances".into())],
        ..Options::new()
    })
    .await;
    let (status, sale) = app
        .create_sale(json!({ "name": "gated", "stock": 5, "starts_at": rfc3339_in(2) }))
        .await;
    assert_eq!(status, 201, "{sale}");
    let id = sale["id"].as_i64().expect("id");
    let token_path = format!("/api/sales/{id}/token");
    let buy_path = format!("/api/sales/{id}/purchase");

    // Before the start: no token, so no script can fire early.
    let (status, _, body) = get_with(&app, &token_path, &[("x-user-id", "alice")]).await;
    assert_error(status, &body, 403, "not_started");
    let (status, _, body) = get_with(&app, &token_path, &[]).await;
    assert_error(status, &body, 400, "missing_user_id");
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let (status, _, issued) = get_with(&app, &token_path, &[("x-user-id", "alice")]).await;
    assert_eq!(status, 200, "{issued}");
    let token = issued["token"].as_str().expect("token").to_owned();
    assert_eq!(
        (issued["user_id"].as_str(), issued["sale_id"].as_i64()),
        (Some("alice"), Some(id))
    );

    let (status, _, body) = post(&app, &buy_path, &[("x-user-id", "alice")]).await;
    assert_error(status, &body, 403, "purchase_token_required");
    let (status, _, body) = post(&app, &buy_path, &[("x-user-id", "bob"), ("x-purchase-token", &token)]).await;
    assert_error(status, &body, 403, "invalid_purchase_token");
    let (status, _, body) = post(
        &app,
        "/api/sales/1/purchase",
        &[("x-user-id", "alice"), ("x-purchase-token", &token)],
    )
    .await;
    assert_error(status, &body, 403, "invalid_purchase_token");
    let (status, _, body) = post(&app, "/seckill/seckill", &[]).await;
    assert_error(status, &body, 400, "missing_user_id");
    let (status, _, order) = post(&app, &buy_path, &[("x-user-id", "alice"), ("x-purchase-token", &token)]).await;
    assert_eq!(status, 201, "{order}");

    // Expired: fetch one for carol, wait out its 2 s.
    let (_, _, issued) = get_with(&app, &token_path, &[("x-user-id", "carol")]).await;
    let stale = issued["token"].as_str().expect("token").to_owned();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, _, body) = post(&app, &buy_path, &[("x-user-id", "carol"), ("x-purchase-token", &stale)]).await;
    assert_error(status, &body, 403, "invalid_purchase_token");
    assert_eq!(app.audit(id).await["stored"], 1);
}

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

/// Name, labels, value.
type Sample<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

/// One sample line split into name, labels and value; label values may hold any character
/// but `"` (routes hold braces).
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series, Vec::new(), value));
    };
    let mut labels = Vec::new();
    let mut rest = rest.strip_suffix('}')?;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let (label_value, after) = after.split_once('"')?;
        labels.push((key, label_value));
        rest = after.strip_prefix(',').unwrap_or(after);
        if !after.is_empty() && !after.starts_with(',') {
            return None;
        }
    }
    Some((name, labels, value))
}

/// The value of one sample: `name{labels}`, labels matched exactly.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_sample)
        .find(|(n, l, _)| *n == name && l.len() == labels.len() && labels.iter().all(|pair| l.contains(pair)))
        .map(|(_, _, v)| v)
}

/// Strict text-format check: every family has HELP and TYPE before its samples, and every
/// sample line is `name{label="value",...} number`.
fn assert_exposition_format(text: &str) {
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut helped = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().expect("name").to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().expect("name"), parts.next().expect("kind"));
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {line}"
            );
        } else {
            let (name, _, _) = parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line}"));
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "name: {line}"
            );
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(
                typed.contains_key(family) && helped.contains(family),
                "untyped sample: {line}"
            );
        }
    }
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

fn seckill() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_seckill"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SECKILL_") {
            command.env_remove(key);
        }
    }
    command
}

/// Starts `seckill serve` with `--config` and the given environment; returns its base URL.
fn serve_with_config(
    config: &std::path::Path,
    data: &std::path::Path,
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    let mut child = seckill()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let line = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .next()
        .expect("a line")
        .expect("read");
    let base = line
        .strip_prefix("seckill listening on ")
        .expect("listening")
        .trim()
        .to_owned();
    (child, base)
}

#[tokio::test]
async fn a_config_file_sets_what_flags_and_env_do_not() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("seckill.toml");
    std::fs::write(
        &config,
        "demo_stock = 7\nadmin_token = \"from-the-file\"\nlisten = \"127.0.0.1:1\"\n",
    )
    .expect("write");
    let client = reqwest::Client::new();
    // The file says 7; the environment beats the file; the --listen flag beats the file's port 1.
    for (env, expected) in [(vec![], 7), (vec![("SECKILL_DEMO_STOCK", "9")], 9)] {
        let data = dir.path().join(format!("data-{expected}"));
        let (mut child, base) = serve_with_config(&config, &data, &env);
        let count: Value = client
            .get(format!("{base}/seckill/getCount"))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        let created = client
            .post(format!("{base}/api/sales"))
            .bearer_auth("from-the-file")
            .json(&json!({ "name": "x", "stock": 1 }))
            .send()
            .await
            .expect("POST")
            .status();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(count["num"], expected, "demo stock");
        assert_eq!(created, 201, "admin token from the file");
    }
}

#[test]
fn bad_config_files_and_secret_flags_stop_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "redis_ulr = \"redis://x\"\n").expect("write");
    let output = seckill()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown setting `redis_ulr`"), "{stderr}");

    let output = seckill()
        .args(["serve", "--admin-token", "visible-in-ps"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--admin-token is a secret"), "{stderr}");
    assert!(!stderr.contains("visible-in-ps"), "the secret is not echoed: {stderr}");

    let output = seckill().args(["serve", "--auth", "jwt"]).output().expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("SECKILL_JWT_SECRET"));
}

#[test]
fn the_readme_table_documents_every_serve_setting() {
    let help = seckill().args(["serve", "--help"]).output().expect("run");
    let help = String::from_utf8_lossy(&help.stdout);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let table: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `--")).collect();
    let mut missing = Vec::new();
    for word in help.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == ',') {
        let name = word.trim_end_matches(['=', ':']);
        let flag = name.starts_with("--") && name.len() > 2 && !["--help", "--version"].contains(&name);
        let var = name.strip_prefix("env: ").unwrap_or(name).starts_with("SECKILL_");
        if (flag || var) && !table.iter().any(|row| row.contains(&format!("`{name}`"))) {
            missing.push(name.to_owned());
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "README config table lacks: {missing:?}");
}

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
