//! The classic `/seckill/*` API, the one miaosha-go's clients and its JMeter plan use: the
//! demo sale's count, and a purchase answered 200 with a message either way.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use seckill_api::{ClassicCount, ClassicPurchase};

use super::error::ApiError;
use super::extract::{MaybeBuyer, PurchaseToken};
use super::AppState;
use crate::domain::Refusal;
use crate::engine::PurchaseError;
use crate::gate::StockGate;
use crate::store::OrderStore;

/// The classic sold-out answer, pre-rendered: it is what a stampede mostly gets.
const SOLD_OUT: &str = r#"{"messages":"抢完了","ok":false,"code":"sold_out"}"#;

/// `{"num": remaining}` of the demo sale.
pub async fn get_count<G: StockGate, S: OrderStore>(
    State(app): State<Arc<AppState<G, S>>>,
) -> Result<Response, ApiError> {
    let num = app.engine.remaining(app.engine.demo_sale()).await?;
    Ok(Json(ClassicCount { num }).into_response())
}

/// A new anonymous buyer of the demo sale. The classic API answered 200 with a message either
/// way; we keep that, add `ok`/`code`/`order_id`, and use real statuses only for our faults.
/// A buyer who names themselves (or must: `--auth jwt`, purchase tokens) buys as themselves.
pub async fn purchase<G: StockGate, S: OrderStore>(
    State(app): State<Arc<AppState<G, S>>>,
    MaybeBuyer(buyer): MaybeBuyer,
    PurchaseToken(token): PurchaseToken,
) -> Result<Response, ApiError> {
    let outcome = match buyer {
        Some(user) => {
            let sale = app.engine.demo_sale();
            app.check_purchase_token(token.as_ref(), sale, &user)?;
            app.engine.purchase(sale, user).await
        }
        None => app.engine.purchase_anonymous().await,
    };
    let refusal = match outcome {
        Ok(c) => {
            return Ok(Json(ClassicPurchase {
                messages: format!("购买成功，还剩下{}个", c.remaining),
                ok: true,
                code: None,
                order_id: Some(c.order_id),
                user_id: Some(c.user_id),
                remaining: Some(c.remaining),
                state: Some(c.state),
                pay_by: c.pay_by,
            })
            .into_response())
        }
        Err(PurchaseError::Refused(refusal)) => refusal,
        Err(e) => return Err(e.into()),
    };
    let messages = match refusal {
        Refusal::SoldOut => return Ok(([(header::CONTENT_TYPE, "application/json")], SOLD_OUT).into_response()),
        Refusal::NotStarted => "活动还没开始",
        Refusal::Ended => "活动已结束",
        Refusal::LimitReached => "你已经买过了",
        Refusal::UnknownSale => return Err(ApiError::SaleNotFound),
    };
    Ok(Json(ClassicPurchase {
        messages: messages.to_owned(),
        ok: false,
        code: Some(ApiError::from(refusal).code().to_owned()),
        order_id: None,
        user_id: None,
        remaining: None,
        state: None,
        pay_by: None,
    })
    .into_response())
}
