//! The `/api/sales` routes: the catalogue, the buy path, a buyer's orders, the auditor.

use std::sync::Arc;

use axum::extract::RawQuery;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use seckill_api::{BuyerOrders, OrderStatus, PurchaseTokenView, SaleList};

use super::error::ApiError;
use super::extract::{Admin, AdmissionToken, Buyer, JsonBody, PathParams, PurchaseToken};
use super::AppState;
use crate::config::AuthMode;
use crate::domain::{format_millis, now_millis, NewSaleRequest, SaleId, SaleSpec, UserId};
use crate::gate::StockGate;
use crate::store::OrderStore;

type Shared<G, S> = State<Arc<AppState<G, S>>>;

/// A sale id from the path; one that cannot exist is a 404 like an unknown one.
fn sale_id(raw: &str) -> Result<SaleId, ApiError> {
    SaleId::parse(raw).ok_or(ApiError::SaleNotFound)
}

/// Sales per page unless `?limit=` says otherwise, and the most a page may hold.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

/// `GET /api/sales?limit=N&after=ID`: a page of sales in id order; `next_after` names the
/// cursor of the next page while more follow.
pub async fn list<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (after, limit) = page_of(query.as_deref())?;
    let (sales, more) = app.engine.sales(after, limit).await?;
    let next_after = more.then(|| sales.last().map(|s| s.id)).flatten();
    Ok(Json(SaleList { sales, next_after }).into_response())
}

/// `after` and `limit` from the query string; anything else in it is ignored.
fn page_of(query: Option<&str>) -> Result<(Option<SaleId>, usize), ApiError> {
    let (mut after, mut limit) = (None, PAGE);
    for (key, value) in query.unwrap_or_default().split('&').filter_map(|kv| kv.split_once('=')) {
        match key {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::InvalidQuery(format!("limit must be 1 to {MAX_PAGE}")))?;
            }
            "after" => {
                after =
                    Some(SaleId::parse(value).ok_or_else(|| ApiError::InvalidQuery("after must be a sale id".into()))?);
            }
            _ => {}
        }
    }
    Ok((after, limit))
}

/// `Admin` comes before the body: a caller without the token learns nothing about the body.
pub async fn create<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    _: Admin,
    JsonBody(request): JsonBody<NewSaleRequest>,
) -> Result<Response, ApiError> {
    let spec = SaleSpec::parse(request, app.default_payment_window_secs)?;
    let sale = app.engine.create_sale(spec).await?;
    tracing::info!(sale = %sale.id, stock = sale.stock, "sale created");
    Ok((StatusCode::CREATED, Json(sale)).into_response())
}

pub async fn get<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    Ok(Json(app.engine.sale(sale_id(&id)?).await?).into_response())
}

/// An operator's tool, behind the admin token: it counts every order of the sale, which an
/// anonymous flood must not be able to make the engine do.
pub async fn audit<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    _: Admin,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    Ok(Json(app.engine.audit(sale_id(&id)?).await?).into_response())
}

/// The buy path.
pub async fn purchase<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams(id): PathParams<String>,
    Buyer(user): Buyer,
    PurchaseToken(token): PurchaseToken,
    AdmissionToken(admission): AdmissionToken,
) -> Result<Response, ApiError> {
    let sale = sale_id(&id)?;
    app.check_purchase_token(token.as_ref(), sale, &user)?;
    // Checked here, before the gate: a buyer the waiting room has not admitted costs the gate
    // nothing. The sale comes from the cache: no backend call on the buy path.
    match app.engine.find_sale(sale).await {
        Ok(found) => app.check_admission(admission.as_ref(), &found, &user)?,
        // Unknown here: the gate answers for it as before.
        Err(crate::engine::EngineError::SaleNotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let confirmation = app.engine.purchase(sale, user).await?;
    Ok((StatusCode::CREATED, Json(confirmation)).into_response())
}

/// The hidden purchase path: a token for this buyer and sale, handed out only while it is live.
pub async fn purchase_token<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams(id): PathParams<String>,
    Buyer(user): Buyer,
) -> Result<Response, ApiError> {
    let sale = sale_id(&id)?;
    app.engine.check_live(sale).await?;
    let (token, expires) = app.purchase_tokens.issue(sale, &user, now_millis());
    Ok(Json(PurchaseTokenView {
        token,
        sale_id: sale.0,
        user_id: user.to_string(),
        expires_at: format_millis(expires),
    })
    .into_response())
}

/// A buyer's orders. With JWTs (`--auth jwt`, or `either`, where the caller names themselves by
/// a JWT or `X-User-Id`) only that buyer may read them; behind a trusted gateway (`header`) the
/// gateway decides.
pub async fn orders_of<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams((id, user)): PathParams<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sale = sale_id(&id)?;
    let user = UserId::parse(&user)?;
    let caller = match app.auth.mode() {
        AuthMode::Header => None,
        AuthMode::Jwt => Some(app.auth.require(&headers)?),
        // A caller who names nobody is nobody's reader: otherwise anyone reads anyone's orders.
        AuthMode::Either => Some(app.auth.require(&headers)?),
    };
    if caller.is_some_and(|caller| caller != user) {
        return Err(ApiError::NotYourOrders);
    }
    let orders = app.engine.orders_of(sale, &user).await?;
    if orders.is_empty() {
        return Err(ApiError::OrderNotFound);
    }
    Ok(Json(BuyerOrders {
        sale_id: sale.0,
        user_id: user.to_string(),
        status: OrderStatus::Confirmed,
        orders,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_100_by_default_and_at_most_1000() {
        assert_eq!(page_of(None).unwrap(), (None, 100));
        assert_eq!(page_of(Some("limit=1000&after=7")).unwrap(), (Some(SaleId(7)), 1000));
        for bad in ["limit=0", "limit=1001", "limit=x", "after=0", "after=-3", "after=x"] {
            assert!(page_of(Some(bad)).is_err(), "{bad}");
        }
    }
}
