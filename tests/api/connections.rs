//! Connections: a client trickling its request head, one idling on a kept-alive connection,
//! and clients opening more connections than the caps allow cannot hold the engine; everyone
//! else is served meanwhile. Every wait below is an upper bound with a wide margin: a loaded
//! machine makes the engine slower to close, never quicker, so no assertion depends on an idle
//! machine.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{Options, TestServer};

/// How long the engine may take to close what it must close (timeouts of 1 s are configured).
const WITHIN: Duration = Duration::from_secs(10);

async fn spawn(flags: &[&str]) -> TestServer {
    TestServer::spawn_with(Options {
        extra_args: flags.iter().map(|f| f.to_string()).collect(),
        ..Options::new()
    })
    .await
}

fn addr(server: &TestServer) -> SocketAddr {
    server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the base URL is http://ip:port")
}

/// A connection from `from` (any 127.x.y.z: Linux routes all of 127/8 to the loopback), so one
/// test can be several clients.
async fn connect_from(from: &str, server: &TestServer) -> TcpStream {
    let from: IpAddr = from.parse().expect("ip");
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind the client address");
    socket.connect(addr(server)).await.expect("connect")
}

/// Sends `GET /seckill/getCount` on a kept-alive connection and reads the whole answer;
/// `None` if the connection is closed or broken instead, or nothing comes within [`WITHIN`].
async fn get_count(stream: &mut TcpStream) -> Option<u16> {
    stream
        .write_all(b"GET /seckill/getCount HTTP/1.1\r\nHost: seckill\r\n\r\n")
        .await
        .ok()?;
    tokio::time::timeout(WITHIN, read_response(stream)).await.ok()?
}

/// One response (status line, headers, a `Content-Length` body).
async fn read_response(stream: &mut TcpStream) -> Option<u16> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while got.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    Some(status)
}

/// Whether the engine closes `stream` (EOF or reset) within `within`, not answering anything.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// `/metrics`, fetched on a connection of its own from `from`.
async fn metrics_from(from: &str, server: &TestServer) -> String {
    let mut stream = connect_from(from, server).await;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: seckill\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    tokio::time::timeout(WITHIN, stream.read_to_string(&mut text))
        .await
        .expect("answered in time")
        .expect("read");
    text
}

/// A connection that holds a place under the caps: accepted, and served once.
async fn held_connection(from: &str, server: &TestServer) -> TcpStream {
    let mut stream = connect_from(from, server).await;
    assert_eq!(
        get_count(&mut stream).await,
        Some(200),
        "a connection within the caps is served"
    );
    stream
}

/// Opens connections from `from` until one is served, for [`WITHIN`]: the engine frees a place
/// a moment after the client closes, not in the same instant.
async fn served_again(from: &str, server: &TestServer) -> bool {
    let deadline = tokio::time::Instant::now() + WITHIN;
    while tokio::time::Instant::now() < deadline {
        let mut stream = connect_from(from, server).await;
        if get_count(&mut stream).await == Some(200) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_trickling_request_head_is_closed_after_the_header_timeout_while_others_are_served() {
    let server = spawn(&["--header-timeout-secs", "1"]).await;
    let mut slow = connect_from("127.0.0.1", &server).await;
    slow.write_all(b"GET /seckill/getCount HTTP/1.1\r\nHost: se")
        .await
        .expect("write");
    // Meanwhile another client is served, on a connection of its own.
    assert_eq!(server.count().await, 1000);
    assert!(
        closed_within(&mut slow, WITHIN).await,
        "a head that never completes must be closed after the 1 s header timeout\n{}",
        server.log_tail(20)
    );
    // A connection that sends nothing at all is closed the same way.
    let mut silent = connect_from("127.0.0.1", &server).await;
    assert!(
        closed_within(&mut silent, WITHIN).await,
        "a silent connection is closed too"
    );
    // Counted as the connection is dropped, a moment after the client sees it closed.
    let counted = server
        .wait_metric("seckill_header_timeouts_total", WITHIN, |n| n >= 2.0)
        .await;
    assert!(counted >= Some(2.0), "counted in /metrics: {counted:?}");
    assert_eq!(server.count().await, 1000, "the engine serves on");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout_not_the_header_timeout() {
    let server = spawn(&["--header-timeout-secs", "1", "--keep-alive-timeout-secs", "4"]).await;
    let mut stream = held_connection("127.0.0.1", &server).await;
    // Idle for longer than the header timeout, well within the keep-alive timeout: a timeout
    // can only fire late on a loaded machine, never early, so the connection must still serve.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        get_count(&mut stream).await,
        Some(200),
        "between requests the header timeout does not apply"
    );
    assert!(
        closed_within(&mut stream, Duration::from_secs(4) + WITHIN).await,
        "idle past the 4 s keep-alive timeout, the connection must be closed\n{}",
        server.log_tail(20)
    );
    let counted = server
        .wait_metric("seckill_idle_connections_closed_total", WITHIN, |n| n >= 1.0)
        .await;
    assert!(counted >= Some(1.0), "counted in /metrics: {counted:?}");
}

#[tokio::test]
async fn beyond_the_per_ip_cap_a_connection_is_closed_at_once_and_a_freed_place_is_reused() {
    let server = spawn(&["--max-connections-per-ip", "5"]).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(held_connection("127.0.0.1", &server).await);
    }
    let mut sixth = connect_from("127.0.0.1", &server).await;
    assert!(
        closed_within(&mut sixth, WITHIN).await,
        "the 6th connection from one address must be closed"
    );
    // Another address is not affected, and the five held ones still work.
    assert!(served_again("127.0.0.2", &server).await, "another client is served");
    for stream in &mut held {
        assert_eq!(get_count(stream).await, Some(200), "a held connection still works");
    }
    held.pop();
    assert!(
        served_again("127.0.0.1", &server).await,
        "a closed connection frees its place"
    );
    // From another address: 127.0.0.1's places may all be taken again.
    let refused = metrics_from("127.0.0.2", &server).await;
    assert!(
        refused
            .lines()
            .filter_map(|l| l.strip_prefix("seckill_connections_refused_total{reason=\"per_ip\"} "))
            .any(|v| v.parse::<f64>().is_ok_and(|v| v >= 1.0)),
        "{refused}"
    );
}

#[tokio::test]
async fn beyond_the_total_cap_a_connection_is_closed_at_once_and_a_freed_place_is_reused() {
    let server = spawn(&["--max-connections", "5"]).await;
    let mut held = Vec::new();
    for from in ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        held.push(held_connection(from, &server).await);
    }
    let mut sixth = connect_from("127.0.0.6", &server).await;
    assert!(
        closed_within(&mut sixth, WITHIN).await,
        "the 6th connection must be closed, whatever its address"
    );
    for stream in &mut held {
        assert_eq!(get_count(stream).await, Some(200), "a held connection still works");
    }
    held.pop();
    assert!(
        served_again("127.0.0.6", &server).await,
        "a closed connection frees its place"
    );
    drop(held);
    let open = server
        .wait_metric("seckill_connections_open", WITHIN, |open| open <= 2.0)
        .await;
    assert!(
        open.is_some_and(|open| open <= 2.0),
        "closed connections leave the gauge: {open:?}"
    );
}

#[tokio::test]
async fn sigterm_closes_idle_connections_and_exits_while_clients_hold_them() {
    let mut server = spawn(&[]).await;
    let _idle = held_connection("127.0.0.1", &server).await;
    let mut slow = connect_from("127.0.0.1", &server).await;
    slow.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
    // Within the header timeout (10 s) plus a margin, not the keep-alive timeout (60 s).
    let status = server.terminate().await;
    assert!(status.success(), "{status:?}\n{}", server.log_tail(20));
}

#[tokio::test]
async fn a_cap_or_timeout_of_0_stops_the_start_with_a_clear_message() {
    for flag in [
        "--max-connections",
        "--max-connections-per-ip",
        "--header-timeout-secs",
        "--keep-alive-timeout-secs",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_seckill"))
            .args(["serve", "--listen", "127.0.0.1:0", flag, "0"])
            .output()
            .expect("run seckill");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} 0: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("at least 1"),
            "{flag} 0: {stderr}"
        );
    }
}
