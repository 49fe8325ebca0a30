//! Kafka order log: an idempotent producer with `acks=all`. `publish` returns only after the
//! broker acknowledged the order, and on failure says whether the order is certainly not in
//! the log (safe to return the unit to stock) or possibly is (it must not be resold).
//!
//! Orders go out in groups: what was published by the time the group task's turn comes (the
//! buyers one gate answer woke publish in the same turn) goes as one record, a JSON array of
//! events (a lone order: one event, as before). A stampede's thousand orders cost the
//! producer, the broker and the consumer a few dozen records instead of a thousand; an idle
//! log's order goes out at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::bindings::{rd_kafka_message_status, rd_kafka_msg_status_t};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use tokio::sync::{mpsc, oneshot};

use super::OrderEvent;
use crate::backend::{next_group, BackendError, Role};
use crate::domain::Order;

/// What the broker's answer (or its silence) means for one record, and so for each of its orders.
#[derive(Clone)]
enum Delivered {
    Persisted,
    NotPersisted(KafkaError),
    PossiblyPersisted(KafkaError),
}

/// Errors after which this producer's identity is burnt: only a new producer will do.
fn identity_lost(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::Fatal
        )
    )
}

/// How much longer than `message.timeout.ms` a buyer waits for librdkafka's verdict.
const DELIVERY_GRACE: Duration = Duration::from_millis(500);

struct AckContext;

impl ClientContext for AckContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): the producer queue for `/metrics`.
    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::metrics::METRICS.set_producer_queue(statistics.msg_cnt);
    }
}

/// One record in flight: who waits for it, and which producer sent it.
struct InFlight {
    answers: Vec<oneshot::Sender<(Delivered, u64)>>,
    generation: u64,
}

impl InFlight {
    fn answer(self, delivered: Delivered) {
        for answer in self.answers {
            let _ = answer.send((delivered.clone(), self.generation));
        }
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<InFlight>;

    fn delivery(&self, result: &DeliveryResult<'_>, in_flight: Self::DeliveryOpaque) {
        let delivered = match result {
            Ok(_) => Delivered::Persisted,
            Err((error, message)) => {
                // SAFETY: `message` is a live librdkafka message for the duration of this callback.
                let status = unsafe { rd_kafka_message_status(message.ptr()) };
                match status {
                    rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_NOT_PERSISTED => Delivered::NotPersisted(error.clone()),
                    _ => Delivered::PossiblyPersisted(error.clone()),
                }
            }
        };
        in_flight.answer(delivered);
    }
}

/// A producer that is destroyed on a thread of its own: librdkafka's destroy can wait for an
/// unresponsive broker, which must never stall the async workers answering buyers.
struct OwnedProducer(Option<ThreadedProducer<AckContext>>, u64);

impl std::ops::Deref for OwnedProducer {
    type Target = ThreadedProducer<AckContext>;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("present until drop")
    }
}

impl Drop for OwnedProducer {
    fn drop(&mut self) {
        if let Some(producer) = self.0.take() {
            let _ = std::thread::Builder::new()
                .name("kafka-producer-drop".into())
                .spawn(move || drop(producer));
        }
    }
}

/// Most orders in one record (about 200 bytes each: well inside Kafka's 1 MB message limit).
const MAX_GROUP: usize = 512;

/// An order waiting for the next record: its event, and who waits for the verdict.
struct Queued {
    event: Vec<u8>,
    answer: oneshot::Sender<(Delivered, u64)>,
}

pub struct KafkaLog {
    /// Also the brokers and the delivery timeout, which the group task needs too.
    producing: Arc<Producing>,
    queue: mpsc::UnboundedSender<Queued>,
    topic: String,
}

/// The producer, shared by the log and its group task.
struct Producing {
    /// Replaced whole when librdkafka reports a fatal error (an idempotent producer that was
    /// fenced cannot recover; a new instance, with a new producer id, can).
    producer: ArcSwap<OwnedProducer>,
    replacing: Mutex<()>,
    brokers: String,
    timeout: Duration,
}

impl KafkaLog {
    /// A producer whose every message is acknowledged or failed within `timeout`. Call it
    /// inside the runtime: it starts the task that sends the groups.
    pub fn connect(brokers: &str, topic: &str, timeout: Duration) -> Result<Self, BackendError> {
        let producing = Arc::new(Producing {
            producer: ArcSwap::from_pointee(OwnedProducer(Some(producer(brokers, timeout)?), 0)),
            replacing: Mutex::new(()),
            brokers: brokers.to_owned(),
            timeout,
        });
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(send_groups(Arc::clone(&producing), topic.to_owned(), queued));
        Ok(KafkaLog {
            producing,
            queue,
            topic: topic.to_owned(),
        })
    }
}

/// Sends what queued as one record per turn, until the log is dropped. It does not wait for
/// the broker: librdkafka pipelines the records, and its own batching (`linger.ms`) shares a
/// produce request between them.
async fn send_groups(producing: Arc<Producing>, topic: String, mut queued: mpsc::UnboundedReceiver<Queued>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut payload = Vec::new();
    // The buyers of one gate answer publish within one turn: without it nearly every record
    // carried one order.
    while next_group(&mut queued, &mut group, MAX_GROUP).await > 0 {
        crate::metrics::METRICS.observe_log_record(group.len());
        payload.clear();
        if let [one] = group.as_slice() {
            payload.extend_from_slice(&one.event);
        } else {
            payload.push(b'[');
            for (i, queued) in group.iter().enumerate() {
                if i > 0 {
                    payload.push(b',');
                }
                payload.extend_from_slice(&queued.event);
            }
            payload.push(b']');
        }
        let producer = producing.producer.load_full();
        let in_flight = InFlight {
            answers: group.drain(..).map(|q| q.answer).collect(),
            generation: producer.1,
        };
        // No key: the store applies events in any order, so any partition will do.
        let record = BaseRecord::<(), _, _>::with_opaque_to(&topic, Box::new(in_flight)).payload(&payload);
        if let Err((e, record)) = producer.send(record) {
            // Refused before leaving this process (queue full, producer failed): certainly not in the log.
            producing.replace_if_fatal(producer.1, &e);
            record.delivery_opaque.answer(Delivered::NotPersisted(e));
        }
    }
}

fn producer(brokers: &str, timeout: Duration) -> Result<ThreadedProducer<AckContext>, BackendError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Concurrent groups share produce requests: one broker round trip acknowledges many.
        // 1 ms, not more: every buyer waits it (bench/ratio.sh sold 31k/s at 1 ms, 23k–26k at
        // 2 ms, 15k at 5 ms; 0 ms sends each group alone and costs the broker more).
        .set("linger.ms", "1")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .set("message.timeout.ms", timeout.as_millis().to_string())
        .set("request.timeout.ms", timeout.as_millis().clamp(1, 30_000).to_string())
        // Bounds the other requests too (producer id, metadata), 60 s by default.
        .set("socket.timeout.ms", timeout.as_millis().clamp(10, 300_000).to_string())
        .set("statistics.interval.ms", "1000")
        .create_with_context(AckContext)
        .map_err(|e| BackendError::unavailable(Role::Log, e))
}

impl Producing {
    /// After a failed delivery: if the producer is dead for good, put a new one in its place.
    fn replace_if_fatal(&self, failed: u64, error: &KafkaError) {
        let Ok(_only_one) = self.replacing.lock() else { return };
        let current = self.producer.load_full();
        if current.1 != failed {
            return; // another buyer already replaced it
        }
        let (code, reason) = match current.client().fatal_error() {
            Some(fatal) => fatal,
            None if identity_lost(error) => (
                error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fatal),
                error.to_string(),
            ),
            None => return,
        };
        match producer(&self.brokers, self.timeout) {
            Ok(fresh) => {
                tracing::warn!(%code, %reason, "kafka producer hit a fatal error; replaced it");
                self.producer.store(Arc::new(OwnedProducer(Some(fresh), failed + 1)));
            }
            Err(e) => tracing::error!(error = %e.chain(), "cannot replace the failed kafka producer"),
        }
    }
}

impl KafkaLog {
    /// Creates the topic with `partitions` partitions unless it exists.
    pub async fn ensure_topic(
        brokers: &str,
        topic: &str,
        partitions: i32,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .map_err(|e| BackendError::unavailable(Role::Log, e))?;
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new()
            .operation_timeout(Some(timeout))
            .request_timeout(Some(timeout));
        let results = admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(|e| BackendError::unavailable(Role::Log, format!("creating topic {topic}: {e}")))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BackendError::unavailable(
                        Role::Log,
                        format!("creating topic {name}: {code}"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The longest a `publish` can wait for its verdict: an order published before some moment
    /// is in the log, or failed, by then.
    pub fn longest_delivery_wait(&self) -> Duration {
        self.producing.timeout + DELIVERY_GRACE
    }

    /// Whether consumer `group` has committed every partition of the topic up to its end
    /// (blocking: call it off the async workers).
    pub fn drained(&self, group: &str, timeout: Duration) -> Result<bool, BackendError> {
        let unavailable = |e: KafkaError| BackendError::unavailable(Role::Log, e);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.producing.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(unavailable)?;
        let metadata = consumer
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(unavailable)?;
        let mut partitions = TopicPartitionList::new();
        for topic in metadata.topics() {
            for partition in topic.partitions() {
                partitions.add_partition(&self.topic, partition.id());
            }
        }
        let committed = consumer.committed_offsets(partitions, timeout).map_err(unavailable)?;
        for element in committed.elements() {
            let (low, high) = consumer
                .fetch_watermarks(&self.topic, element.partition(), timeout)
                .map_err(unavailable)?;
            let next = match element.offset() {
                Offset::Offset(next) => next,
                _ => low,
            };
            if next < high {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Publishes `order` and waits for the broker's acknowledgement (of the record that
    /// carries it, with the orders published alongside).
    pub async fn publish(&self, order: &Order) -> Result<(), BackendError> {
        let event = serde_json::to_vec(&OrderEvent::from(order)).map_err(|e| BackendError::fault(Role::Log, e))?;
        let (answer, delivered) = oneshot::channel();
        if self.queue.send(Queued { event, answer }).is_err() {
            return Err(BackendError::fault(Role::Log, "the log's sending task has stopped"));
        }
        // librdkafka bounds delivery by message.timeout.ms, but some of its states (an idempotent
        // producer re-acquiring its id from a stalled broker) can hold messages longer: the buyer's
        // wait is bounded here, whatever happens inside. A late delivery is harmless: the unit
        // stays reserved and the reconciler's copy is ignored by the store.
        let Ok(delivered) = tokio::time::timeout(self.longest_delivery_wait(), delivered).await else {
            return Err(BackendError::outcome_unknown(
                Role::Log,
                format!("no delivery report within {:?}", self.longest_delivery_wait()),
            ));
        };
        match delivered {
            Ok((Delivered::Persisted, _)) => Ok(()),
            Ok((Delivered::NotPersisted(e), generation)) => {
                self.producing.replace_if_fatal(generation, &e);
                Err(BackendError::unavailable(Role::Log, e))
            }
            Ok((Delivered::PossiblyPersisted(e), generation)) => {
                self.producing.replace_if_fatal(generation, &e);
                Err(BackendError::outcome_unknown(Role::Log, e))
            }
            Err(_) => Err(BackendError::outcome_unknown(
                Role::Log,
                "the delivery report was dropped",
            )),
        }
    }

    /// The broker answers a metadata request for the topic within `timeout` (readiness).
    pub async fn ready(&self, timeout: Duration) -> Result<(), BackendError> {
        let producer = self.producing.producer.load_full();
        let topic = self.topic.clone();
        let answer = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map(|_| ())
                .map_err(|e| BackendError::unavailable(Role::Log, e))
        });
        answer.await.map_err(|e| BackendError::fault(Role::Log, e))?
    }

    /// Waits until every queued order is acknowledged or failed (graceful shutdown).
    pub fn flush(&self) {
        if let Err(e) = self.producing.producer.load().flush(self.producing.timeout) {
            tracing::error!(error = %e, "kafka producer flush incomplete");
        }
    }
}
