//! The distributed mode's wiring: Redis gate, Kafka log, MySQL store, and the consumer and
//! reconciler that run beside the server.

use std::sync::Arc;
use std::time::Duration;

use super::{listen, Application, StartupError};
use crate::config::{redact_url, ConsumerConfig, ServeConfig};
use crate::consumer::{self, ConsumerSettings};
use crate::engine::Engine;
use crate::gate::{RedisGate, RedisTarget};
use crate::log::KafkaLog;
use crate::store::{DistributedStore, MySqlStore};
use crate::waiting_room::RedisWaitingRoom;

/// The distributed mode: Redis gate, Kafka log, MySQL store.
pub type DistributedApp = Application<RedisGate, DistributedStore>;

impl DistributedApp {
    pub async fn build(config: &ServeConfig) -> Result<Self, StartupError> {
        let d = &config.distributed;
        // The reconciler must never re-publish a reservation whose instance may still release it
        // (a publish that fails as "not persisted" within the Kafka timeout).
        if d.reconcile_after_ms < 2 * d.kafka_timeout_ms {
            return Err(StartupError::Config(format!(
                "--reconcile-after-ms ({}) must be at least twice --kafka-timeout-ms ({})",
                d.reconcile_after_ms, d.kafka_timeout_ms
            )));
        }
        let timeout = Duration::from_millis(d.backend_timeout_ms);
        let redis = RedisTarget::parse(&d.redis_url, d.redis_cluster).map_err(StartupError::Config)?;
        let gate = RedisGate::connect(&redis, &d.redis_prefix, timeout)
            .await?
            .with_replica_acks(d.redis_wait_replicas);
        KafkaLog::ensure_topic(&d.kafka_brokers, &d.kafka_topic, d.kafka_partitions, timeout * 5).await?;
        let log = Arc::new(KafkaLog::connect(
            &d.kafka_brokers,
            &d.kafka_topic,
            Duration::from_millis(d.kafka_timeout_ms),
        )?);
        let mysql = MySqlStore::connect(&d.database_url, d.database_max_connections, timeout * 5).await?;
        tracing::info!(redis = %redis.redacted(), database = %redact_url(&d.database_url), kafka = %d.kafka_brokers, topic = %d.kafka_topic, "distributed backends connected");
        let publish_delay = Duration::from_millis(config.commit_delay_ms);
        let store = DistributedStore {
            log,
            mysql: mysql.clone(),
            publish_delay,
            consumer_group: config.distributed.kafka_group.clone(),
        };
        // In Redis, on the gate's connection: every instance serves one queue, and a restart
        // loses none of it.
        let room = RedisWaitingRoom::new(gate.connection(), &d.redis_prefix);
        let engine = Engine::start(gate, store, config.demo_stock, config.payment_window_secs).await?;
        let app = Application::bind(config, engine, Arc::new(room)).await?;
        if !config.no_consumer {
            let (d, stop) = (d.clone(), app.stop.clone());
            app.background.spawn(async move {
                if let Err(e) = consumer::run(ConsumerSettings::from(&d), mysql, stop.cancelled_owned()).await {
                    tracing::error!(error = %e.chain(), "consumer stopped with an error");
                }
            });
        }
        let grace = Duration::from_millis(d.reconcile_after_ms);
        let (state, stop) = (Arc::clone(&app.state), app.stop.clone());
        app.background.spawn(async move {
            let (gate, log) = (state.engine.gate(), &state.engine.store().log);
            let every = (grace / 4).max(Duration::from_millis(100));
            crate::reconcile::run(gate, log, grace, every, stop.cancelled_owned()).await;
        });
        Ok(app)
    }
}

/// Runs the consumer alone (`seckill consumer`) until `shutdown` resolves, with its `/metrics`
/// on `--metrics-listen` when set.
pub async fn run_consumer(
    config: &ConsumerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartupError> {
    let d = &config.distributed;
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let listener = listen(addr).map_err(|cause| StartupError::Listen { addr, cause })?;
            let local = listener.local_addr().unwrap_or(addr);
            // Scripts and tests read this line to find the port when listening on port 0.
            println!("seckill consumer metrics on http://{local}");
            // A port for Prometheus on the operators' network, not for buyers: plain
            // `axum::serve`, without the buyers' accept loop and its caps.
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, crate::http::consumer_router()).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            }))
        }
        None => None,
    };
    let timeout = Duration::from_millis(d.backend_timeout_ms);
    let mysql = MySqlStore::connect(&d.database_url, d.database_max_connections, timeout * 5).await?;
    KafkaLog::ensure_topic(&d.kafka_brokers, &d.kafka_topic, d.kafka_partitions, timeout * 5).await?;
    let result = consumer::run(ConsumerSettings::from(d), mysql, shutdown).await;
    if let Some(server) = metrics {
        server.abort();
    }
    Ok(result?)
}
