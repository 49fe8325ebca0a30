//! The HTTP layer: the seed's endpoints, the `/api/` routes, the buyer's page and `/metrics`.
//!
//! Handlers only translate: parse the request into domain types (see [`extract`]), call the
//! [`Engine`], turn the result into JSON. Every error leaves as `{"error":{"code","message"}}`.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::domain::{NewSaleRequest, SaleId, SaleSpec, UserId};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::gate::StockGate;
use crate::metrics::METRICS;
use crate::store::OrderStore;

pub mod extract;

use extract::{AdminToken, Buyer, JsonBody, PathParams};

/// The largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 1 << 20;

const PAGE: &str = include_str!("page.html");
const SEED_SOLD_OUT: &str = r#"{"messages":"抢完了","ok":false,"code":"sold_out"}"#;

pub struct AppState<G, S> {
    pub engine: Engine<G, S>,
    pub admin: AdminToken,
    /// How long a request body may take to arrive (408 past it).
    pub body_timeout: std::time::Duration,
}

type Shared<G, S> = State<Arc<AppState<G, S>>>;

pub fn router<G: StockGate, S: OrderStore>(state: Arc<AppState<G, S>>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/seckill/getCount", get(seed_get_count::<G, S>))
        .route("/seckill/seckill", post(seed_purchase::<G, S>))
        .route("/api/sales", get(list_sales::<G, S>).post(create_sale::<G, S>))
        .route("/api/sales/{id}", get(get_sale::<G, S>))
        .route("/api/sales/{id}/audit", get(audit::<G, S>))
        .route("/api/sales/{id}/purchase", post(purchase::<G, S>))
        .route("/api/sales/{id}/orders/{user_id}", get(orders_of::<G, S>))
        .route("/metrics", get(metrics::<G, S>))
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// Seed: `{"num": remaining}` of the demo sale.
async fn seed_get_count<G: StockGate, S: OrderStore>(State(app): Shared<G, S>) -> Result<Response, ApiError> {
    let num = app.engine.remaining(app.engine.demo_sale()).await?;
    Ok(Json(json!({ "num": num })).into_response())
}

/// Seed: a new anonymous buyer of the demo sale. The seed answered 200 with a message either
/// way; we keep that, add `ok`/`code`/`order_id`, and use real statuses only for our faults.
async fn seed_purchase<G: StockGate, S: OrderStore>(State(app): Shared<G, S>) -> Result<Response, ApiError> {
    match app.engine.purchase_anonymous().await {
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
        Err(e @ (ApiError::NotStarted | ApiError::Ended)) => {
            let messages = if matches!(e, ApiError::NotStarted) {
                "活动还没开始"
            } else {
                "活动已结束"
            };
            Ok(Json(json!({ "messages": messages, "ok": false, "code": e.code() })).into_response())
        }
        Err(e) => Err(e),
    }
}

async fn list_sales<G: StockGate, S: OrderStore>(State(app): Shared<G, S>) -> Result<Response, ApiError> {
    Ok(Json(json!({ "sales": app.engine.sales().await? })).into_response())
}

async fn create_sale<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<NewSaleRequest>,
) -> Result<Response, ApiError> {
    app.admin.check(&headers)?;
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
) -> Result<Response, ApiError> {
    let confirmation = app.engine.purchase(SaleId::parse(&id)?, user).await?;
    Ok((StatusCode::CREATED, Json(confirmation)).into_response())
}

async fn orders_of<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams((id, user)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let sale = SaleId::parse(&id)?;
    let user = UserId::parse(&user)?;
    let orders = app.engine.orders_of(sale, &user).await?;
    if orders.is_empty() {
        return Err(ApiError::OrderNotFound);
    }
    Ok(Json(json!({ "sale_id": sale, "user_id": user, "status": "confirmed", "orders": orders })).into_response())
}

async fn metrics<G: StockGate, S: OrderStore>(State(app): Shared<G, S>) -> Result<Response, ApiError> {
    let body = METRICS.render(&app.engine.stock_levels().await?);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response())
}
