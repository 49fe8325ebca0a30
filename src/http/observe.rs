//! The one middleware every request passes: request id, per-IP rate limit, metrics by route
//! and status, and the log line of a server fault (with its cause and the request id).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{route_index, AppState, UNLIMITED_ROUTES, UNMATCHED};
use crate::error::FaultCause;
use crate::gate::StockGate;
use crate::metrics::METRICS;
use crate::store::OrderStore;

pub const REQUEST_ID: &str = "x-request-id";

/// Ids this process mints: a random prefix and a counter (unique without a syscall each).
static ID_PREFIX: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A caller's id is kept when it is short and printable, so a gateway's trace id flows through.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(given) = headers.get(REQUEST_ID) {
        let bytes = given.as_bytes();
        if !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic()) {
            return given.clone();
        }
    }
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    HeaderValue::try_from(format!("{}-{n}", *ID_PREFIX)).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

fn client_ip(request: &Request, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for {
        let forwarded = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|first| first.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

pub async fn observe<G: StockGate, S: OrderStore>(
    State(app): State<Arc<AppState<G, S>>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, |p| route_index(p.as_str()));

    let limited = if UNLIMITED_ROUTES.contains(&route) {
        Ok(())
    } else {
        match client_ip(&request, app.limits.trust_forwarded_for) {
            Some(ip) => app.limits.ip.check(&ip),
            None => Ok(()),
        }
    };
    let method = request.method().clone();
    let mut response = match limited {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    };

    let status = response.status();
    METRICS.observe_request(route, status.as_u16(), started.elapsed());
    if let Some(FaultCause(cause)) = response.extensions_mut().remove::<FaultCause>() {
        let route = super::ROUTES.get(route).copied().unwrap_or("other");
        // A backend outage (503) is the operator's to fix and may repeat per request: a warning.
        if status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(request_id = ?id, %method, route, status = status.as_u16(), %cause, "backend unavailable");
        } else {
            tracing::error!(request_id = ?id, %method, route, status = status.as_u16(), %cause, "request failed");
        }
    }
    response.headers_mut().insert(REQUEST_ID, id);
    response
}
