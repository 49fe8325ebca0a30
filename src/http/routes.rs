//! The route table: each route is written once, in [`super::routes()`]. Its path is the router's
//! path, the `route` label of the metrics, the name in a fault's log line, and the key the
//! OpenAPI document is checked against; its methods are what the document must describe.

use std::convert::Infallible;
use std::sync::Arc;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodRouter, Router};

use super::error::ApiError;
use super::limit::RateLimits;
use super::observe::ObserveLayer;

/// What a route is for, where that changes how it is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Everything else: the API, the pages.
    Plain,
    /// Sells: its latency is the admin page's purchase latency.
    Purchase,
    /// Monitoring (`/metrics`, `/healthz`, `/readyz`): exempt from the per-IP limit, so an
    /// engine under attack can still be watched.
    Monitoring,
}

/// One route as the table keeps it; its index in the table is its metrics slot.
#[derive(Clone, Debug)]
pub struct RouteInfo {
    pub path: &'static str,
    pub methods: Vec<Method>,
    pub kind: Kind,
}

/// A route's handlers by method, with the methods remembered for the table.
pub struct Methods<S> {
    router: MethodRouter<S, Infallible>,
    methods: Vec<Method>,
}

pub fn get<H: Handler<T, S>, T: 'static, S: Clone + Send + Sync + 'static>(handler: H) -> Methods<S> {
    Methods {
        router: axum::routing::get(handler),
        methods: vec![Method::GET],
    }
}

pub fn post<H: Handler<T, S>, T: 'static, S: Clone + Send + Sync + 'static>(handler: H) -> Methods<S> {
    Methods {
        router: axum::routing::post(handler),
        methods: vec![Method::POST],
    }
}

impl<S: Clone + Send + Sync + 'static> Methods<S> {
    pub fn post<H: Handler<T, S>, T: 'static>(mut self, handler: H) -> Self {
        self.router = self.router.post(handler);
        self.methods.push(Method::POST);
        self
    }
}

/// Builds the router and its table together, so neither can name a route the other lacks.
pub struct Routes<S> {
    router: Router<S>,
    table: Vec<RouteInfo>,
    limits: Arc<RateLimits>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new(limits: Arc<RateLimits>) -> Self {
        Routes {
            router: Router::new(),
            table: Vec::new(),
            limits,
        }
    }

    /// Adds `path` behind its observing layer (request id, per-IP limit, metrics in the next
    /// slot). The layer also wraps the route's 405 answer, or that answer would bypass it.
    pub fn add(mut self, path: &'static str, kind: Kind, methods: Methods<S>) -> Self {
        let layer = ObserveLayer::new(
            Arc::clone(&self.limits),
            self.table.len(),
            path,
            kind != Kind::Monitoring,
        );
        let router = methods
            .router
            .fallback(|| async { ApiError::MethodNotAllowed })
            .layer(layer);
        self.router = self.router.route(path, router);
        self.table.push(RouteInfo {
            path,
            methods: methods.methods,
            kind,
        });
        self
    }

    /// The router (with the observed fallback for unknown paths, in the slot after the last
    /// route) and the table.
    pub fn finish(self) -> (Router<S>, Vec<RouteInfo>) {
        let unmatched = ObserveLayer::new(self.limits, self.table.len(), UNMATCHED, true);
        let fallback = axum::handler::HandlerWithoutStateExt::into_service(|| async { ApiError::RouteNotFound });
        let router = self
            .router
            .fallback_service(tower_layer::Layer::layer(&unmatched, fallback));
        (router, self.table)
    }
}

/// The metrics label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";
