//! The HTTP layer's error: each variant is one HTTP status and one stable `code`. The layers
//! below have their own errors ([`BackendError`], [`PurchaseError`], [`EngineError`], the domain's
//! parse errors); they become an [`ApiError`] here, at the edge, and nowhere else.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::backend::BackendError;
use crate::domain::{InvalidSale, Refusal, UserIdError};
use crate::engine::{EngineError, PurchaseError};
use crate::waiting_room::WaitingRoomError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no such sale")]
    SaleNotFound,
    #[error("no such order")]
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
    #[error("user ids starting with `anon-` belong to the engine's anonymous buyers and cannot be sent")]
    ReservedUserId,
    #[error("the request carries more than one X-User-Id or Authorization header; send one")]
    AmbiguousIdentity,
    #[error("{0}")]
    InvalidSale(String),
    #[error("bad query: {0}")]
    InvalidQuery(String),
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
    #[error("the buyer must be named: X-User-Id from the gateway, or Authorization: Bearer <JWT>")]
    IdentityRequired,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("this sale needs a purchase token: GET /api/sales/{{id}}/token, then send it as X-Purchase-Token")]
    PurchaseTokenRequired,
    #[error("the purchase token is invalid or expired; fetch a new one")]
    InvalidPurchaseToken,
    #[error("this sale has a waiting room: join POST /api/sales/{{id}}/queue, then purchase with the admission token as X-Admission-Token")]
    AdmissionRequired,
    #[error("the admission token is invalid, expired, or for another buyer or sale; poll your ticket for a fresh one")]
    InvalidAdmission,
    #[error("this sale has no waiting room: purchase directly")]
    NoWaitingRoom,
    #[error("joining this waiting room needs a proof of work: solve GET /api/sales/{{id}}/challenge and send the payload as X-Altcha")]
    ChallengeRequired,
    #[error("the proof of work is invalid, expired, or for another buyer or sale; solve a new challenge")]
    InvalidChallenge,
    #[error("this server asks no proof of work: join directly")]
    NoChallenge,
    #[error("no such ticket for this buyer in this sale's waiting room; join again")]
    TicketNotFound,
    /// Names what is not ready (the cause chains go to the log).
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("a buyer may only read their own orders")]
    NotYourOrders,
    #[error("the Seckill-Signature header is missing, malformed, stale or does not match: {0}")]
    InvalidSignature(String),
    #[error("payments are disabled: start the engine with SECKILL_PAYMENT_WEBHOOK_SECRET set")]
    PaymentsDisabled,
    #[error("the order is already paid by another payment")]
    AlreadyPaid,
    #[error("the order's payment window is closed (expired, cancelled, or no payment step); the payment is kept for a refund")]
    PaymentWindowClosed,
    #[error("the order cannot be cancelled: it is paid, expired, cancelled, or has no payment step")]
    NotCancellable,
    /// A backend's error: its role is the message, its cause goes to the log.
    #[error("{}", backend_message(.0))]
    Backend(BackendError),
}

impl ApiError {
    /// One error of each kind (each `code` the API can answer), for the API document's check.
    pub fn examples() -> Vec<ApiError> {
        use crate::backend::Role;
        use ApiError::*;
        vec![
            SaleNotFound,
            OrderNotFound,
            RouteNotFound,
            MethodNotAllowed,
            NotStarted,
            Ended,
            SoldOut,
            AlreadyPurchased,
            MissingUserId,
            InvalidUserId,
            ReservedUserId,
            AmbiguousIdentity,
            InvalidSale(String::new()),
            InvalidQuery(String::new()),
            MalformedJson(String::new()),
            PayloadTooLarge,
            RequestTimeout,
            Unauthorized,
            Forbidden,
            AdminDisabled,
            Overloaded,
            RateLimited(1),
            TokenRequired,
            IdentityRequired,
            InvalidToken(String::new()),
            PurchaseTokenRequired,
            InvalidPurchaseToken,
            AdmissionRequired,
            InvalidAdmission,
            NoWaitingRoom,
            ChallengeRequired,
            InvalidChallenge,
            NoChallenge,
            TicketNotFound,
            NotReady(String::new()),
            NotYourOrders,
            InvalidSignature(String::new()),
            PaymentsDisabled,
            AlreadyPaid,
            PaymentWindowClosed,
            NotCancellable,
            Backend(BackendError::unavailable(Role::Store, "example")),
            Backend(BackendError::outcome_unknown(Role::Log, "example")),
            Backend(BackendError::fault(Role::Store, "example")),
        ]
    }
}

/// What a buyer is told of a backend's error: which role failed and what to do, no internals.
fn backend_message(e: &BackendError) -> String {
    match e {
        BackendError::OutcomeUnknown { .. } => "the order could not be confirmed in time and may still be recorded; \
             check GET /api/sales/{id}/orders/{user} before retrying"
            .to_owned(),
        BackendError::Fault { .. } => "internal error".to_owned(),
        BackendError::Overloaded { .. } => "the engine is overloaded, retry shortly".to_owned(),
        other => format!("{other}, retry shortly"),
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            SaleNotFound | OrderNotFound | RouteNotFound | NoWaitingRoom | TicketNotFound | NoChallenge => {
                StatusCode::NOT_FOUND
            }
            AdmissionRequired | InvalidAdmission | ChallengeRequired | InvalidChallenge => StatusCode::FORBIDDEN,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            NotStarted | Ended | Forbidden | AdminDisabled => StatusCode::FORBIDDEN,
            SoldOut => StatusCode::GONE,
            AlreadyPurchased => StatusCode::CONFLICT,
            MissingUserId | InvalidUserId | ReservedUserId | AmbiguousIdentity | InvalidSale(_) | InvalidQuery(_)
            | MalformedJson(_) => StatusCode::BAD_REQUEST,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Unauthorized | TokenRequired | IdentityRequired | InvalidToken(_) | InvalidSignature(_) => {
                StatusCode::UNAUTHORIZED
            }
            PurchaseTokenRequired | InvalidPurchaseToken | NotYourOrders | PaymentsDisabled => StatusCode::FORBIDDEN,
            AlreadyPaid | PaymentWindowClosed | NotCancellable => StatusCode::CONFLICT,
            RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Overloaded | NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Backend(BackendError::Fault { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
            Backend(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            // Still an id the client may not send: the code clients already handle.
            InvalidUserId | ReservedUserId => "invalid_user_id",
            AmbiguousIdentity => "ambiguous_identity",
            InvalidSale(_) => "invalid_sale",
            InvalidQuery(_) => "invalid_query",
            MalformedJson(_) => "malformed_json",
            PayloadTooLarge => "payload_too_large",
            RequestTimeout => "request_timeout",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            AdminDisabled => "admin_disabled",
            Overloaded => "overloaded",
            RateLimited(_) => "rate_limited",
            TokenRequired => "token_required",
            IdentityRequired => "identity_required",
            InvalidToken(_) => "invalid_token",
            PurchaseTokenRequired => "purchase_token_required",
            InvalidPurchaseToken => "invalid_purchase_token",
            AdmissionRequired => "admission_required",
            InvalidAdmission => "invalid_admission",
            NoWaitingRoom => "no_waiting_room",
            ChallengeRequired => "challenge_required",
            InvalidChallenge => "invalid_challenge",
            NoChallenge => "no_challenge",
            TicketNotFound => "ticket_not_found",
            NotReady(_) => "not_ready",
            NotYourOrders => "not_your_orders",
            InvalidSignature(_) => "invalid_signature",
            PaymentsDisabled => "payments_disabled",
            AlreadyPaid => "already_paid",
            PaymentWindowClosed => "payment_window_closed",
            NotCancellable => "not_cancellable",
            Backend(BackendError::Unavailable { .. } | BackendError::Full { .. }) => "unavailable",
            Backend(BackendError::OutcomeUnknown { .. }) => "outcome_unknown",
            Backend(BackendError::Overloaded { .. }) => "overloaded",
            Backend(BackendError::Fault { .. }) => "internal",
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
            Refusal::LimitReached => ApiError::AlreadyPurchased,
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        ApiError::Backend(e)
    }
}

impl From<PurchaseError> for ApiError {
    fn from(e: PurchaseError) -> Self {
        match e {
            PurchaseError::Refused(r) => r.into(),
            PurchaseError::Overloaded => ApiError::Overloaded,
            PurchaseError::Backend(e) => e.into(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::SaleNotFound => ApiError::SaleNotFound,
            EngineError::OrderNotFound => ApiError::OrderNotFound,
            EngineError::Backend(e) => e.into(),
        }
    }
}

impl From<crate::payment::lifecycle::PaymentError> for ApiError {
    fn from(e: crate::payment::lifecycle::PaymentError) -> Self {
        use crate::payment::lifecycle::PaymentError;
        match e {
            PaymentError::OrderNotFound => ApiError::OrderNotFound,
            PaymentError::AlreadyPaid => ApiError::AlreadyPaid,
            PaymentError::WindowClosed => ApiError::PaymentWindowClosed,
            PaymentError::NotCancellable => ApiError::NotCancellable,
            PaymentError::Backend(e) => e.into(),
        }
    }
}

impl From<WaitingRoomError> for ApiError {
    fn from(e: WaitingRoomError) -> Self {
        match e {
            WaitingRoomError::TicketNotFound => ApiError::TicketNotFound,
            WaitingRoomError::Backend(e) => e.into(),
        }
    }
}

impl From<UserIdError> for ApiError {
    fn from(e: UserIdError) -> Self {
        match e {
            UserIdError::Missing => ApiError::MissingUserId,
            UserIdError::Invalid => ApiError::InvalidUserId,
        }
    }
}

impl From<InvalidSale> for ApiError {
    fn from(InvalidSale(why): InvalidSale) -> Self {
        ApiError::InvalidSale(why)
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
        let body = seckill_api::ErrorBody {
            error: seckill_api::ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
            },
        };
        // Two strings cannot fail to serialize; the fallback keeps the answer JSON regardless.
        serde_json::to_string(&body)
            .unwrap_or_else(|_| r#"{"error":{"code":"internal","message":"internal error"}}"#.to_owned())
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
            // No credentials at all: a challenge without an error (RFC 6750, 3.1).
            ApiError::IdentityRequired => {
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
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
        let cause = match &self {
            ApiError::Backend(e) => Some(e.chain()),
            ApiError::NotReady(what) => Some(what.clone()),
            _ => None,
        };
        if let Some(cause) = cause {
            response.extensions_mut().insert(FaultCause(cause));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_error_says_its_role_and_hides_its_cause() {
        let e = ApiError::from(BackendError::unavailable(
            crate::backend::Role::Store,
            "mysql: Table 'adv_db3.orders' doesn't exist",
        ));
        assert_eq!((e.status(), e.code()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
        assert_eq!(e.to_string(), "the order store is unavailable, retry shortly");
        let fault = ApiError::from(BackendError::fault(crate::backend::Role::Log, "bad json"));
        assert_eq!(
            (fault.status(), fault.code()),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        );
        assert_eq!(fault.to_string(), "internal error");
    }

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
