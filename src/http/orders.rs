//! The payment lifecycle's routes: an order by id, the buyer's cancellation, the payment
//! provider's webhook, and the built-in test provider.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{Buyer, PathParams, RawBody};
use super::AppState;
use crate::config::{PaymentProvider, Secret};
use crate::domain::{now_millis, Payment};
use crate::gate::StockGate;
use crate::payment::lifecycle::detail;
use crate::payment::webhook::{self, WebhookKey};
use crate::store::OrderStore;

type Shared<G, S> = State<Arc<AppState<G, S>>>;

/// The longest payment id a provider may send.
const MAX_PAYMENT_ID_LEN: usize = 200;

/// How payments reach the engine.
pub struct Payments {
    /// Verifies webhooks; `None`: payments are disabled.
    pub webhook: Option<WebhookKey>,
    pub provider: PaymentProvider,
    /// The shop's payment page, with `{order_id}` to fill in.
    pub payment_url: Option<String>,
}

impl Payments {
    /// The test provider signs with the configured secret, or a random one of its own.
    pub fn new(secret: Option<&Secret>, provider: PaymentProvider, payment_url: Option<String>) -> Self {
        let webhook = match (secret, provider) {
            (Some(secret), _) => Some(WebhookKey::new(secret.expose().as_bytes())),
            (None, PaymentProvider::Test) => Some(WebhookKey::new(uuid::Uuid::new_v4().as_bytes())),
            (None, PaymentProvider::None) => None,
        };
        Payments {
            webhook,
            provider,
            payment_url,
        }
    }
}

/// An order id from the path; one that is not a UUID names no order.
fn order_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::OrderNotFound)
}

/// `GET /api/orders/{order_id}`: for its buyer (same identity rules as a purchase) and the
/// admin; anyone else gets 404, as if it did not exist.
pub async fn get<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = order_id(&id)?;
    let reader = match app.admin.check(&headers) {
        Ok(()) => None,
        Err(_) => Some(app.auth.require(&headers)?),
    };
    let order = app.engine.order(id).await?.ok_or(ApiError::OrderNotFound)?;
    if reader.is_some_and(|buyer| buyer != order.user_id) {
        return Err(ApiError::OrderNotFound);
    }
    Ok(Json(detail(&order)).into_response())
}

/// `POST /api/orders/{order_id}/cancel`: the buyer gives the hold up; the unit is back on sale.
pub async fn cancel<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams(id): PathParams<String>,
    Buyer(buyer): Buyer,
) -> Result<Response, ApiError> {
    let order = app.engine.cancel(order_id(&id)?, &buyer).await?;
    tracing::info!(order = %order.order_id, sale = %order.sale_id, "hold cancelled by its buyer");
    Ok(Json(detail(&order)).into_response())
}

/// What a provider posts.
#[derive(Deserialize)]
struct PaymentNotice {
    order_id: String,
    payment_id: String,
    /// Kept as sent (any JSON value), for the shop's refund of a late payment.
    #[serde(default)]
    amount: Option<serde_json::Value>,
}

/// `POST /api/payments/webhook`: the payment provider says an order is paid. The signature is
/// checked over the raw body before anything in it is believed.
pub async fn webhook<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let signature = headers.get(webhook::HEADER).and_then(|v| v.to_str().ok());
    pay(&app, signature, &body).await
}

async fn pay<G: StockGate, S: OrderStore>(
    app: &AppState<G, S>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let key = app.payments.webhook.as_ref().ok_or(ApiError::PaymentsDisabled)?;
    let now = now_millis();
    key.verify(signature, body, now.div_euclid(1000))
        .map_err(|e| ApiError::InvalidSignature(e.to_string()))?;
    let notice: PaymentNotice = serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let valid_id =
        |id: &str| !id.is_empty() && id.len() <= MAX_PAYMENT_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic());
    if !valid_id(&notice.payment_id) {
        return Err(ApiError::MalformedJson(format!(
            "payment_id must be 1 to {MAX_PAYMENT_ID_LEN} printable ASCII characters"
        )));
    }
    let id = order_id(&notice.order_id)?;
    let payment = Payment {
        id: notice.payment_id,
        at: now,
    };
    let order = app
        .engine
        .pay(id, payment, notice.amount.map(|a| a.to_string()))
        .await?;
    Ok(Json(detail(&order)).into_response())
}

/// `POST /api/orders/{order_id}/test-payment`: the built-in test provider (`--payment-provider
/// test`) pays the buyer's order through the webhook's own path: a signed notice, verified.
pub async fn test_payment<G: StockGate, S: OrderStore>(
    State(app): Shared<G, S>,
    PathParams(id): PathParams<String>,
    Buyer(buyer): Buyer,
) -> Result<Response, ApiError> {
    if app.payments.provider != PaymentProvider::Test {
        return Err(ApiError::PaymentsDisabled);
    }
    let key = app.payments.webhook.as_ref().ok_or(ApiError::PaymentsDisabled)?;
    let id = order_id(&id)?;
    // Only the buyer pays their order here (the webhook itself trusts the provider).
    let order = app.engine.order(id).await?.ok_or(ApiError::OrderNotFound)?;
    if order.user_id != buyer {
        return Err(ApiError::OrderNotFound);
    }
    let body = serde_json::json!({
        "order_id": id.hyphenated().to_string(),
        "payment_id": format!("test-{}", uuid::Uuid::new_v4().simple()),
    })
    .to_string();
    let signature = key.sign(now_millis().div_euclid(1000), body.as_bytes());
    pay(&app, Some(&signature), body.as_bytes()).await
}

/// `GET /api/payments`: how the buyer's page offers payment.
pub async fn config<G: StockGate, S: OrderStore>(State(app): Shared<G, S>) -> Response {
    Json(seckill_api::PaymentsConfig {
        provider: match app.payments.provider {
            PaymentProvider::Test => "test".to_owned(),
            PaymentProvider::None => "none".to_owned(),
        },
        payment_url: app.payments.payment_url.clone(),
    })
    .into_response()
}
