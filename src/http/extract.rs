//! Request parts parsed into domain types, with JSON errors instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use std::sync::Arc;

use super::error::ApiError;
use super::AppState;
use crate::config::{AuthMode, Secret};
use crate::domain::UserId;
use crate::gate::StockGate;
use crate::store::OrderStore;

/// The buyer, identified as `--auth` says (`X-User-Id` from a trusted gateway, or a JWT), and
/// within the per-buyer rate limit.
pub struct Buyer(pub UserId);

impl<G: StockGate, S: OrderStore> FromRequestParts<Arc<AppState<G, S>>> for Buyer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState<G, S>>) -> Result<Self, ApiError> {
        let user = app.auth.require(&parts.headers)?;
        app.limits.user.check(&user)?;
        Ok(Buyer(user))
    }
}

/// The classic API's buyer: anonymous unless they name themselves, and named they must be under
/// `--auth jwt` or with purchase tokens required.
pub struct MaybeBuyer(pub Option<UserId>);

impl<G: StockGate, S: OrderStore> FromRequestParts<Arc<AppState<G, S>>> for MaybeBuyer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState<G, S>>) -> Result<Self, ApiError> {
        let must_identify = app.auth.mode() == AuthMode::Jwt || app.require_purchase_token;
        let user = if must_identify {
            Some(app.auth.require_classic(&parts.headers)?)
        } else {
            app.auth.identify(&parts.headers)?
        };
        if let Some(user) = &user {
            app.limits.user.check(user)?;
        }
        Ok(MaybeBuyer(user))
    }
}

/// `X-Purchase-Token`, read only when purchases need one.
pub struct PurchaseToken(pub Option<HeaderValue>);

impl<G: StockGate, S: OrderStore> FromRequestParts<Arc<AppState<G, S>>> for PurchaseToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState<G, S>>) -> Result<Self, ApiError> {
        let token = app
            .require_purchase_token
            .then(|| parts.headers.get("x-purchase-token").cloned());
        Ok(PurchaseToken(token.flatten()))
    }
}

/// `X-Admission-Token`: the waiting room's admission, needed on sales that have one.
pub struct AdmissionToken(pub Option<HeaderValue>);

impl<G: StockGate, S: OrderStore> FromRequestParts<Arc<AppState<G, S>>> for AdmissionToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<AppState<G, S>>) -> Result<Self, ApiError> {
        Ok(AdmissionToken(parts.headers.get("x-admission-token").cloned()))
    }
}

/// The buyer polling a ticket: named as for a purchase, but not held to the per-buyer rate
/// limit (the server sets the pace of polls).
pub struct Poller(pub UserId);

impl<G: StockGate, S: OrderStore> FromRequestParts<Arc<AppState<G, S>>> for Poller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState<G, S>>) -> Result<Self, ApiError> {
        Ok(Poller(app.auth.require(&parts.headers)?))
    }
}

/// `X-Altcha`: the answer to a join's proof of work, when the buyer sent one. Read on its own,
/// where a `HeaderMap` argument would copy every header of the request.
pub struct AltchaAnswer(pub Option<HeaderValue>);

impl<G: StockGate, S: OrderStore> FromRequestParts<Arc<AppState<G, S>>> for AltchaAnswer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<AppState<G, S>>) -> Result<Self, ApiError> {
        Ok(AltchaAnswer(parts.headers.get("x-altcha").cloned()))
    }
}

/// A request that carries the admin token.
pub struct Admin;

impl<G: StockGate, S: OrderStore> FromRequestParts<Arc<AppState<G, S>>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState<G, S>>) -> Result<Self, ApiError> {
        app.admin.check(&parts.headers).map(|()| Admin)
    }
}

/// A JSON body of any content type, at most [`super::BODY_LIMIT`] bytes, arriving within the
/// configured body timeout (a client trickling its body cannot hold a handler forever).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, G: StockGate, S: OrderStore> FromRequest<Arc<AppState<G, S>>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<AppState<G, S>>) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, app).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => ApiError::InvalidSale(e.to_string()),
                _ => ApiError::MalformedJson(e.to_string()),
            })
    }
}

/// The raw request body (what a signature covers), at most [`super::BODY_LIMIT`] bytes, arriving
/// within the configured body timeout.
pub struct RawBody(pub Bytes);

impl<G: StockGate, S: OrderStore> FromRequest<Arc<AppState<G, S>>> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<AppState<G, S>>) -> Result<Self, ApiError> {
        // A body announced over the limit is refused before any of it is read: waiting for it
        // would hold the client (and a task) until the body timeout, only to refuse it then.
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|length| length > super::BODY_LIMIT as u64) {
            return Err(ApiError::PayloadTooLarge);
        }
        let read = tokio::time::timeout(app.body_timeout, Bytes::from_request(req, app)).await;
        let bytes = read.map_err(|_| ApiError::RequestTimeout)?.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::MalformedJson(rejection.body_text())
            }
        })?;
        Ok(RawBody(bytes))
    }
}

/// The admin token, compared in constant time. `None` disables the admin routes.
pub struct AdminToken(Option<Secret>);

impl AdminToken {
    pub fn new(token: Option<Secret>) -> Self {
        AdminToken(token)
    }

    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let expected = self.0.as_ref().ok_or(ApiError::AdminDisabled)?.expose();
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// Path parameters; a segment that cannot be decoded is a 404 like any unknown route.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| PathParams(t))
            .map_err(|_| ApiError::RouteNotFound)
    }
}
