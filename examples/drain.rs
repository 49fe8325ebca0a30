//! Consumer drain benchmark: how fast the consumer moves orders from Kafka into MySQL,
//! as a ratio to a plain multi-row INSERT of the same rows measured in the same run.
//!
//! `cargo run --release --example drain -- --orders 1000000 --brokers 127.0.0.1:9092`
//! (bench/ratio.sh runs it against a tansu broker of its own.)

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use seckill::domain::{Order, SaleId, UserId};
use seckill::log::{KafkaLog, OrderEvent};
use seckill::metrics::METRICS;
use seckill::store::MySqlStore;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let orders: usize = arg("--orders", "1000000").parse()?;
    let brokers = arg("--brokers", "127.0.0.1:9092");
    let mysql = arg("--mysql", "mysql://root@127.0.0.1:3306");
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let topic = format!("drain-{run}");
    let rows: Vec<Order> = (0..orders)
        .map(|i| Order {
            order_id: uuid::Uuid::now_v7(),
            sale_id: SaleId(1),
            user_id: UserId::parse(&format!("drain-{i}")).expect("valid id"),
            seq: 1,
            created_at: 0,
            state: seckill::domain::OrderState::Confirmed,
            pay_by: None,
            payment: None,
        })
        .collect();

    // Baseline: the same rows, multi-row INSERTs of 10,000, straight into MySQL.
    let baseline_db = MySqlStore::connect(&format!("{mysql}/drain_base_{run}"), 4, Duration::from_secs(10)).await?;
    let started = Instant::now();
    for chunk in rows.chunks(10_000) {
        baseline_db.insert_orders(chunk).await?;
    }
    let baseline = orders as f64 / started.elapsed().as_secs_f64();
    println!("plain multi-row INSERT: {orders} rows at {baseline:.0} rows/s");
    // Each phase starts from the same state: the baseline's rows must not crowd the buffer pool.
    baseline_db.close().await;
    drop_database(&format!("drain_base_{run}"));

    // Fill the topic first, so the consumer's rate is measured alone.
    KafkaLog::ensure_topic(&brokers, &topic, 8, Duration::from_secs(10)).await?;
    let producer: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let started = Instant::now();
    for order in &rows {
        let payload = serde_json::to_vec(&OrderEvent::from(order))?;
        let key = format!("1/{}", order.user_id);
        let mut record = BaseRecord::to(&topic).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back; // queue full: let it drain
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).context("flushing the topic")?;
    println!(
        "topic filled: {orders} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let store = MySqlStore::connect(&format!("{mysql}/drain_consumer_{run}"), 4, Duration::from_secs(10)).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer_store = store.clone();
    let (b, t) = (brokers.clone(), topic.clone());
    let consumer = tokio::spawn(async move {
        let settings = seckill::consumer::ConsumerSettings {
            brokers: &b,
            topic: &t,
            group: "drain-bench",
        };
        seckill::consumer::run(settings, consumer_store, async {
            let _ = stopped.await;
        })
        .await
    });
    // Progress is read from the consumer's own count of rows committed to MySQL (it runs in
    // this process), not from MySQL: an audit query over the growing table, polled throughout,
    // would take MariaDB's CPU from the very writes it measures (the baseline has no such load).
    let committed_before = METRICS.committed_orders();
    let started = Instant::now();
    loop {
        let committed = METRICS.committed_orders() - committed_before;
        if committed as usize >= orders {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "consumer stalled at {committed}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained = orders as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = consumer.await;
    // Then, untimed, MySQL is asked whether every row is there.
    let stored = store.audit(SaleId(1), 1).await?.stored;
    anyhow::ensure!(stored as usize == orders, "MySQL holds {stored} of {orders} orders");
    println!("consumer drain: {orders} rows at {drained:.0} rows/s");
    println!("ratio {:.2}", drained / baseline);
    store.close().await;
    drop_database(&format!("drain_consumer_{run}"));
    Ok(())
}

fn drop_database(name: &str) {
    let _ = std::process::Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-uroot", "-e"])
        .arg(format!("DROP DATABASE IF EXISTS {name}"))
        .status();
}
