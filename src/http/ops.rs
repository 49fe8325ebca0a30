//! The operator's and the browser's routes: the pages, the API document, liveness, readiness,
//! metrics and the admin page's numbers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::extract::Admin;
use super::routes::Kind;
use super::{openapi, AppState};
use crate::domain::{format_millis, now_millis, SaleId};
use crate::gate::StockGate;
use crate::metrics::{Snapshot, METRICS};
use crate::store::OrderStore;

type Shared<G, S> = State<Arc<AppState<G, S>>>;

const PAGE: &str = include_str!("page.html");
const ADMIN_PAGE: &str = include_str!("admin.html");
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// The page holds no data; everything it shows comes from admin routes that need the token.
pub async fn admin_page() -> Html<&'static str> {
    Html(ADMIN_PAGE)
}

pub async fn openapi_document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi::DOCUMENT).into_response()
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready (200) while every backend on the buy path answers; `degraded` (200) when only an
/// optional one does not; otherwise 503 `not_ready` naming what does not. Causes go to the
/// log, never into the answer.
pub async fn readyz<G: StockGate, S: OrderStore>(State(app): Shared<G, S>) -> Result<Response, ApiError> {
    let checks = app.engine.ready().await;
    let failing: Vec<String> = checks
        .iter()
        .filter_map(|c| {
            let e = c.result.as_ref().err()?;
            tracing::warn!(check = c.name, error = %e.chain(), "readiness check failed");
            c.required.then(|| c.name.to_owned())
        })
        .collect();
    if !failing.is_empty() {
        return Err(ApiError::NotReady(failing.join(", ")));
    }
    let status = if checks.iter().all(|c| c.result.is_ok()) {
        "ready"
    } else {
        "degraded"
    };
    let detail: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|c| {
            let state = if c.result.is_ok() { "ok" } else { "unavailable" };
            (c.name.to_owned(), state.into())
        })
        .collect();
    Ok(Json(json!({ "status": status, "checks": detail })).into_response())
}

/// What the admin page polls: the sales and the counters behind purchases/s, latency, errors.
pub async fn admin_stats<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    _: Admin,
) -> Result<Response, ApiError> {
    let sales = app.engine.sales_best_effort().await;
    let purchase_slots: Vec<usize> = app
        .routes()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == Kind::Purchase)
        .map(|(slot, _)| slot)
        .collect();
    let summary = METRICS.summary(&purchase_slots);
    let queues: Vec<_> = queue_stats(&app)
        .await
        .into_iter()
        .map(|(sale, q)| json!({ "sale": sale, "waiting": q.waiting, "admitted": q.admitted, "expired": q.expired }))
        .collect();
    Ok(Json(json!({
        "server_time": format_millis(now_millis()),
        "sales": sales,
        "queues": queues,
        "purchases": summary.purchases,
        "requests": summary.requests,
        "purchase_latency": summary.purchase_latency,
        "purchases_in_flight": app.engine.in_flight(),
    }))
    .into_response())
}

pub async fn metrics<G: StockGate, S: OrderStore>(State(app): Shared<G, S>) -> Result<Response, ApiError> {
    let names = app.route_names();
    let body = METRICS.render(&Snapshot {
        routes: &names,
        per_sale: &app.engine.stock_levels().await,
        purchases_in_flight: app.engine.in_flight() as u64,
        queues: &queue_stats(&app).await,
    });
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body).into_response())
}

/// Each waiting room's counters, best effort and bounded like the stock levels: a scrape must
/// answer while a backend is down.
async fn queue_stats<G: StockGate, S: OrderStore>(app: &AppState<G, S>) -> Vec<(i64, crate::waiting_room::QueueStats)> {
    let rooms: Vec<SaleId> = app
        .engine
        .cached()
        .values()
        .filter(|sale| sale.spec.waiting_room.is_some())
        .map(|sale| sale.id)
        .collect();
    let stats = futures::future::join_all(rooms.iter().map(|&id| app.waiting_room.stats(id)));
    let stats = tokio::time::timeout(std::time::Duration::from_millis(500), stats)
        .await
        .unwrap_or_default();
    rooms
        .iter()
        .zip(stats)
        .filter_map(|(id, s)| Some((id.0, s.ok().flatten()?)))
        .collect()
}

/// The separate consumer's HTTP surface (`seckill consumer --metrics-listen`): its metrics and
/// liveness, nothing else.
pub fn consumer_router() -> Router {
    let consumer_metrics = || async {
        let body = METRICS.render(&Snapshot {
            routes: &[],
            per_sale: &[],
            purchases_in_flight: 0,
            queues: &[],
        });
        ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body)
    };
    Router::new()
        .route("/metrics", get(consumer_metrics))
        .route("/healthz", get(healthz))
        .fallback(|| async { ApiError::RouteNotFound })
}
