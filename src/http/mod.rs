//! The HTTP layer: the classic `/seckill/*` API, the `/api/` routes, the pages and `/metrics`.
//!
//! Handlers only translate: parse the request into domain types (see [`extract`]), call the
//! [`Engine`], turn the result into JSON. Every error leaves as `{"error":{"code","message"}}`,
//! converted from the engine's and the backends' errors in [`error`], at this edge only. Every
//! route is written once, in [`routes()`] below: the router, its metrics slot and the API document's
//! check all come from that table.

use std::sync::{Arc, OnceLock};

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::Router;

use crate::domain::{now_millis, Sale, SaleId, UserId};
use crate::engine::Engine;
use crate::gate::StockGate;
use crate::store::OrderStore;
use crate::waiting_room::WaitingRoom;

pub mod challenge;
mod classic;
pub mod error;
pub mod extract;
pub mod identity;
pub mod limit;
pub mod observe;
pub mod openapi;
mod ops;
pub mod orders;
pub mod purchase_token;
mod queue;
pub mod routes;
mod sales;

pub use error::ApiError;
pub use ops::consumer_router;

use extract::AdminToken;
use identity::Authenticator;
use limit::RateLimits;
use purchase_token::PurchaseTokens;
use routes::{get, post, Kind, RouteInfo, Routes};

/// The largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 1 << 20;

pub struct AppState<G, S> {
    pub engine: Engine<G, S>,
    pub admin: AdminToken,
    /// How long a request body may take to arrive (408 past it).
    pub body_timeout: std::time::Duration,
    pub auth: Authenticator,
    pub limits: Arc<RateLimits>,
    pub purchase_tokens: PurchaseTokens,
    /// Purchases must carry a token from `GET /api/sales/{id}/token`.
    pub require_purchase_token: bool,
    /// Sales that name no payment window get this one.
    pub default_payment_window_secs: u32,
    pub payments: orders::Payments,
    /// The sales' waiting rooms (one backend for all).
    pub waiting_room: Arc<dyn WaitingRoom>,
    /// Admission tokens: the purchase tokens' mechanism under a key of their own, so neither
    /// token passes for the other.
    pub admission_tokens: PurchaseTokens,
    pub admission_token_ttl_ms: u64,
    /// The proof of work asked on joining a waiting room (`--altcha-difficulty`; off at 0).
    pub challenges: challenge::Challenges,
    /// The route table, once the router is built: the metrics' route names, by slot.
    pub(crate) route_table: OnceLock<Vec<RouteInfo>>,
}

/// Every route, once. The order is the metrics slots' order.
pub fn routes<G: StockGate, S: OrderStore>(limits: Arc<RateLimits>) -> Routes<Arc<AppState<G, S>>> {
    Routes::new(limits)
        .add("/", Kind::Plain, get(ops::page))
        .add("/admin", Kind::Plain, get(ops::admin_page))
        .add("/seckill/getCount", Kind::Plain, get(classic::get_count::<G, S>))
        .add("/seckill/seckill", Kind::Purchase, post(classic::purchase::<G, S>))
        .add(
            "/api/sales",
            Kind::Plain,
            get(sales::list::<G, S>).post(sales::create::<G, S>),
        )
        .add("/api/sales/{id}", Kind::Plain, get(sales::get::<G, S>))
        .add("/api/sales/{id}/audit", Kind::Plain, get(sales::audit::<G, S>))
        .add("/api/sales/{id}/token", Kind::Plain, get(sales::purchase_token::<G, S>))
        .add(
            "/api/sales/{id}/purchase",
            Kind::Purchase,
            post(sales::purchase::<G, S>),
        )
        .add("/api/sales/{id}/challenge", Kind::Plain, get(queue::challenge::<G, S>))
        .add("/api/sales/{id}/queue", Kind::Plain, post(queue::join::<G, S>))
        .add("/api/sales/{id}/queue/{ticket}", Kind::Plain, get(queue::poll::<G, S>))
        .add(
            "/api/sales/{id}/orders/{user_id}",
            Kind::Plain,
            get(sales::orders_of::<G, S>),
        )
        .add("/api/orders/{order_id}", Kind::Plain, get(orders::get::<G, S>))
        .add(
            "/api/orders/{order_id}/cancel",
            Kind::Plain,
            post(orders::cancel::<G, S>),
        )
        .add(
            "/api/orders/{order_id}/test-payment",
            Kind::Plain,
            post(orders::test_payment::<G, S>),
        )
        .add("/api/payments", Kind::Plain, get(orders::config::<G, S>))
        .add("/api/payments/webhook", Kind::Plain, post(orders::webhook::<G, S>))
        .add("/api/admin/stats", Kind::Plain, get(ops::admin_stats::<G, S>))
        .add("/api/openapi.json", Kind::Plain, get(ops::openapi_document))
        .add("/metrics", Kind::Monitoring, get(ops::metrics::<G, S>))
        .add("/healthz", Kind::Monitoring, get(ops::healthz))
        .add("/readyz", Kind::Monitoring, get(ops::readyz::<G, S>))
}

pub fn router<G: StockGate, S: OrderStore>(state: Arc<AppState<G, S>>) -> Router {
    let (router, table) = routes::<G, S>(Arc::clone(&state.limits)).finish();
    // One router per state: a second build has the same table.
    let _ = state.route_table.set(table);
    router.layer(DefaultBodyLimit::max(BODY_LIMIT)).with_state(state)
}

impl<G, S> AppState<G, S> {
    pub fn routes(&self) -> &[RouteInfo] {
        self.route_table.get().map_or(&[], Vec::as_slice)
    }

    /// The metrics label of each slot: the routes, then the unmatched requests.
    pub fn route_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.routes().iter().map(|r| r.path).collect();
        names.push(routes::UNMATCHED);
        names
    }

    /// With `--require-purchase-token`, the purchase must carry a live token for this buyer and sale.
    fn check_purchase_token(&self, token: Option<&HeaderValue>, sale: SaleId, user: &UserId) -> Result<(), ApiError> {
        if !self.require_purchase_token {
            return Ok(());
        }
        let token = token
            .ok_or(ApiError::PurchaseTokenRequired)?
            .to_str()
            .map_err(|_| ApiError::InvalidPurchaseToken)?;
        self.purchase_tokens.verify(token, sale, user, now_millis())
    }

    /// On a sale with a waiting room, the purchase must carry a live admission token for this
    /// buyer and sale (`GET /api/sales/{id}/queue/{ticket}` hands it out once admitted).
    fn check_admission(&self, token: Option<&HeaderValue>, sale: &Sale, user: &UserId) -> Result<(), ApiError> {
        if sale.spec.waiting_room.is_none() {
            return Ok(());
        }
        let token = token
            .ok_or(ApiError::AdmissionRequired)?
            .to_str()
            .map_err(|_| ApiError::InvalidAdmission)?;
        if self.admission_tokens.check(token, sale.id, user, now_millis()) {
            Ok(())
        } else {
            Err(ApiError::InvalidAdmission)
        }
    }
}
