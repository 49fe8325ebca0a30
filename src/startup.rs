//! Builds the application from configuration: the one place where backends are chosen and wired.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::ServeConfig;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::gate::{MemoryGate, StockGate};
use crate::http::extract::AdminToken;
use crate::http::{router, AppState};
use crate::store::{OrderStore, SqliteStore};

/// A bound, ready-to-run engine.
pub struct Application<G, S> {
    listener: TcpListener,
    state: Arc<AppState<G, S>>,
}

/// The embedded default: in-process gate, SQLite store in `--data-dir`.
pub type EmbeddedApp = Application<MemoryGate, SqliteStore>;

impl EmbeddedApp {
    pub async fn build(config: &ServeConfig) -> Result<Self, ApiError> {
        let delay = std::time::Duration::from_millis(config.commit_delay_ms);
        let store = SqliteStore::open_with_commit_delay(&config.data_dir, delay)?;
        tracing::info!(path = %store.path().display(), "order store opened");
        let engine = Engine::start(MemoryGate::new(), store, config.demo_stock).await?;
        Application::bind(config, engine).await
    }
}

impl<G: StockGate, S: OrderStore> Application<G, S> {
    async fn bind(config: &ServeConfig, engine: Engine<G, S>) -> Result<Self, ApiError> {
        if config.admin_token.as_deref().is_none_or(str::is_empty) {
            tracing::warn!("SECKILL_ADMIN_TOKEN is not set: admin routes are disabled");
        }
        let listener = listen(config.listen)
            .map_err(|e| ApiError::Internal(format!("cannot listen on {}: {e}", config.listen)))?;
        let state = Arc::new(AppState {
            engine,
            admin: AdminToken::new(config.admin_token.clone()),
        });
        Ok(Application { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests and flushes the store.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = router(Arc::clone(&self.state));
        let served = axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await;
        self.state.engine.shutdown().await;
        served
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
