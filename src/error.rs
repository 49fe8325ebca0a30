//! The API's one error type: each variant is one HTTP status and one stable `code`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::domain::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no such sale")]
    SaleNotFound,
    #[error("no order for this buyer in this sale")]
    OrderNotFound,
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("the sale has not started yet")]
    NotStarted,
    #[error("the sale has ended")]
    Ended,
    #[error("sold out")]
    SoldOut,
    #[error("this buyer has reached the per-user limit for this sale")]
    AlreadyPurchased,
    #[error("the X-User-Id header is required")]
    MissingUserId,
    #[error("X-User-Id must be 1 to 64 characters of A-Z a-z 0-9 _ - . : @")]
    InvalidUserId,
    #[error("{0}")]
    InvalidSale(String),
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    #[error("request body exceeds the 1 MiB limit")]
    PayloadTooLarge,
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("the Authorization: Bearer <admin token> header is required")]
    Unauthorized,
    #[error("the admin token is wrong")]
    Forbidden,
    #[error("admin routes are disabled: start the engine with SECKILL_ADMIN_TOKEN set")]
    AdminDisabled,
    #[error("the engine is overloaded, retry shortly")]
    Overloaded,
    /// Too many requests from one client; retry after this many seconds.
    #[error("too many requests, retry after {0} s")]
    RateLimited(u64),
    #[error("the Authorization: Bearer <JWT> header is required")]
    TokenRequired,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("this sale needs a purchase token: GET /api/sales/{{id}}/token, then send it as X-Purchase-Token")]
    PurchaseTokenRequired,
    #[error("the purchase token is invalid or expired; fetch a new one")]
    InvalidPurchaseToken,
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("a buyer may only read their own orders")]
    NotYourOrders,
    #[error("a backend is unavailable: {0}")]
    Unavailable(String),
    #[error("the order could not be confirmed in time and may still be recorded; check GET /api/sales/{{id}}/orders/{{user}} before retrying")]
    OutcomeUnknown,
    #[error("internal error")]
    Internal(String),
    /// Start-up only: the configuration cannot work.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            SaleNotFound | OrderNotFound | RouteNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            NotStarted | Ended | Forbidden | AdminDisabled => StatusCode::FORBIDDEN,
            SoldOut => StatusCode::GONE,
            AlreadyPurchased => StatusCode::CONFLICT,
            MissingUserId | InvalidUserId | InvalidSale(_) | MalformedJson(_) => StatusCode::BAD_REQUEST,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Unauthorized | TokenRequired | InvalidToken(_) => StatusCode::UNAUTHORIZED,
            PurchaseTokenRequired | InvalidPurchaseToken | NotYourOrders => StatusCode::FORBIDDEN,
            RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Overloaded | Unavailable(_) | OutcomeUnknown | NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) | InvalidConfig(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            SaleNotFound => "sale_not_found",
            OrderNotFound => "order_not_found",
            RouteNotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            NotStarted => "not_started",
            Ended => "ended",
            SoldOut => "sold_out",
            AlreadyPurchased => "already_purchased",
            MissingUserId => "missing_user_id",
            InvalidUserId => "invalid_user_id",
            InvalidSale(_) => "invalid_sale",
            MalformedJson(_) => "malformed_json",
            PayloadTooLarge => "payload_too_large",
            RequestTimeout => "request_timeout",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            AdminDisabled => "admin_disabled",
            Overloaded => "overloaded",
            RateLimited(_) => "rate_limited",
            TokenRequired => "token_required",
            InvalidToken(_) => "invalid_token",
            PurchaseTokenRequired => "purchase_token_required",
            InvalidPurchaseToken => "invalid_purchase_token",
            NotReady(_) => "not_ready",
            NotYourOrders => "not_your_orders",
            Unavailable(_) => "unavailable",
            OutcomeUnknown => "outcome_unknown",
            Internal(_) => "internal",
            InvalidConfig(_) => "invalid_config",
        }
    }
}

/// The internal cause of a 5xx, carried on the response to the middleware that logs it.
#[derive(Clone, Debug)]
pub struct FaultCause(pub String);

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::UnknownSale => ApiError::SaleNotFound,
            Refusal::NotStarted => ApiError::NotStarted,
            Refusal::Ended => ApiError::Ended,
            Refusal::SoldOut => ApiError::SoldOut,
            Refusal::AlreadyPurchased => ApiError::AlreadyPurchased,
        }
    }
}

impl ApiError {
    /// The stampede's answers, rendered once: a refusal costs no JSON serialisation.
    fn static_body(&self) -> Option<&'static str> {
        Some(match self {
            ApiError::SoldOut => r#"{"error":{"code":"sold_out","message":"sold out"}}"#,
            ApiError::AlreadyPurchased => {
                r#"{"error":{"code":"already_purchased","message":"this buyer has reached the per-user limit for this sale"}}"#
            }
            ApiError::NotStarted => r#"{"error":{"code":"not_started","message":"the sale has not started yet"}}"#,
            ApiError::Ended => r#"{"error":{"code":"ended","message":"the sale has ended"}}"#,
            _ => return None,
        })
    }

    fn rendered_body(&self) -> String {
        serde_json::json!({ "error": { "code": self.code(), "message": self.to_string() } }).to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let json = [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )];
        let mut response = match self.static_body() {
            Some(body) => (status, json, body).into_response(),
            None => (status, json, self.rendered_body()).into_response(),
        };
        if matches!(status, StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT) {
            // The unread body is not drained: the connection is dropped, so say so, or a
            // client would reuse it and fail its next request.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        match &self {
            ApiError::RateLimited(seconds) => {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(*seconds));
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
            }
            ApiError::TokenRequired | ApiError::InvalidToken(_) => {
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            _ => {}
        }
        // Our own faults: the request middleware logs the cause once, with the request id;
        // the buyer sees no internals.
        if let ApiError::Internal(cause) | ApiError::Unavailable(cause) | ApiError::NotReady(cause) = self {
            response.extensions_mut().insert(FaultCause(cause));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_bodies_match_the_rendered_ones() {
        for e in [
            ApiError::SoldOut,
            ApiError::AlreadyPurchased,
            ApiError::NotStarted,
            ApiError::Ended,
        ] {
            let parsed: serde_json::Value = serde_json::from_str(e.static_body().unwrap()).unwrap();
            let rendered: serde_json::Value = serde_json::from_str(&e.rendered_body()).unwrap();
            assert_eq!(parsed, rendered, "{e:?}");
        }
    }
}
