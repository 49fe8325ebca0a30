//! Builds the application from configuration: the one place where backends are chosen and wired.
//!
//! Background work (the consumer, the reconciler, pruning rate-limit buckets) is spawned on one
//! [`TaskTracker`] and told to stop by one [`CancellationToken`]: on shutdown the server drains
//! first, the store flushes, then the token is cancelled and the tracker waited on.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::BackendError;
use crate::config::{Backend, ServeConfig};
use crate::domain::{Millis, SaleId};
use crate::engine::Engine;
use crate::gate::{MemoryGate, StockGate};
use crate::http::extract::AdminToken;
use crate::http::identity::Authenticator;
use crate::http::limit::{Limiter, RateLimits};
use crate::http::purchase_token::PurchaseTokens;
use crate::http::{router, AppState};
use crate::metrics::RateLimitScope;
use crate::server::{self, ConnectionLimits};
use crate::store::{OrderStore, SqliteStore};
use crate::waiting_room::{MemoryWaitingRoom, WaitingRoom};

#[cfg(feature = "distributed")]
mod distributed;
#[cfg(feature = "distributed")]
pub use distributed::{run_consumer, DistributedApp};

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
    connections: ConnectionLimits,
    /// Tells the background work to stop.
    stop: CancellationToken,
    background: TaskTracker,
}

/// The embedded default: in-process gate, SQLite store in `--data-dir`.
pub type EmbeddedApp = Application<MemoryGate, SqliteStore>;

impl EmbeddedApp {
    pub async fn build(config: &ServeConfig) -> Result<Self, StartupError> {
        let delay = Duration::from_millis(config.commit_delay_ms);
        let store = SqliteStore::open_with_commit_delay(&config.data_dir, delay)?;
        tracing::info!(path = %store.path().display(), "order store opened");
        let engine = Engine::start(MemoryGate::new(), store, config.demo_stock, config.payment_window_secs).await?;
        // In memory: a restart loses the queue (buyers join again); see `waiting_room::memory`.
        Application::bind(config, engine, Arc::new(MemoryWaitingRoom::new())).await
    }
}

impl<G: StockGate, S: OrderStore> Application<G, S> {
    async fn bind(
        config: &ServeConfig,
        engine: Engine<G, S>,
        waiting_room: Arc<dyn WaitingRoom>,
    ) -> Result<Self, StartupError> {
        if config.admin_token.is_none() {
            tracing::warn!("SECKILL_ADMIN_TOKEN is not set: admin routes are disabled");
        }
        let ttl = Duration::from_secs(config.purchase_token_ttl_secs);
        // Admission tokens and join challenges verify on every instance that shares the
        // purchase-token secret, each under a key derived from it with its own label, so no kind
        // of token passes for another. Without the secret: a random key per process.
        let derived_key = |label: &[u8]| match &config.purchase_token_secret {
            Some(secret) => [secret.expose().as_bytes(), b"\0", label].concat(),
            None => crate::domain::random_key().to_vec(),
        };
        let admission_tokens = PurchaseTokens::new(&derived_key(b"admission"), ttl);
        let challenges = crate::http::challenge::Challenges::new(&derived_key(b"altcha"), config.altcha_difficulty);
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
        let connections = connection_limits(config);
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
            default_payment_window_secs: config.payment_window_secs,
            payments: crate::http::orders::Payments::new(
                config.payment_webhook_secret.as_ref(),
                config.payment_provider,
                config.payment_url.clone(),
            ),
            waiting_room,
            admission_tokens,
            admission_token_ttl_ms: config.purchase_token_ttl_secs.saturating_mul(1000),
            challenges,
            route_table: OnceLock::new(),
        });
        let (stop, background) = (CancellationToken::new(), TaskTracker::new());
        background.spawn(prune_rate_limits(Arc::clone(&state.limits), stop.clone()));
        let (expiring, stop_expiry) = (Arc::clone(&state), stop.clone());
        background.spawn(async move { crate::payment::expiry::run(&expiring.engine, stop_expiry).await });
        background.spawn(sweep_waiting_rooms(Arc::clone(&state), stop.clone()));
        let (healing, stop_healing) = (Arc::clone(&state), stop.clone());
        background.spawn(async move { crate::recovery::run(&healing.engine, stop_healing).await });
        Ok(Application {
            listener,
            state,
            connections,
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
        let connect_info = self.state.limits.ip.enabled();
        server::serve(self.listener, app, self.connections, connect_info, shutdown).await;
        self.state.waiting_room.flush(WAITING_ROOM_FLUSH).await;
        self.state.engine.shutdown().await;
        self.stop.cancel();
        self.background.close();
        self.background.wait().await;
        Ok(())
    }
}

/// How long a graceful shutdown waits for the waiting room's answered joins to be written.
const WAITING_ROOM_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// The connection caps and timeouts; raises the open-file limit first, since the default total
/// cap is derived from it.
fn connection_limits(config: &ServeConfig) -> ConnectionLimits {
    let open_files = match server::raise_open_files_limit() {
        Ok(limit) => {
            tracing::info!(limit, "open-file limit (RLIMIT_NOFILE)");
            limit
        }
        // Serving with the limit we have beats not serving; the default cap stays under it.
        Err(e @ server::ConnectionError::SetLimit { current, .. }) => {
            tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "open-file limit not raised");
            current
        }
        Err(e) => {
            tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "open-file limit unknown: assuming 1024");
            1024
        }
    };
    let limits = ConnectionLimits {
        max_connections: config
            .max_connections
            .unwrap_or_else(|| server::default_max_connections(open_files)),
        max_connections_per_ip: config.max_connections_per_ip,
        header_timeout: Duration::from_secs(config.header_timeout_secs.get() as u64),
        keep_alive_timeout: Duration::from_secs(config.keep_alive_timeout_secs.get() as u64),
    };
    tracing::info!(
        max_connections = limits.max_connections,
        max_connections_per_ip = limits.max_connections_per_ip,
        "connection caps"
    );
    limits
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

/// Expires abandoned tickets every second, so their slots go to the next tickets even when
/// nobody polls them again. A sale that can admit nobody any more (ended, or sold out with
/// nothing awaiting payment) is not swept: its queue is retired, so past sales' queues do not
/// live forever.
async fn sweep_waiting_rooms<G: StockGate, S: OrderStore>(state: Arc<AppState<G, S>>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    // Per sale: since when this instance has seen it sold out; and the queues already retired.
    let mut sold_out_since: HashMap<SaleId, Millis> = HashMap::new();
    let mut retired: HashSet<SaleId> = HashSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let now = crate::domain::now_millis();
        let rooms: Vec<_> = state
            .engine
            .cached()
            .values()
            .filter(|sale| sale.spec.waiting_room.is_some() && !retired.contains(&sale.id))
            .cloned()
            .collect();
        for sale in rooms {
            let done_at = match sale.spec.ends_at {
                Some(end) if now >= end => Some(end),
                _ => match state.engine.sale(sale.id).await {
                    // Sold out for good: no hold can give a unit back.
                    Ok(view) if view.remaining == 0 && view.awaiting_payment == 0 => {
                        Some(*sold_out_since.entry(sale.id).or_insert(now))
                    }
                    _ => {
                        sold_out_since.remove(&sale.id);
                        None
                    }
                },
            };
            let Some(done_at) = done_at else {
                if let Err(e) = state.waiting_room.sweep(&sale, now).await {
                    tracing::warn!(sale = %sale.id, error = %e.chain(), "waiting room sweep failed");
                }
                continue;
            };
            match state.waiting_room.retire(&sale, done_at, now).await {
                Ok(true) => {
                    retired.insert(sale.id);
                    sold_out_since.remove(&sale.id);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(sale = %sale.id, error = %e.chain(), "retiring a waiting room failed"),
            }
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
