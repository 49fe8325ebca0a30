//! `seckill bench` against a real engine: the report, and a non-zero exit on a violated invariant.

use std::process::Stdio;
use std::time::Duration;

use crate::helpers::{Options, TestServer, ADMIN_TOKEN};

fn bench() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_seckill"));
    // The bench's checks read the audit, an admin route.
    cmd.arg("bench")
        .env("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// The classic scenario: 2,000 buyers at 1,000 stock, on the classic API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classic_scenario_passes_and_writes_report_and_plot() {
    let app = TestServer::spawn_with(Options {
        demo_stock: 1000,
        ..Options::new()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (report, plot) = (dir.path().join("report.json"), dir.path().join("latency.svg"));
    let out = bench()
        .args(["--url", &app.base, "-n", "2000", "-c", "500", "--report"])
        .arg(&report)
        .arg("--plot")
        .arg(&plot)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASSED"), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        (r["counts"]["success"].as_u64(), r["counts"]["sold_out"].as_u64()),
        (Some(1000), Some(1000)),
        "{r}"
    );
    assert!(r["latency"]["p99_ms"].as_f64().unwrap() >= r["latency"]["p50_ms"].as_f64().unwrap());
    assert!(r["invariants"].as_array().unwrap().iter().all(|c| c["passed"] == true));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<circle"), "plot has points");
    assert_eq!(app.count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violated_invariant_fails_the_bench() {
    let app = TestServer::spawn().await;
    let sale = app.live_sale(1_000_000, 1000).await;
    // 20 buyers, limit 1000 each, 4,000 requests/s: a five-second run on one sale.
    let mut run = bench()
        .args([
            "--url",
            &app.base,
            "--sale",
            &sale.to_string(),
            "--users",
            "20",
            "-n",
            "20000",
            "-c",
            "20",
        ])
        .spawn()
        .unwrap();
    // Once the bench's load is flowing, a buyer the bench does not know takes a unit: its
    // accounting (remaining == before − its successes) can no longer hold.
    let started = std::time::Instant::now();
    while app.audit(sale).await["sold"].as_u64().unwrap() <= 100 {
        assert!(started.elapsed() < Duration::from_secs(60), "the bench sent no load");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.buy(sale, "intruder").await.0, 201);
    assert!(
        run.try_wait().unwrap().is_none(),
        "the bench finished before the intruder bought: inconclusive"
    );
    let status = tokio::time::timeout(Duration::from_secs(120), run.wait())
        .await
        .unwrap()
        .unwrap();
    let mut stdout = String::new();
    use tokio::io::AsyncReadExt;
    run.stdout.take().unwrap().read_to_string(&mut stdout).await.unwrap();
    assert!(!status.success(), "the bench must fail: {stdout}");
    assert!(stdout.contains("[FAIL] remaining == remaining_before"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seckill_audit_reports_every_sale_and_fails_on_an_inconsistent_one() {
    let app = TestServer::spawn_with(Options {
        demo_stock: 10,
        ..Options::new()
    })
    .await;
    app.classic_buy().await;
    let sale = app.live_sale(5, 1).await;
    assert_eq!(app.buy(sale, "someone").await.0, 201);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_seckill"))
        .args(["audit", "--url", &app.base])
        .env("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("sale 1: stock 10 remaining 9 sold 1 stored 1 open 0 duplicates 0 → consistent"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("sale {sale}: stock 5 remaining 4 sold 1 stored 1")),
        "{stdout}"
    );

    // A row the gate never sold appears in the store behind the engine's back: the auditor
    // must notice (stored 2, sold 1).
    let conn = rusqlite::Connection::open(app.data_dir().join("seckill.sqlite3")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "INSERT INTO orders (order_id, sale_id, user_id, seq, created_at)
         SELECT order_id || '-phantom', sale_id, user_id, seq + 1, created_at FROM orders WHERE sale_id = ?1",
        [sale],
    )
    .unwrap();
    drop(conn);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_seckill"))
        .args(["audit", "--url", &app.base, "--sale", &sale.to_string()])
        .env("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("INCONSISTENT"), "{stdout}");
}
