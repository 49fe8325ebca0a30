//! The consumer: reads order events from Kafka in batches and stores them in MySQL.
//!
//! Offsets are committed only after the batch's MySQL transaction commits, so a crash replays
//! the batch; the unique key turns the replay into no-ops. At-least-once delivery plus an
//! idempotent write is exactly-once storage. While MySQL is down the batch is retried with
//! backoff and nothing is committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::backend::{BackendError, Role};
use crate::domain::Order;
use crate::log::OrderEvent;
use crate::metrics::METRICS;
use crate::store::MySqlStore;

/// Most events the reader gathers into one batch.
const MAX_BATCH: usize = 10_000;
/// Most events the writer merges into one MySQL transaction.
const MAX_MERGED: usize = 50_000;
/// How long a batch waits for more events once it has one.
const BATCH_WINDOW: Duration = Duration::from_millis(5);

pub struct ConsumerSettings<'a> {
    pub brokers: &'a str,
    pub topic: &'a str,
    pub group: &'a str,
}

impl<'a> From<&'a crate::config::DistributedConfig> for ConsumerSettings<'a> {
    fn from(d: &'a crate::config::DistributedConfig) -> Self {
        ConsumerSettings {
            brokers: &d.kafka_brokers,
            topic: &d.kafka_topic,
            group: &d.kafka_group,
        }
    }
}

type LogConsumer = StreamConsumer;

/// How often the consumer's lag is measured for `/metrics`.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// How long one measurement may wait for the broker.
const LAG_TIMEOUT: Duration = Duration::from_millis(800);

/// Measures the lag (events in the log not yet committed as stored, over this consumer's
/// partitions) on a timer of its own. librdkafka's statistics would do, but they are delivered
/// only while the stream is polled, and the reader stops polling exactly when storing is stuck:
/// the lag would freeze when it matters.
async fn report_lag(consumer: Arc<LogConsumer>) {
    let mut every = tokio::time::interval(LAG_EVERY);
    loop {
        every.tick().await;
        let consumer = Arc::clone(&consumer);
        let measured = tokio::task::spawn_blocking(move || lag(&consumer)).await;
        // A broker that does not answer leaves the last value in place.
        if let Ok(Some(lag)) = measured {
            METRICS.set_consumer_lag(lag);
        }
    }
}

/// Σ (high watermark − committed offset) over the assigned partitions; `None` if the broker
/// cannot tell now. The high watermark is the one librdkafka's fetcher last saw (it keeps
/// fetching ahead while the reader waits), not a fresh query: that costs no round trip, and
/// some Kafka-protocol brokers answer a watermark query with the last batch's first offset.
fn lag(consumer: &LogConsumer) -> Option<u64> {
    let assignment = consumer.assignment().ok()?;
    let committed = consumer.committed_offsets(assignment, LAG_TIMEOUT).ok()?;
    let mut lag = 0;
    for partition in committed.elements() {
        let topic = std::ffi::CString::new(partition.topic()).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client pointer lives as long as `consumer`; the topic is a valid C
        // string for the call; librdkafka only writes the two offsets.
        let known = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                partition.partition(),
                &mut low,
                &mut high,
            )
        };
        if known != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || high < 0 {
            continue; // not fetched from yet: nothing known to be pending
        }
        let stored = match partition.offset() {
            Offset::Offset(offset) => offset,
            // Nothing committed yet: everything from the start of the log is pending.
            _ => low.max(0),
        };
        lag += (high - stored).max(0) as u64;
    }
    Some(lag)
}

/// Offsets to commit: the last offset read per partition of the one topic read.
type Offsets = HashMap<i32, i64>;

/// How long the reader waits (times the attempt) before it reads a hole again.
const GAP_PAUSE: Duration = Duration::from_millis(20);
/// How often the reader rewinds to a missing offset before it accepts the gap.
const GAP_RETRIES: u32 = 5;

/// What to do with a message, given the offsets read before it in its partition.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// In order (or a replay, which the store ignores): store it.
    Store,
    /// Offsets are missing before it: drop it, wait, and read the partition again from `from`.
    Rewind { from: i64, attempt: u32 },
}

/// Checks that each partition is read without holes.
///
/// The producer is idempotent and not transactional and the topic is not compacted, so a
/// partition's offsets are dense: a hole means the broker showed a later batch before an
/// earlier one was readable (tansu's object-store engines advance the high watermark before
/// they write the batch), and reading on would skip acknowledged orders for good. The reader
/// goes back for what is missing instead, a few times, and accepts a hole that stays (a broker
/// that leaves holes on purpose: a log compacted by hand, aborted transactions), loudly.
#[derive(Default)]
struct Contiguity {
    /// Per partition: the next offset expected, and the rewinds made to reach it.
    expected: HashMap<i32, (i64, u32)>,
}

impl Contiguity {
    fn next(&mut self, partition: i32, offset: i64) -> Next {
        let entry = self.expected.entry(partition).or_insert((offset, 0));
        let (expected, attempts) = *entry;
        if offset <= expected {
            *entry = (offset + 1, 0);
            return Next::Store;
        }
        if attempts >= GAP_RETRIES {
            tracing::error!(
                partition,
                missing_from = expected,
                next = offset,
                "the log has a hole: reading on"
            );
            *entry = (offset + 1, 0);
            return Next::Store;
        }
        entry.1 += 1;
        Next::Rewind {
            from: expected,
            attempt: attempts + 1,
        }
    }
}

/// Runs until `shutdown` resolves; what was read is stored and committed first.
///
/// Two stages overlap: this task reads and parses events while a writer task stores the
/// previous batch. Batches read during a write are merged into one transaction, so under load
/// MySQL sees few, large transactions (one fsync each) instead of many small ones.
pub async fn run(
    settings: ConsumerSettings<'_>,
    store: MySqlStore,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BackendError> {
    let consumer: Arc<LogConsumer> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", settings.brokers)
            .set("group.id", settings.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Large fetches and a short broker-side wait: a drain after a stampede is
            // throughput-bound, and an idle consumer costs little either way.
            .set("fetch.wait.max.ms", "20")
            .set("max.partition.fetch.bytes", "16777216")
            .set("fetch.max.bytes", "134217728")
            .create()
            .map_err(|e| BackendError::unavailable(Role::Log, e))?,
    );
    consumer
        .subscribe(&[settings.topic])
        .map_err(|e| BackendError::unavailable(Role::Log, e))?;
    tracing::info!(topic = settings.topic, group = settings.group, "consumer started");
    // Two batches in flight at most: reading stays ahead of writing, memory stays bounded.
    let (batches, pending) = mpsc::channel::<(Vec<Order>, Offsets)>(2);
    let topic = settings.topic.to_owned();
    let writer = tokio::spawn(write_batches(Arc::clone(&consumer), topic.clone(), store, pending));
    let mut contiguity = Contiguity::default();
    let lag_reporter = tokio::spawn(report_lag(Arc::clone(&consumer)));
    tokio::pin!(shutdown);
    loop {
        // Wait for the first event of a batch (or shutdown), then gather briefly.
        let first = tokio::select! {
            _ = &mut shutdown => break,
            m = consumer.recv() => m,
        };
        let mut orders = Vec::with_capacity(1024);
        let mut offsets = Offsets::new();
        let mut next = Some(first);
        while let Some(received) = next.take() {
            match received {
                Ok(message) => {
                    if let Next::Rewind { from, attempt } = contiguity.next(message.partition(), message.offset()) {
                        METRICS.observe_consumer_rewind();
                        tracing::warn!(
                            partition = message.partition(),
                            missing_from = from,
                            next = message.offset(),
                            attempt,
                            "offsets missing in the log: reading them again"
                        );
                        // The missing batch is being written: give the broker a moment.
                        tokio::time::sleep(GAP_PAUSE * attempt).await;
                        if let Err(e) = consumer.seek(&topic, message.partition(), Offset::Offset(from), Duration::ZERO)
                        {
                            tracing::warn!(error = %e, partition = message.partition(), "cannot rewind the partition");
                        }
                        // What was gathered so far is stored; the rest of this partition comes again.
                        break;
                    }
                    offsets.insert(message.partition(), message.offset());
                    read_events(message.payload().unwrap_or_default(), message.offset(), &mut orders);
                }
                Err(e) => tracing::warn!(error = %e, "kafka consumer error"),
            }
            if orders.len() < MAX_BATCH {
                // A message already fetched is taken without arming a timer: during a drain
                // that is nearly every one of them.
                next = match consumer.recv().now_or_never() {
                    Some(ready) => Some(ready),
                    None => tokio::time::timeout(BATCH_WINDOW, consumer.recv()).await.ok(),
                };
            }
        }
        if batches.send((orders, offsets)).await.is_err() {
            break;
        }
    }
    drop(batches);
    let _ = writer.await;
    lag_reporter.abort();
    let _ = lag_reporter.await;
    // Closing leaves the group and may wait on the broker: off the async workers too.
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    tracing::info!("consumer stopped");
    Ok(())
}

/// Adds the orders of one record: a group of events (a JSON array) or a single event.
fn read_events(payload: &[u8], offset: i64, orders: &mut Vec<Order>) {
    let mut add = |event: OrderEvent<'_>| match event.into_order() {
        Ok(order) => orders.push(order),
        Err(e) => tracing::error!(error = %e, offset, "invalid order event skipped"),
    };
    let parsed = match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => {
            serde_json::from_slice::<Vec<OrderEvent>>(payload).map(|events| events.into_iter().for_each(&mut add))
        }
        _ => serde_json::from_slice::<OrderEvent>(payload).map(&mut add),
    };
    if let Err(e) = parsed {
        tracing::error!(error = %e, offset, "unreadable order record skipped");
    }
}

/// Stores batches (merging whatever is queued), then commits their offsets. A batch's offsets
/// are committed while the next batch is written (MySQL does not wait for the broker), always
/// after that batch's own MySQL commit and in order.
async fn write_batches(
    consumer: Arc<LogConsumer>,
    topic: String,
    store: MySqlStore,
    mut pending: mpsc::Receiver<(Vec<Order>, Offsets)>,
) {
    let mut committing: Option<tokio::task::JoinHandle<()>> = None;
    while let Some((mut orders, mut offsets)) = pending.recv().await {
        while orders.len() < MAX_MERGED {
            let Ok((more, more_offsets)) = pending.try_recv() else {
                break;
            };
            orders.extend(more);
            for (partition, offset) in more_offsets {
                let last = offsets.entry(partition).or_insert(offset);
                *last = (*last).max(offset);
            }
        }
        // Order ids are time-ordered (UUIDv7) and the primary key: sorted, a batch from many
        // partitions lands in the B-tree as an append instead of scattered page splits.
        orders.sort_unstable_by_key(|o| o.order_id);
        store_with_retry(&store, &orders).await;
        if let Some(previous) = committing.take() {
            let _ = previous.await;
        }
        // A synchronous commit blocks its thread until the broker answers (a stalled broker:
        // for its whole timeout), so it runs on the blocking pool, never on an async worker
        // that is also answering buyers.
        let (committer, topic) = (Arc::clone(&consumer), topic.clone());
        committing = Some(tokio::task::spawn_blocking(move || {
            commit(&committer, &topic, &offsets)
        }));
    }
    if let Some(last) = committing {
        let _ = last.await;
    }
}

/// MySQL may be down: retry with capped exponential backoff; the offsets wait.
async fn store_with_retry(store: &MySqlStore, orders: &[Order]) {
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
                tracing::warn!(error = %e.chain(), batch = orders.len(), retry_in_ms = backoff.as_millis() as u64, "storing orders failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn commit(consumer: &LogConsumer, topic: &str, offsets: &Offsets) {
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn order(i: u32) -> Order {
        Order {
            order_id: uuid::Uuid::now_v7(),
            sale_id: crate::domain::SaleId(1),
            user_id: crate::domain::UserId::parse(&format!("u{i}")).expect("valid"),
            seq: 1,
            created_at: 0,
            state: crate::domain::OrderState::Confirmed,
            pay_by: None,
            payment: None,
        }
    }

    #[test]
    fn a_record_carries_one_event_or_a_group() {
        let (a, b) = (order(1), order(2));
        let one = serde_json::to_vec(&OrderEvent::from(&a)).expect("json");
        let group = serde_json::to_vec(&[OrderEvent::from(&a), OrderEvent::from(&b)]).expect("json");
        let mut orders = Vec::new();
        read_events(&one, 0, &mut orders);
        read_events(&group, 1, &mut orders);
        read_events(b"not json", 2, &mut orders);
        read_events(b"[{\"broken\": 1}]", 3, &mut orders);
        assert_eq!(orders, vec![a.clone(), a, b]);
    }

    #[test]
    fn dense_offsets_and_replays_are_stored() {
        let mut c = Contiguity::default();
        for offset in [40, 41, 42] {
            assert_eq!(c.next(0, offset), Next::Store);
        }
        // Another partition starts wherever it starts.
        assert_eq!(c.next(1, 7), Next::Store);
        // A replay (after a rebalance) is stored again; the store ignores it.
        assert_eq!(c.next(0, 41), Next::Store);
        assert_eq!(c.next(0, 42), Next::Store);
    }

    #[test]
    fn a_hole_is_read_again_until_it_fills() {
        let mut c = Contiguity::default();
        assert_eq!(c.next(0, 10), Next::Store);
        assert_eq!(c.next(0, 15), Next::Rewind { from: 11, attempt: 1 });
        assert_eq!(c.next(0, 15), Next::Rewind { from: 11, attempt: 2 });
        // The missing batch is readable now: reading goes on from it, the count starts over.
        for offset in 11..=15 {
            assert_eq!(c.next(0, offset), Next::Store);
        }
        assert_eq!(c.next(0, 20), Next::Rewind { from: 16, attempt: 1 });
    }

    #[test]
    fn a_hole_that_stays_is_accepted_after_the_retries() {
        let mut c = Contiguity::default();
        assert_eq!(c.next(3, 0), Next::Store);
        for attempt in 1..=GAP_RETRIES {
            assert_eq!(c.next(3, 5), Next::Rewind { from: 1, attempt });
        }
        assert_eq!(c.next(3, 5), Next::Store);
        assert_eq!(c.next(3, 6), Next::Store);
    }
}
