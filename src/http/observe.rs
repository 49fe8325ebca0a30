//! The one middleware every request passes: request id, per-IP rate limit, metrics by route
//! and status, and the log line of a server fault (with its cause and the request id).
//!
//! A hand-written tower service rather than `axum::middleware::from_fn`: that one boxes a
//! future and clones the inner service per request, which on the sold-out path (a few µs per
//! request) cost about a fifth of the throughput.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::FaultCause;
use super::limit::RateLimits;
use crate::metrics::METRICS;
use crate::throttle::Throttle;

pub const REQUEST_ID: &str = "x-request-id";

/// Ids this process mints: a random prefix and a counter (unique without a syscall each).
static ID_PREFIX: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Ids a thread takes from [`NEXT_ID`] at once, so threads do not share the counter's cache line.
const ID_BLOCK: u64 = 1024;
const ID_ARENA_BYTES: usize = 16 * 1024;

/// One thread's id minting: its block of counter values and the arena the ids are written into
/// and shared from, so minting an id allocates nothing (one arena per ~500 ids).
struct IdMinter {
    next: u64,
    end: u64,
    arena: bytes::BytesMut,
}

impl IdMinter {
    fn mint(&mut self) -> HeaderValue {
        if self.next == self.end {
            self.next = NEXT_ID.fetch_add(ID_BLOCK, Ordering::Relaxed);
            self.end = self.next + ID_BLOCK;
        }
        let n = self.next;
        self.next += 1;
        if self.arena.capacity() - self.arena.len() < 40 {
            self.arena = bytes::BytesMut::with_capacity(ID_ARENA_BYTES);
        }
        self.arena.extend_from_slice(ID_PREFIX.as_bytes());
        self.arena.extend_from_slice(b"-");
        self.arena.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        HeaderValue::from_maybe_shared(self.arena.split().freeze())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    }
}

thread_local! {
    static IDS: std::cell::RefCell<IdMinter> =
        std::cell::RefCell::new(IdMinter { next: 0, end: 0, arena: bytes::BytesMut::new() });
}

/// A caller's id is kept when it is short and printable, so a gateway's trace id flows through.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(given) = headers.get(REQUEST_ID) {
        let bytes = given.as_bytes();
        if !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic()) {
            return given.clone();
        }
    }
    IDS.with(|ids| ids.borrow_mut().mint())
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

/// Observes one route: its metrics slot is fixed when the router is built, so a request costs
/// no route lookup.
#[derive(Clone)]
pub struct ObserveLayer {
    route: Route,
}

/// What the layer knows of its route.
#[derive(Clone)]
struct Route {
    limits: Arc<RateLimits>,
    slot: usize,
    path: &'static str,
    /// Subject to the per-IP limit (monitoring routes are not).
    ip_limited: bool,
}

impl ObserveLayer {
    pub fn new(limits: Arc<RateLimits>, slot: usize, path: &'static str, ip_limited: bool) -> Self {
        ObserveLayer {
            route: Route {
                limits,
                slot,
                path,
                ip_limited,
            },
        }
    }
}

impl<S> tower_layer::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            route: self.route.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    route: Route,
}

impl<S> tower_service::Service<Request> for Observe<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let id = request_id(request.headers());
        let route = &self.route;
        let limits = &route.limits;
        let limited = if route.ip_limited && limits.ip.enabled() {
            match client_ip(&request, limits.trust_forwarded_for) {
                Some(ip) => limits.ip.check(&ip),
                None => Ok(()),
            }
        } else {
            Ok(())
        };
        let method = request.method().clone();
        let state = match limited {
            Ok(()) => State::Inner {
                future: self.inner.call(request),
            },
            Err(refused) => State::Refused {
                response: Some(refused.into_response()),
            },
        };
        ObserveFuture {
            state,
            done: Some(Done {
                started,
                id,
                slot: route.slot,
                path: route.path,
                method,
            }),
        }
    }
}

/// What the response needs once it is ready.
struct Done {
    started: Instant,
    id: HeaderValue,
    slot: usize,
    path: &'static str,
    method: Method,
}

impl Done {
    fn finish(self, mut response: Response) -> Response {
        let status = response.status();
        METRICS.observe_request(self.slot, status.as_u16(), self.started.elapsed());
        if let Some(FaultCause(cause)) = response.extensions_mut().remove::<FaultCause>() {
            let (id, method, route) = (&self.id, &self.method, self.path);
            // A backend outage (503) is the operator's to fix and may repeat per request: a
            // warning. Both are throttled: a stampede against a dead backend must not flood the log.
            static UNAVAILABLE: Throttle = Throttle::new(1_000);
            static FAILED: Throttle = Throttle::new(1_000);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                if let Some(suppressed) = UNAVAILABLE.allow() {
                    tracing::warn!(request_id = ?id, %method, route, status = status.as_u16(), %cause, suppressed, "backend unavailable");
                }
            } else if let Some(suppressed) = FAILED.allow() {
                tracing::error!(request_id = ?id, %method, route, status = status.as_u16(), %cause, suppressed, "request failed");
            }
        }
        response.headers_mut().insert(REQUEST_ID, self.id);
        response
    }
}

pin_project_lite::pin_project! {
    pub struct ObserveFuture<F> {
        #[pin]
        state: State<F>,
        done: Option<Done>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProjection]
    enum State<F> {
        Inner { #[pin] future: F },
        Refused { response: Option<Response> },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for ObserveFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.state.project() {
            StateProjection::Inner { future } => match future.poll(cx) {
                Poll::Ready(Ok(response)) => response,
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => return Poll::Pending,
            },
            StateProjection::Refused { response } => response
                .take()
                .unwrap_or_else(|| StatusCode::TOO_MANY_REQUESTS.into_response()),
        };
        Poll::Ready(Ok(match this.done.take() {
            Some(done) => done.finish(response),
            None => response,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_are_prefix_dash_counter_and_callers_ids_are_kept_when_sane() {
        let a = request_id(&HeaderMap::new());
        let b = request_id(&HeaderMap::new());
        let (a, b) = (a.to_str().expect("ascii"), b.to_str().expect("ascii"));
        assert_ne!(a, b);
        let (prefix, n) = a.rsplit_once('-').expect("dash");
        assert_eq!(prefix, ID_PREFIX.as_str());
        assert!(n.parse::<u64>().is_ok(), "{a}");
        let mut given = HeaderMap::new();
        given.insert(REQUEST_ID, HeaderValue::from_static("trace-1"));
        assert_eq!(request_id(&given), "trace-1");
        given.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&given), "has space");
    }
}
