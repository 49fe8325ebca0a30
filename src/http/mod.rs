//! The HTTP layer: the seed's endpoints, the `/api/` routes, the buyer's page and `/metrics`.
//!
//! Handlers only translate: parse the request into domain types (see [`extract`]), call the
//! [`Engine`], turn the result into JSON. Every error leaves as `{"error":{"code","message"}}`.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::handler::HandlerWithoutStateExt;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde_json::json;
use tower_layer::Layer;

use crate::config::AuthMode;
use crate::domain::{format_millis, now_millis, NewSaleRequest, SaleId, SaleSpec, UserId};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::gate::StockGate;
use crate::metrics::{Snapshot, METRICS};
use crate::store::OrderStore;

pub mod extract;
pub mod identity;
pub mod limit;
pub mod observe;
pub mod openapi;
pub mod purchase_token;

use extract::{Admin, AdminToken, Buyer, JsonBody, MaybeBuyer, PathParams, PurchaseToken};
use identity::Authenticator;
use limit::RateLimits;
use purchase_token::PurchaseTokens;

/// The largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 1 << 20;

const PAGE: &str = include_str!("page.html");
const ADMIN_PAGE: &str = include_str!("admin.html");
const SEED_SOLD_OUT: &str = r#"{"messages":"抢完了","ok":false,"code":"sold_out"}"#;

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
}

type Shared<G, S> = State<Arc<AppState<G, S>>>;

/// Every route, as the metrics' `route` label; the index is the metrics' slot.
pub const ROUTES: [&str; 16] = [
    "/",
    "/admin",
    "/seckill/getCount",
    "/seckill/seckill",
    "/api/sales",
    "/api/sales/{id}",
    "/api/sales/{id}/audit",
    "/api/sales/{id}/token",
    "/api/sales/{id}/purchase",
    "/api/sales/{id}/orders/{user_id}",
    "/api/admin/stats",
    "/api/openapi.json",
    "/metrics",
    "/healthz",
    "/readyz",
    // Not a route: the slot of requests no route matched.
    "unmatched",
];
const _: () = assert!(ROUTES.len() <= crate::metrics::MAX_ROUTES);
/// Route slots of the buy path (the admin page's latency figures).
pub const PURCHASE_ROUTES: [usize; 2] = [route_index("/seckill/seckill"), route_index("/api/sales/{id}/purchase")];
/// Route slots exempt from the per-IP limit: monitoring must see an engine under attack.
pub const UNLIMITED_ROUTES: [usize; 3] = [route_index("/metrics"), route_index("/healthz"), route_index("/readyz")];

/// The metrics slot of requests no route matched (404s, mostly).
pub const UNMATCHED: usize = ROUTES.len() - 1;

/// The metrics slot of a route path. A path missing from [`ROUTES`] is a programming error: it
/// fails the build in a constant, and the start when the router is built.
pub const fn route_index(path: &str) -> usize {
    let mut i = 0;
    while i < UNMATCHED {
        if same(ROUTES[i].as_bytes(), path.as_bytes()) {
            return i;
        }
        i += 1;
    }
    panic!("a route path is missing from ROUTES")
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

pub fn router<G: StockGate, S: OrderStore>(state: Arc<AppState<G, S>>) -> Router {
    // Each route gets the observing layer with its own metrics slot, fixed here once.
    let limits = Arc::clone(&state.limits);
    let observe = move |path: &str| observe::ObserveLayer::new(Arc::clone(&limits), route_index(path));
    let not_found = observe::ObserveLayer::new(Arc::clone(&state.limits), UNMATCHED).layer(
        HandlerWithoutStateExt::into_service(|| async { ApiError::RouteNotFound }),
    );
    Router::new()
        .route("/", get(page).observed(observe("/")))
        .route("/admin", get(admin_page).observed(observe("/admin")))
        .route(
            "/seckill/getCount",
            get(seed_get_count::<G, S>).observed(observe("/seckill/getCount")),
        )
        .route(
            "/seckill/seckill",
            post(seed_purchase::<G, S>).observed(observe("/seckill/seckill")),
        )
        .route(
            "/api/sales",
            get(list_sales::<G, S>)
                .post(create_sale::<G, S>)
                .observed(observe("/api/sales")),
        )
        .route(
            "/api/sales/{id}",
            get(get_sale::<G, S>).observed(observe("/api/sales/{id}")),
        )
        .route(
            "/api/sales/{id}/audit",
            get(audit::<G, S>).observed(observe("/api/sales/{id}/audit")),
        )
        .route(
            "/api/sales/{id}/token",
            get(purchase_token::<G, S>).observed(observe("/api/sales/{id}/token")),
        )
        .route(
            "/api/sales/{id}/purchase",
            post(purchase::<G, S>).observed(observe("/api/sales/{id}/purchase")),
        )
        .route(
            "/api/sales/{id}/orders/{user_id}",
            get(orders_of::<G, S>).observed(observe("/api/sales/{id}/orders/{user_id}")),
        )
        .route(
            "/api/admin/stats",
            get(admin_stats::<G, S>).observed(observe("/api/admin/stats")),
        )
        .route(
            "/api/openapi.json",
            get(openapi_document).observed(observe("/api/openapi.json")),
        )
        .route("/metrics", get(metrics::<G, S>).observed(observe("/metrics")))
        .route("/healthz", get(healthz).observed(observe("/healthz")))
        .route("/readyz", get(readyz::<G, S>).observed(observe("/readyz")))
        .fallback_service(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Puts a route behind its [`observe::ObserveLayer`], its 405 answer included (set before the
/// layer, or the 405 would bypass it: no request id, not counted).
trait Observed {
    fn observed(self, layer: observe::ObserveLayer) -> Self;
}

impl<S: Clone + Send + Sync + 'static> Observed for MethodRouter<S> {
    fn observed(self, layer: observe::ObserveLayer) -> Self {
        self.fallback(|| async { ApiError::MethodNotAllowed }).layer(layer)
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// The page holds no data; everything it shows comes from admin routes that need the token.
async fn admin_page() -> Html<&'static str> {
    Html(ADMIN_PAGE)
}

async fn openapi_document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi::DOCUMENT).into_response()
}

/// Seed: `{"num": remaining}` of the demo sale.
async fn seed_get_count<G: StockGate, S: OrderStore>(State(app): Shared<G, S>) -> Result<Response, ApiError> {
    let num = app.engine.remaining(app.engine.demo_sale()).await?;
    Ok(Json(json!({ "num": num })).into_response())
}

/// Seed: a new anonymous buyer of the demo sale. The seed answered 200 with a message either
/// way; we keep that, add `ok`/`code`/`order_id`, and use real statuses only for our faults.
/// A buyer who names themselves (or must: `--auth jwt`, purchase tokens) buys as themselves.
async fn seed_purchase<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    MaybeBuyer(buyer): MaybeBuyer,
    PurchaseToken(token): PurchaseToken,
) -> Result<Response, ApiError> {
    let outcome = match buyer {
        Some(user) => {
            let sale = app.engine.demo_sale();
            check_purchase_token(&app, token.as_ref(), sale, &user)?;
            app.engine.purchase(sale, user).await
        }
        None => app.engine.purchase_anonymous().await,
    };
    match outcome {
        Ok(c) => Ok(Json(json!({
            "messages": format!("购买成功，还剩下{}个", c.remaining),
            "ok": true,
            "order_id": c.order_id,
            "user_id": c.user_id,
            "remaining": c.remaining,
        }))
        .into_response()),
        // The seed's sold-out answer, pre-rendered: it is what a stampede mostly gets.
        Err(ApiError::SoldOut) => Ok(([(header::CONTENT_TYPE, "application/json")], SEED_SOLD_OUT).into_response()),
        Err(e @ (ApiError::NotStarted | ApiError::Ended | ApiError::AlreadyPurchased)) => {
            let messages = match e {
                ApiError::NotStarted => "活动还没开始",
                ApiError::Ended => "活动已结束",
                _ => "你已经买过了",
            };
            Ok(Json(json!({ "messages": messages, "ok": false, "code": e.code() })).into_response())
        }
        Err(e) => Err(e),
    }
}

async fn list_sales<G: StockGate, S: OrderStore>(State(app): Shared<G, S>) -> Result<Response, ApiError> {
    Ok(Json(json!({ "sales": app.engine.sales().await? })).into_response())
}

/// `Admin` comes before the body: a caller without the token learns nothing about the body.
async fn create_sale<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    _: Admin,
    JsonBody(request): JsonBody<NewSaleRequest>,
) -> Result<Response, ApiError> {
    let sale = app.engine.create_sale(SaleSpec::parse(request)?).await?;
    tracing::info!(sale = %sale.id, stock = sale.stock, "sale created");
    Ok((StatusCode::CREATED, Json(sale)).into_response())
}

async fn get_sale<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    Ok(Json(app.engine.sale(SaleId::parse(&id)?).await?).into_response())
}

async fn audit<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    Ok(Json(app.engine.audit(SaleId::parse(&id)?).await?).into_response())
}

async fn purchase<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams(id): PathParams<String>,
    Buyer(user): Buyer,
    PurchaseToken(token): PurchaseToken,
) -> Result<Response, ApiError> {
    let sale = SaleId::parse(&id)?;
    check_purchase_token(&app, token.as_ref(), sale, &user)?;
    let confirmation = app.engine.purchase(sale, user).await?;
    Ok((StatusCode::CREATED, Json(confirmation)).into_response())
}

fn check_purchase_token<G, S>(
    app: &AppState<G, S>,
    token: Option<&HeaderValue>,
    sale: SaleId,
    user: &UserId,
) -> Result<(), ApiError> {
    if !app.require_purchase_token {
        return Ok(());
    }
    let token = token
        .ok_or(ApiError::PurchaseTokenRequired)?
        .to_str()
        .map_err(|_| ApiError::InvalidPurchaseToken)?;
    app.purchase_tokens.verify(token, sale, user, now_millis())
}

/// The hidden purchase path: a token for this buyer and sale, handed out only while it is live.
async fn purchase_token<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams(id): PathParams<String>,
    Buyer(user): Buyer,
) -> Result<Response, ApiError> {
    let sale = SaleId::parse(&id)?;
    app.engine.check_live(sale).await?;
    let (token, expires) = app.purchase_tokens.issue(sale, &user, now_millis());
    Ok(Json(json!({
        "token": token,
        "sale_id": sale,
        "user_id": user,
        "expires_at": format_millis(expires),
    }))
    .into_response())
}

/// What the admin page polls: the sales and the counters behind purchases/s, latency, errors.
async fn admin_stats<G: StockGate, S: OrderStore>(State(app): Shared<G, S>, _: Admin) -> Result<Response, ApiError> {
    let sales = app.engine.sales_best_effort().await;
    let summary = METRICS.summary(&PURCHASE_ROUTES);
    Ok(Json(json!({
        "server_time": format_millis(now_millis()),
        "sales": sales,
        "purchases": summary.purchases,
        "requests": summary.requests,
        "purchase_latency": summary.purchase_latency,
        "purchases_in_flight": app.engine.in_flight(),
    }))
    .into_response())
}

/// Ready (200) while every backend on the buy path answers; `degraded` (200) when only an
/// optional one does not; otherwise 503 `not_ready` naming what does not.
async fn readyz<G: StockGate, S: OrderStore>(State(app): Shared<G, S>) -> Result<Response, ApiError> {
    let checks = app.engine.ready().await;
    let failures: Vec<String> = checks
        .iter()
        .filter(|c| c.required)
        .filter_map(|c| {
            c.result
                .as_ref()
                .err()
                .map(|e| format!("{}: {}", c.name, fault_text(e)))
        })
        .collect();
    if !failures.is_empty() {
        return Err(ApiError::NotReady(failures.join("; ")));
    }
    let status = if checks.iter().all(|c| c.result.is_ok()) {
        "ready"
    } else {
        "degraded"
    };
    let detail: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|c| {
            let state = match &c.result {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("unavailable: {}", fault_text(e)),
            };
            (c.name.to_owned(), state.into())
        })
        .collect();
    Ok(Json(json!({ "status": status, "checks": detail })).into_response())
}

/// The cause inside a backend error, for `/readyz`'s message.
fn fault_text(e: &ApiError) -> String {
    match e {
        ApiError::Unavailable(cause) | ApiError::Internal(cause) => cause.clone(),
        other => other.to_string(),
    }
}

/// A buyer's orders. With JWTs (`--auth jwt`, or `either` when one is sent) only that buyer may
/// read them; behind a trusted gateway (`header`) the gateway decides.
async fn orders_of<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams((id, user)): PathParams<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sale = SaleId::parse(&id)?;
    let user = UserId::parse(&user)?;
    let caller = match app.auth.mode() {
        AuthMode::Header => None,
        AuthMode::Jwt => Some(app.auth.require(&headers)?),
        AuthMode::Either => app.auth.identify(&headers)?,
    };
    if caller.is_some_and(|caller| caller != user) {
        return Err(ApiError::NotYourOrders);
    }
    let orders = app.engine.orders_of(sale, &user).await?;
    if orders.is_empty() {
        return Err(ApiError::OrderNotFound);
    }
    Ok(Json(json!({ "sale_id": sale, "user_id": user, "status": "confirmed", "orders": orders })).into_response())
}

/// The separate consumer's HTTP surface (`seckill consumer --metrics-listen`): its metrics and
/// liveness, nothing else.
pub fn metrics_router() -> Router {
    let consumer_metrics = || async {
        let body = METRICS.render(&Snapshot {
            routes: &ROUTES,
            per_sale: &[],
            purchases_in_flight: 0,
        });
        ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body)
    };
    Router::new()
        .route("/metrics", get(consumer_metrics))
        .route("/healthz", get(healthz))
        .fallback(|| async { ApiError::RouteNotFound })
}

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics<G: StockGate, S: OrderStore>(State(app): Shared<G, S>) -> Result<Response, ApiError> {
    let body = METRICS.render(&Snapshot {
        routes: &ROUTES,
        per_sale: &app.engine.stock_levels().await,
        purchases_in_flight: app.engine.in_flight() as u64,
    });
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first string literal in `text`.
    fn first_literal(text: &str) -> Option<&str> {
        let start = text.find('"')? + 1;
        let len = text[start..].find('"')?;
        Some(&text[start..start + len])
    }

    #[test]
    fn every_route_is_observed_under_its_own_metrics_slot() {
        let source = include_str!("mod.rs");
        let start = source.find("pub fn router<").expect("router");
        let end = start + source[start..].find(".fallback_service(").expect("fallback");
        let routes: Vec<&str> = source[start..end].split(".route(").skip(1).collect();
        assert_eq!(routes.len(), UNMATCHED, "ROUTES lists {UNMATCHED} routes");
        for route in routes {
            let path = first_literal(route).expect("a path");
            let observed = route
                .split_once("observe(")
                .and_then(|(_, rest)| first_literal(rest))
                .unwrap_or_else(|| panic!("{path} is not observed"));
            assert_eq!(observed, path, "{path} reports under another route's slot");
            assert!(route_index(path) < UNMATCHED, "{path} is missing from ROUTES");
        }
    }
}
