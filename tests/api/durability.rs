//! A success answer means the order is on disk: across restarts, SIGKILL and SIGTERM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::{Options, TestServer};

#[tokio::test]
async fn a_restart_rebuilds_the_gate_and_never_resets_stock() {
    let app = TestServer::spawn_with(Options {
        demo_stock: 10,
        ..Options::new()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.classic_buy().await["ok"], true);
    }
    let sale = app.live_sale(5, 1).await;
    assert_eq!(app.buy(sale, "loyal").await.0, 201);

    // A different --demo-stock on restart must not re-create or reset the demo sale.
    let app = app
        .restart(Options {
            demo_stock: 999,
            ..Options::new()
        })
        .await;
    assert_eq!(app.count().await, 7);
    assert_eq!(app.buy(sale, "loyal").await.0, 409, "the gate remembers who bought");
    let (_, view) = app.get(&format!("/api/sales/{sale}")).await;
    assert_eq!(view["remaining"], 4);
    assert_eq!(app.audit(1).await["consistent"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_success_survives_kill_9_mid_load() {
    const STOCK: u64 = 50_000;
    // Each group commit is held 20 ms, so at the kill there are always queued, not-yet-durable
    // orders: none of them may have been answered as a success.
    let mut app = TestServer::spawn_with(Options {
        demo_stock: STOCK,
        commit_delay_ms: 20,
        ..Options::new()
    })
    .await;
    let sale = app.live_sale(STOCK, 1).await;
    let confirmed: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let base = app.base.clone();
    let client = app.client.clone();
    let workers: Vec<_> = (0..64)
        .map(|w| {
            let (confirmed, stop, base, client) =
                (Arc::clone(&confirmed), Arc::clone(&stop), base.clone(), client.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let user = format!("k{w}-{i}");
                    let sent = client
                        .post(format!("{base}/api/sales/{sale}/purchase"))
                        .header("x-user-id", &user)
                        .send()
                        .await;
                    let Ok(resp) = sent else { break }; // the server is gone
                    if resp.status() != 201 {
                        continue;
                    }
                    let Ok(body) = resp.json::<serde_json::Value>().await else {
                        break;
                    };
                    confirmed
                        .lock()
                        .unwrap()
                        .push((user, body["order_id"].as_str().unwrap().to_owned()));
                }
            })
        })
        .collect();
    // Let a few thousand purchases through, then pull the plug while requests are in flight.
    tokio::time::timeout(Duration::from_secs(30), async {
        while confirmed.lock().unwrap().len() < 1000 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("1000 purchases within 30 s");
    app.kill9().await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let confirmed = std::mem::take(&mut *confirmed.lock().unwrap());
    assert!(confirmed.len() >= 1000);

    let app = app.restart(Options::new()).await;
    let audit = app.audit(sale).await;
    assert_eq!(audit["consistent"], true, "{audit}");
    let stored = audit["stored"].as_u64().unwrap();
    assert!(
        stored >= confirmed.len() as u64,
        "{stored} stored < {} confirmed",
        confirmed.len()
    );
    // Every answered success is there, with the same order id.
    let checks = futures::future::join_all(confirmed.iter().map(|(user, order_id)| {
        let app = &app;
        async move {
            let (status, orders) = app.get(&format!("/api/sales/{sale}/orders/{user}")).await;
            status == 200 && orders["orders"][0]["order_id"] == order_id.as_str()
        }
    }))
    .await;
    let missing = checks.iter().filter(|ok| !**ok).count();
    assert_eq!(missing, 0, "{missing} confirmed orders lost after kill -9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_purchases_and_exits_cleanly() {
    let mut app = TestServer::spawn_with(Options {
        demo_stock: 100_000,
        ..Options::new()
    })
    .await;
    let successes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load: Vec<_> = (0..32)
        .map(|_| {
            let (client, url, successes) = (app.client.clone(), app.url("/seckill/seckill"), Arc::clone(&successes));
            tokio::spawn(async move {
                while let Ok(resp) = client.post(&url).send().await {
                    match resp.json::<serde_json::Value>().await {
                        Ok(body) if body["ok"] == true => successes.fetch_add(1, Ordering::Relaxed),
                        _ => break,
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = app.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    for l in load {
        let _ = l.await;
    }
    let app = app.restart(Options::new()).await;
    let audit = app.audit(1).await;
    assert_eq!(audit["consistent"], true, "{audit}");
    assert!(audit["stored"].as_u64().unwrap() >= successes.load(Ordering::Relaxed));
    assert!(successes.load(Ordering::Relaxed) > 0);
}

#[cfg(feature = "e2e")]
/// A tiny deterministic jitter (no RNG needed): 1..5 for any `n`.
fn jitter_ms(n: u64) -> u64 {
    1 + n.wrapping_mul(2_654_435_761) % 4
}

/// Needs root (a tmpfs of its own): runs in the full suite, not the laptop one.
#[cfg(feature = "e2e")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_that_fills_and_frees_never_makes_a_buyer_reuse_a_seq_or_locks_them_out() {
    let disk = Arc::new(crate::helpers::Tmpfs::mount(16));
    let options = Options {
        data_dir: Some(disk.path().to_path_buf()),
        ..Options::new()
    };
    let app = Arc::new(TestServer::spawn_with(options.clone()).await);
    let sale = app.live_sale(1_000_000, 3).await;

    // The disk is filled and freed every 1–5 ms while 3,000 buyers each fire 3 purchases at once:
    // now and then one buyer's purchases land in different group commits, a lower seq failing
    // while a higher one is stored. (Before seqs were never reused, the next unit of such a
    // buyer reused a stored seq: 500 for good. It takes a few such buyers per run to show.)
    let stop = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (disk, stop) = (Arc::clone(&disk), Arc::clone(&stop));
        tokio::task::spawn_blocking(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                disk.fill();
                std::thread::sleep(Duration::from_millis(jitter_ms(n)));
                disk.free();
                std::thread::sleep(Duration::from_millis(jitter_ms(n + 1)));
                n += 2;
            }
            disk.free();
        })
    };
    let answers = futures::future::join_all((0..3_000u64).map(|i| {
        let app = Arc::clone(&app);
        async move {
            tokio::time::sleep(Duration::from_millis(i)).await;
            let user = format!("disk-{i}");
            let three = futures::future::join_all((0..3).map(|_| app.buy(sale, &user))).await;
            (user, three)
        }
    }))
    .await;
    stop.store(true, Ordering::Relaxed);
    chaos.await.unwrap();

    let mut confirmed = std::collections::HashMap::<String, Vec<(u64, String)>>::new();
    for (user, three) in &answers {
        for (status, body) in three {
            if *status == 201 {
                let unit = (
                    body["seq"].as_u64().unwrap(),
                    body["order_id"].as_str().unwrap().to_owned(),
                );
                confirmed.entry(user.clone()).or_default().push(unit);
            }
        }
    }
    let failed = answers.iter().flat_map(|(_, t)| t).filter(|(s, _)| *s >= 500).count();
    assert!(failed > 0, "no purchase met a full disk: the test proves nothing");

    // With the disk free again, every buyer tops up to exactly the limit: no seq is taken twice,
    // nobody is locked out, every confirmed order is stored. And again after a restart.
    let app = Arc::into_inner(app).expect("one owner");
    let mut app = app;
    for round in 0..2 {
        for (user, _) in &answers {
            let mut held = confirmed.get(user).map_or(0, Vec::len);
            loop {
                let (status, body) = app.buy(sale, user).await;
                match status {
                    201 if round == 0 => {
                        held += 1;
                        let unit = (
                            body["seq"].as_u64().unwrap(),
                            body["order_id"].as_str().unwrap().to_owned(),
                        );
                        confirmed.entry(user.clone()).or_default().push(unit);
                    }
                    409 => break,
                    _ => panic!("round {round}: {user} holding {held} got {status}: {body}"),
                }
            }
            assert_eq!(held, 3, "{user}");
            let (status, orders) = app.get(&format!("/api/sales/{sale}/orders/{user}")).await;
            assert_eq!(status, 200, "{orders}");
            let stored: std::collections::HashSet<(u64, String)> = orders["orders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| (o["seq"].as_u64().unwrap(), o["order_id"].as_str().unwrap().to_owned()))
                .collect();
            let answered: std::collections::HashSet<(u64, String)> = confirmed[user].iter().cloned().collect();
            assert_eq!(stored, answered, "{user}: stored orders differ from the confirmed ones");
        }
        assert_eq!(app.audit(sale).await["consistent"], true);
        if round == 0 {
            app = app.restart(options.clone()).await;
        }
    }
}

/// A full disk is an outage the operator must end, not a fault of ours: purchases answer 503
/// `unavailable` with `Retry-After` (never 500), `/readyz` is 503 naming the store until a write
/// succeeds again, and a stampede against the full disk writes a few log lines, not one per
/// request. Needs root (a tmpfs of its own).
#[cfg(feature = "e2e")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_answers_503_makes_the_instance_unready_and_floods_no_log() {
    let disk = crate::helpers::Tmpfs::mount(4);
    let app = TestServer::spawn_with(Options {
        data_dir: Some(disk.path().to_path_buf()),
        ..Options::new()
    })
    .await;
    let sale = app.live_sale(1_000_000, 1).await;
    let (status, body) = app.buy(sale, "before-full").await;
    assert_eq!(status, 201, "{body}");
    let log_lines_before = app.log_tail(100_000).lines().count();

    disk.fill();
    let answers = futures::future::join_all((0..2_000).map(|i| {
        let app = &app;
        async move {
            let resp = app
                .client
                .post(app.url(&format!("/api/sales/{sale}/purchase")))
                .header("x-user-id", format!("full-{i}"))
                .send()
                .await
                .expect("POST");
            let status = resp.status().as_u16();
            let retry_after = resp.headers().get("retry-after").is_some();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            (status, retry_after, body)
        }
    }))
    .await;
    let refused: Vec<_> = answers.iter().filter(|(status, _, _)| *status != 201).collect();
    assert!(
        refused.len() > 1_000,
        "a full disk refused only {} purchases",
        refused.len()
    );
    for (status, retry_after, body) in &refused {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        assert!(*retry_after, "503 without Retry-After: {body}");
    }
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert!(ready.to_string().contains("sqlite"), "{ready}");
    let logged = app.log_tail(100_000).lines().count() - log_lines_before;
    assert!(logged < 100, "{logged} log lines for {} refusals", refused.len());

    disk.free();
    let started = std::time::Instant::now();
    loop {
        let (status, _) = app.get("/readyz").await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still unready after the disk was freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = app.buy(sale, "after-free").await;
    assert_eq!(status, 201, "{body}");
}

/// A data dir whose store file is not a database stops the start with SQLite's own words,
/// not "internal error".
#[tokio::test]
async fn a_store_file_that_is_not_a_database_is_named_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("seckill.sqlite3"), b"not a database, just garbage").expect("write");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_seckill"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SECKILL_LOG", "warn")
        .output()
        .await
        .expect("run seckill");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("file is not a database"), "{stderr}");
}
