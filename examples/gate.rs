//! The distributed gate alone (no log, no store): how many reservations one sale takes per
//! second, and what each costs Redis: CPU from each node's `INFO cpu`, round trips from the
//! gate's metrics. Every reservation is confirmed, as the engine does once its order is durable.
//!
//! `cargo run --release --example gate -- --redis redis://127.0.0.1:6379 --shards 1 --secs 5`
//! (`--cluster` with a comma-separated list of every master; bench/shards.sh runs it.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use seckill::domain::{now_millis, GateState, Sale, SaleId, SaleSpec, UserId};
use seckill::gate::{RedisGate, RedisTarget, StockGate};
use seckill::metrics::{RedisCall, METRICS};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

/// CPU seconds (user + system) each node has used, from `INFO cpu`.
async fn cpu_seconds(nodes: &[String]) -> anyhow::Result<Vec<f64>> {
    let mut used = Vec::with_capacity(nodes.len());
    for url in nodes {
        let mut conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
        let field = |name: &str| -> f64 {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        used.push(field("used_cpu_sys") + field("used_cpu_user"));
    }
    Ok(used)
}

/// Deletes the run's keys from every node, one key at a time (a cluster refuses a multi-key
/// delete across slots).
async fn clean(nodes: &[String], prefix: &str) -> anyhow::Result<()> {
    for url in nodes {
        let mut conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut conn)
            .await?;
        for key in keys {
            let _: i64 = redis::cmd("UNLINK").arg(&key).query_async(&mut conn).await?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let urls = arg("--redis", "redis://127.0.0.1:6379");
    let cluster = std::env::args().any(|a| a == "--cluster");
    let shards: u16 = arg("--shards", "1").parse()?;
    let buyers: usize = arg("--buyers", "100").parse()?;
    let secs: u64 = arg("--secs", "5").parse()?;
    let nodes: Vec<String> = urls.split(',').map(str::to_owned).collect();
    let target = RedisTarget::parse(&urls, cluster).map_err(anyhow::Error::msg)?;
    let prefix = format!("gatebench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let gate = Arc::new(RedisGate::connect(&target, &prefix, Duration::from_secs(5)).await?);
    let sale = Arc::new(Sale {
        id: SaleId(1),
        spec: SaleSpec {
            name: "bench".into(),
            stock: 1_000_000_000,
            starts_at: None,
            ends_at: None,
            per_user_limit: 1,
            demo: false,
            payment_window_secs: 0,
            waiting_room: None,
            stock_shards: shards,
        },
        created_at: 0,
    });
    gate.load_sale(Arc::clone(&sale), GateState::default()).await?;

    let reserved = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_seconds(&nodes).await?;
    let calls_before = METRICS.redis_calls(RedisCall::Reserve);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..buyers)
        .map(|b| {
            let (gate, reserved) = (Arc::clone(&gate), Arc::clone(&reserved));
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let Ok(user) = UserId::parse(&format!("g{b}-{n}")) else {
                        break;
                    };
                    if let Ok(r) = gate.reserve(SaleId(1), &user, now_millis()).await {
                        gate.confirm(&r);
                        reserved.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The last confirmations leave in the background: give them a moment before reading CPU.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_after = cpu_seconds(&nodes).await?;
    let calls = METRICS.redis_calls(RedisCall::Reserve) - calls_before;
    let reserved = reserved.load(Ordering::Relaxed).max(1) as f64;
    let per_node: Vec<String> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(b, a)| format!("{:.2}", (a - b) * 1e6 / reserved))
        .collect();
    let total: f64 = cpu_before.iter().zip(&cpu_after).map(|(b, a)| a - b).sum();
    println!(
        "stock_shards {shards}: {:.0} reservations/s, redis CPU {:.2} µs per reservation (per node: {}), {:.3} reserve calls per reservation",
        reserved / elapsed,
        total * 1e6 / reserved,
        per_node.join(", "),
        calls as f64 / reserved
    );
    clean(&nodes, &prefix).await?;
    Ok(())
}
