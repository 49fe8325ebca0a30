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

/// Payments: 200 buyers on 50 units held for 2 s, half the winners pay. Every expired hold's
/// unit is bought again by a buyer still waiting, so the run ends with the stock paid for or
/// on sale, and the report's figures add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn winners_pay_or_let_expire_and_every_unit_ends_paid_or_on_sale() {
    const SECRET: &str = "bench-webhook-secret";
    let mut options = Options::new();
    options
        .env
        .push(("SECKILL_PAYMENT_WEBHOOK_SECRET".into(), SECRET.into()));
    let app = TestServer::spawn_with(options).await;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = bench()
        .args(["--url", &app.base, "--users", "200", "-c", "200", "--stock", "50"])
        .args(["--payment-window", "2", "--pay-ratio", "0.5", "--report"])
        .arg(&report)
        .env("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SECKILL_PAYMENT_WEBHOOK_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("payments/s") && stdout.contains("PASSED"), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let checks = r["invariants"].as_array().unwrap();
    assert!(checks.len() >= 8 && checks.iter().all(|c| c["passed"] == true), "{r}");
    let p = &r["payments"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v} in {r}"));
    let (holds, paid, let_expire, too_late) = (n(&p["holds"]), n(&p["paid"]), n(&p["let_expire"]), n(&p["too_late"]));
    // Every hold won was either paid (in time or too late) or left to expire.
    assert_eq!(holds, n(&r["counts"]["success"]), "{r}");
    assert_eq!((n(&p["already_paid"]), n(&p["webhook_errors"])), (0, 0), "{r}");
    assert_eq!(holds, paid + too_late + let_expire, "{r}");
    // Both branches ran (each has 50+ coin flips), and expired units were sold again.
    assert!(paid > 0 && let_expire > 0 && holds > 50, "{r}");
    // At rest: every unit paid or back on sale, every hold not paid expired.
    assert_eq!(n(&p["paid_at_rest"]), paid, "{r}");
    assert_eq!(n(&p["remaining_at_rest"]) + paid, 50, "{r}");
    assert_eq!(n(&p["expired"]), let_expire + too_late, "{r}");
    assert!(p["payments_per_s"].as_f64().unwrap() > 0.0, "{r}");
    let lag = p["at_rest_after_last_deadline_s"].as_f64().unwrap();
    assert!((-0.5..5.0).contains(&lag), "{r}");
    // The engine's own books agree.
    let audit = app.audit(n(&r["sale"]) as i64).await;
    assert_eq!(
        (n(&audit["paid"]), audit["consistent"].as_bool()),
        (paid, Some(true)),
        "{audit}"
    );
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

/// `seckill bench --waiting-room` against `app`: 1,000 pre-start and 200 post-start joiners at a
/// high rate; every check printed passes, and the report's figures add up.
async fn waiting_room_bench_passes(app: &TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = bench()
        .args(["--url", &app.base, "--waiting-room", "--admit-per-sec", "2000"])
        .args([
            "--pre-start",
            "1000",
            "--post-start",
            "200",
            "--start-delay",
            "8",
            "-c",
            "200",
        ])
        .arg("--report")
        .arg(&report)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in [
        "PASS only admitted buyers bought",
        "PASS admissions within the rate",
        "PASS post-start joiners in arrival order",
        "PASS pre-start joiners shuffled",
        "PASS nobody admitted twice",
        "PASS no admission after sell-out",
    ] {
        assert!(stdout.contains(check), "{check}: {stdout}");
    }
    assert!(stdout.contains("PASSED"), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    // The default stock: every pre-start joiner and half the post-start ones.
    assert_eq!(
        (r["stock"].as_u64(), r["bought"].as_u64()),
        (Some(1100), Some(1100)),
        "{r}"
    );
    assert!(
        r["sold_out"].as_u64().unwrap() > 0,
        "it sold out with buyers waiting: {r}"
    );
    let sale = r["sale"].as_i64().unwrap();
    let audit = app.audit(sale).await;
    assert_eq!(
        (audit["sold"].as_u64(), audit["consistent"].as_bool()),
        (Some(1100), Some(true)),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_bench_passes_embedded() {
    let app = TestServer::spawn().await;
    waiting_room_bench_passes(&app).await;
}

#[cfg(feature = "distributed")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_bench_passes_distributed() {
    let services = crate::helpers::Services::start().await;
    let app = TestServer::spawn_with(Options::distributed(&services)).await;
    waiting_room_bench_passes(&app).await;
}
