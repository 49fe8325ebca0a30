//! The consumer: reads order events from Kafka in batches and stores them in MySQL.
//!
//! Offsets are committed only after the batch's MySQL transaction commits, so a crash replays
//! the batch; the unique key turns the replay into no-ops. At-least-once delivery plus an
//! idempotent write is exactly-once storage. While MySQL is down the batch is retried with
//! backoff and nothing is committed.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::error::ApiError;
use crate::log::OrderEvent;
use crate::metrics::METRICS;
use crate::store::MySqlStore;

/// Most events per MySQL transaction.
const MAX_BATCH: usize = 10_000;
/// How long a batch waits for more events once it has one.
const BATCH_WINDOW: Duration = Duration::from_millis(5);

pub struct ConsumerSettings<'a> {
    pub brokers: &'a str,
    pub topic: &'a str,
    pub group: &'a str,
}

/// Runs until `shutdown` resolves; the batch in hand is stored and committed first.
pub async fn run(
    settings: ConsumerSettings<'_>,
    store: MySqlStore,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ApiError> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", settings.brokers)
        .set("group.id", settings.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| ApiError::Unavailable(format!("kafka consumer: {e}")))?;
    consumer
        .subscribe(&[settings.topic])
        .map_err(|e| ApiError::Unavailable(format!("kafka subscribe: {e}")))?;
    tracing::info!(topic = settings.topic, group = settings.group, "consumer started");
    tokio::pin!(shutdown);
    let mut orders = Vec::with_capacity(MAX_BATCH);
    let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
    loop {
        // Wait for the first event of a batch (or shutdown), then gather briefly.
        let first = tokio::select! {
            _ = &mut shutdown => break,
            m = consumer.recv() => m,
        };
        let mut next = Some(first);
        while let Some(received) = next.take() {
            match received {
                Ok(message) => {
                    offsets.insert((message.topic().to_owned(), message.partition()), message.offset());
                    match message.payload().map(serde_json::from_slice::<OrderEvent>) {
                        Some(Ok(event)) => match event.into_order() {
                            Ok(order) => orders.push(order),
                            Err(e) => {
                                tracing::error!(error = %e, offset = message.offset(), "invalid order event skipped")
                            }
                        },
                        _ => tracing::error!(offset = message.offset(), "unreadable order event skipped"),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "kafka consumer error"),
            }
            if orders.len() < MAX_BATCH {
                next = tokio::time::timeout(BATCH_WINDOW, consumer.recv()).await.ok();
            }
        }
        store_with_retry(&store, &orders).await;
        commit(&consumer, &offsets);
        orders.clear();
        offsets.clear();
    }
    tracing::info!("consumer stopped");
    Ok(())
}

/// MySQL may be down: retry with capped exponential backoff; the offsets wait.
async fn store_with_retry(store: &MySqlStore, orders: &[crate::domain::Order]) {
    if orders.is_empty() {
        return;
    }
    let mut backoff = Duration::from_millis(50);
    loop {
        match store.insert_orders(orders).await {
            Ok(inserted) => {
                METRICS.observe_commit(inserted as usize);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, batch = orders.len(), retry_in_ms = backoff.as_millis() as u64, "storing orders failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn commit(consumer: &StreamConsumer, offsets: &HashMap<(String, i32), i64>) {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        // The committed offset is the next one to read.
        if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(offset + 1)) {
            tracing::error!(error = %e, "bad offset");
        }
    }
    if list.count() > 0 {
        if let Err(e) = consumer.commit(&list, CommitMode::Sync) {
            // Not fatal: the batch is stored; a replay after a rebalance is ignored by the unique key.
            tracing::warn!(error = %e, "offset commit failed");
        }
    }
}
