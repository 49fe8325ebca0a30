//! Builds the application from configuration: the one place where backends are chosen and wired.
//!
//! Background work (the consumer, the reconciler, pruning rate-limit buckets) is spawned on one
//! [`TaskTracker`] and told to stop by one [`CancellationToken`]: on shutdown the server drains
//! first, the store flushes, then the token is cancelled and the tracker waited on.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::BackendError;
use crate::config::{redact_url, Backend, ConsumerConfig, ServeConfig};
use crate::consumer::{self, ConsumerSettings};
use crate::engine::Engine;
use crate::gate::{MemoryGate, RedisGate, StockGate};
use crate::http::extract::AdminToken;
use crate::http::identity::Authenticator;
use crate::http::limit::{Limiter, RateLimits};
use crate::http::purchase_token::PurchaseTokens;
use crate::http::{router, AppState};
use crate::log::KafkaLog;
use crate::metrics::RateLimitScope;
use crate::store::{DistributedStore, MySqlStore, OrderStore, SqliteStore};

/// Why the engine cannot start. Never an HTTP answer; printed with its whole cause chain.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        cause: std::io::Error,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// A bound, ready-to-run engine.
pub struct Application<G, S> {
    listener: TcpListener,
    state: Arc<AppState<G, S>>,
    /// Tells the background work to stop.
    stop: CancellationToken,
    background: TaskTracker,
}

/// The embedded default: in-process gate, SQLite store in `--data-dir`.
pub type EmbeddedApp = Application<MemoryGate, SqliteStore>;

/// The distributed mode: Redis gate, Kafka log, MySQL store.
pub type DistributedApp = Application<RedisGate, DistributedStore>;

impl EmbeddedApp {
    pub async fn build(config: &ServeConfig) -> Result<Self, StartupError> {
        let delay = Duration::from_millis(config.commit_delay_ms);
        let store = SqliteStore::open_with_commit_delay(&config.data_dir, delay)?;
        tracing::info!(path = %store.path().display(), "order store opened");
        let engine = Engine::start(MemoryGate::new(), store, config.demo_stock).await?;
        Application::bind(config, engine).await
    }
}

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
        let gate = RedisGate::connect(&d.redis_url, &d.redis_prefix, timeout).await?;
        KafkaLog::ensure_topic(&d.kafka_brokers, &d.kafka_topic, d.kafka_partitions, timeout * 5).await?;
        let log = Arc::new(KafkaLog::connect(
            &d.kafka_brokers,
            &d.kafka_topic,
            Duration::from_millis(d.kafka_timeout_ms),
        )?);
        let mysql = MySqlStore::connect(&d.database_url, d.database_max_connections, timeout * 5).await?;
        tracing::info!(redis = %redact_url(&d.redis_url), database = %redact_url(&d.database_url), kafka = %d.kafka_brokers, topic = %d.kafka_topic, "distributed backends connected");
        let publish_delay = Duration::from_millis(config.commit_delay_ms);
        let store = DistributedStore {
            log,
            mysql: mysql.clone(),
            publish_delay,
        };
        let engine = Engine::start(gate, store, config.demo_stock).await?;
        let app = Application::bind(config, engine).await?;
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

impl<G: StockGate, S: OrderStore> Application<G, S> {
    async fn bind(config: &ServeConfig, engine: Engine<G, S>) -> Result<Self, StartupError> {
        if config.admin_token.is_none() {
            tracing::warn!("SECKILL_ADMIN_TOKEN is not set: admin routes are disabled");
        }
        let ttl = Duration::from_secs(config.purchase_token_ttl_secs);
        let purchase_tokens = match &config.purchase_token_secret {
            Some(secret) => PurchaseTokens::new(secret.expose().as_bytes(), ttl),
            None => {
                if config.require_purchase_token && config.backend == Backend::Distributed {
                    tracing::warn!(
                        "SECKILL_PURCHASE_TOKEN_SECRET is not set: each instance signs with its own random key, \
                         so a token only works on the instance that issued it"
                    );
                }
                PurchaseTokens::with_random_key(ttl)
            }
        };
        let limits = Arc::new(RateLimits {
            ip: Limiter::new(RateLimitScope::Ip, config.rate_limit_ip, config.rate_limit_ip_burst),
            user: Limiter::new(
                RateLimitScope::User,
                config.rate_limit_user,
                config.rate_limit_user_burst,
            ),
            trust_forwarded_for: config.trust_forwarded_for,
        });
        let auth = Authenticator::from_config(config).map_err(|e| StartupError::Config(e.to_string()))?;
        let addr = config.listen;
        let listener = listen(addr).map_err(|cause| StartupError::Listen { addr, cause })?;
        let state = Arc::new(AppState {
            engine: engine.with_max_in_flight(config.max_inflight_purchases),
            admin: AdminToken::new(config.admin_token.clone()),
            body_timeout: Duration::from_millis(config.request_body_timeout_ms),
            auth,
            limits,
            purchase_tokens,
            require_purchase_token: config.require_purchase_token,
            route_table: OnceLock::new(),
        });
        let (stop, background) = (CancellationToken::new(), TaskTracker::new());
        background.spawn(prune_rate_limits(Arc::clone(&state.limits), stop.clone()));
        Ok(Application {
            listener,
            state,
            stop,
            background,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves; then drains in-flight requests, flushes the store, and
    /// stops the background work (the consumer stores and commits the batch in hand).
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = router(Arc::clone(&self.state));
        // The peer address costs an extension per request: only the per-IP limit needs it.
        let served = if self.state.limits.ip.enabled() {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await
        } else {
            axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await
        };
        self.state.engine.shutdown().await;
        self.stop.cancel();
        self.background.close();
        self.background.wait().await;
        served
    }
}

/// Forgets rate-limit buckets of clients gone quiet, so a crowd of one-time IPs does not pile up.
async fn prune_rate_limits(limits: Arc<RateLimits>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => limits.prune(),
        }
    }
}

/// Binds with a deep accept backlog: a stampede opens thousands of connections in the same
/// millisecond, and a full backlog costs each dropped SYN a one-second retry.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}
