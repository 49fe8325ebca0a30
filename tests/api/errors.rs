//! Bad input: a clear 4xx with a JSON body, never a 500, and the server keeps selling.

use crate::helpers::{assert_error, TestServer, ADMIN_TOKEN};

async fn post_raw(app: &TestServer, body: Vec<u8>) -> (u16, serde_json::Value) {
    let resp = app
        .client
        .post(app.url("/api/sales"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestServer::spawn().await;
    for body in [
        &b"{"[..],
        b"not json",
        b"",
        b"{\"name\": \"x\", \"stock\": 1,}",
        b"\xff\xfe\x00",
    ] {
        let (status, error) = post_raw(&app, body.to_vec()).await;
        assert_error(status, &error, 400, "malformed_json");
    }
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A chunked body announces no length: the limit is found by reading. The engine answers
    // 413 once 1 MiB is read and closes, so the writer may meet a closed socket: it writes on
    // its own task, and the answer is read whatever happens to the rest of the upload.
    let app = TestServer::spawn().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /api/sales HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let upload = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b'a'; 64 << 10];
        for _ in 0..32 {
            writer.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
            writer.write_all(&chunk).await?;
            writer.write_all(b"\r\n").await?;
        }
        writer.write_all(b"0\r\n\r\n").await
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), reader.read_to_end(&mut answer)).await;
    upload.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    // Still selling afterwards.
    assert_eq!(app.classic_buy().await["ok"], true);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = TestServer::spawn().await;
    let (status, body) = app.get("/no/such/route").await;
    assert_error(status, &body, 404, "not_found");
    let resp = app.client.delete(app.url("/seckill/getCount")).send().await.unwrap();
    let status = resp.status().as_u16();
    assert_error(status, &resp.json().await.unwrap(), 405, "method_not_allowed");
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_count_purchases() {
    let app = TestServer::spawn().await;
    app.classic_buy().await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let success = text
        .lines()
        .find(|l| l.starts_with("seckill_purchases_total{outcome=\"success\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(success, Some(1), "{text}");
    assert!(text.contains("seckill_stock_remaining{sale=\"1\"} 999"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_get_408_and_do_not_stop_the_sale() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let options = crate::helpers::Options {
        extra_args: vec!["--request-body-timeout-ms".into(), "500".into()],
        ..crate::helpers::Options::new()
    };
    let app = TestServer::spawn_with(options).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // 200 clients announce a body and send a few bytes of it, then nothing (slowloris).
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /api/sales HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"na"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    for _ in 0..20 {
        assert_eq!(
            app.classic_buy().await["ok"],
            true,
            "the sale goes on beside slow clients"
        );
    }
    // Each slow client is answered 408 (JSON) once its body is overdue, and disconnected.
    for mut stream in slow.into_iter().step_by(40) {
        let mut answer = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("answered in time")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    }
}

/// A body announced over the limit is refused at once (413), not after the body timeout (408):
/// the client sends the head and nothing more.
#[tokio::test]
async fn a_content_length_over_the_limit_is_413_before_the_body_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestServer::spawn().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/sales HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // The body timeout is 10 s by default; 2 s shows the answer did not wait for it.
    tokio::time::timeout(std::time::Duration::from_secs(2), stream.read_to_end(&mut answer))
        .await
        .expect("answered at once, not after the body timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    assert_eq!(app.get("/api/sales").await.0, 200, "the engine goes on");
}

#[tokio::test]
async fn oversized_headers_are_refused_and_the_sale_goes_on() {
    let app = TestServer::spawn().await;
    let resp = app
        .client
        .post(app.url("/seckill/seckill"))
        .header("x-padding", "p".repeat(1 << 20))
        .send()
        .await;
    // hyper refuses a head over its buffer with 431, or closes the connection: never a 2xx or 5xx.
    if let Ok(resp) = resp {
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    assert_eq!(app.classic_buy().await["ok"], true);
    assert_eq!(app.count().await, 999, "the oversized request bought nothing");
}
