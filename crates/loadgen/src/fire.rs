//! Firing the load: `concurrency` workers share one request counter and each sends purchases
//! until `requests` are sent or the `duration` runs out.
//!
//! Closed loop by default: a worker sends its next request when the last is answered. With a
//! `rate` it is open loop: request *i* is due at `start + i/rate`, and its latency is measured
//! from when it was due, so a stalled server cannot hide its queueing (coordinated omission).
//!
//! With a payer (`--pay-ratio`) the workers share a buyer counter instead: each buys for one
//! buyer until it holds a unit, trying again after `sold_out` while held units may come back.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use jsonwebtoken::EncodingKey;
use seckill_api::{ClassicPurchase, PurchaseTokenView};
use tokio::task::JoinError;

use crate::check::is_at_rest;
use crate::client::Target;
use crate::payment::Payer;
use crate::report::Counts;

/// What one purchase request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    SoldOut,
    AlreadyPurchased,
    /// The sale has not started or has ended.
    Closed,
    /// Shed by the engine (429, 503).
    Overloaded,
    /// Any other answer, or none.
    Error,
}

/// Which purchase route answered: the classic API answers 200 whether it sold or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `POST /seckill/seckill`.
    Classic,
    /// `POST /api/sales/{id}/purchase` (and the purchase token before it).
    PerUser,
}

/// The outcome of one answer, by its status and, for the classic API, its `ok` and `code`.
pub(crate) fn classify(route: Route, status: StatusCode, body: &[u8]) -> Outcome {
    match status.as_u16() {
        201 => Outcome::Success,
        200 if route == Route::Classic => match serde_json::from_slice::<ClassicPurchase>(body) {
            Ok(ClassicPurchase { ok: true, .. }) => Outcome::Success,
            Ok(refused) => match refused.code.as_deref() {
                Some("sold_out") => Outcome::SoldOut,
                Some("not_started" | "ended") => Outcome::Closed,
                _ => Outcome::Error,
            },
            Err(_) => Outcome::Error,
        },
        410 => Outcome::SoldOut,
        409 => Outcome::AlreadyPurchased,
        403 => Outcome::Closed,
        429 | 503 => Outcome::Overloaded,
        _ => Outcome::Error,
    }
}

/// Who buys.
pub(crate) enum Buyers {
    /// Each request a new anonymous buyer of the demo sale, through the classic API.
    Classic,
    /// `users` named buyers in turn, through the per-user API.
    PerUser {
        users: u64,
        identity: Identity,
        /// Fetch a purchase token before each purchase and send it.
        purchase_token: bool,
    },
}

/// How a named buyer says who they are.
pub(crate) enum Identity {
    /// `X-User-Id`, as behind a gateway the engine trusts.
    Header,
    /// A Bearer JWT signed with this key, whose `sub` is the buyer.
    Jwt(EncodingKey),
}

/// The load to fire.
pub(crate) struct Load {
    pub sale: i64,
    pub buyers: Buyers,
    pub requests: u64,
    /// Workers, each with at most one request in flight.
    pub concurrency: u64,
    /// Open loop at this many requests per second; `None`: closed loop.
    pub rate: Option<f64>,
    /// Stop sending after this long even if not every request is sent.
    pub duration: Option<Duration>,
    /// Keep every request's (time, latency) for a plot.
    pub keep_samples: bool,
    /// With named buyers on a sale with a payment window: each buyer buys until it holds a
    /// unit, and the payer pays or abandons each hold.
    pub payer: Option<Arc<Payer>>,
}

/// How long a buyer refused `sold_out` waits before trying again while units may come back.
const SOLD_OUT_BACKOFF: Duration = Duration::from_millis(50);

/// When a request was due, in seconds since the start, and its latency in milliseconds.
pub(crate) type Sample = (f32, f32);

/// Latencies are recorded in microseconds, up to an hour, to 3 significant digits.
pub(crate) const MAX_LATENCY_US: u64 = 3_600_000_000;

pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

/// What one worker saw.
pub(crate) struct WorkerResult {
    pub counts: Counts,
    /// Latency of each request, in microseconds.
    pub latency: Histogram<u64>,
    /// Units bought by each named buyer (by number).
    pub per_user: HashMap<u64, u32>,
    pub samples: Vec<Sample>,
}

impl WorkerResult {
    fn new() -> Self {
        WorkerResult {
            counts: Counts::default(),
            latency: latency_histogram(),
            per_user: HashMap::new(),
            samples: Vec::new(),
        }
    }
}

/// Every worker's result, and how long the load took.
pub(crate) struct Fired {
    pub workers: Vec<WorkerResult>,
    pub elapsed: Duration,
}

/// Fires `load` at `target` and waits for every worker.
pub(crate) async fn fire(target: Arc<Target>, load: Load) -> Result<Fired, JoinError> {
    let started = Instant::now();
    let shared = Arc::new(Shared {
        target,
        paths: Paths::of(load.sale),
        progress: progress_bar(match (&load.payer, &load.buyers) {
            (Some(_), Buyers::PerUser { users, .. }) => *users,
            _ => load.requests,
        }),
        next: AtomicU64::new(0),
        started,
        // A duration too long to count is no deadline.
        deadline: load.duration.and_then(|d| started.checked_add(d)),
        // Buyer ids differ from run to run, so a second run on the same sale buys afresh.
        run_id: uuid::Uuid::new_v4().as_u64_pair().0 as u32,
        load,
    });
    let workers: Vec<_> = (0..shared.load.concurrency.max(1))
        .map(|_| match shared.load.payer.clone() {
            Some(payer) => tokio::spawn(work_until_held(Arc::clone(&shared), payer)),
            None => tokio::spawn(work(Arc::clone(&shared))),
        })
        .collect();
    let mut results = Vec::with_capacity(workers.len());
    for worker in workers {
        results.push(worker.await?);
    }
    let elapsed = started.elapsed();
    shared.progress.finish_and_clear();
    Ok(Fired {
        workers: results,
        elapsed,
    })
}

/// What the workers share.
struct Shared {
    target: Arc<Target>,
    load: Load,
    paths: Paths,
    progress: indicatif::ProgressBar,
    /// The number of the next request to send.
    next: AtomicU64,
    started: Instant,
    deadline: Option<Instant>,
    run_id: u32,
}

struct Paths {
    classic: &'static str,
    purchase: String,
    token: String,
}

impl Paths {
    fn of(sale: i64) -> Self {
        Paths {
            classic: "/seckill/seckill",
            purchase: format!("/api/sales/{sale}/purchase"),
            token: format!("/api/sales/{sale}/token"),
        }
    }
}

/// One worker: takes the next request number until none is left, sends it, records it.
async fn work(shared: Arc<Shared>) -> WorkerResult {
    let mut result = WorkerResult::new();
    let mut user = String::new();
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.load.requests || shared.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let due = shared.due(i).await;
        let (outcome, buyer) = shared.buy(i, &mut user).await;
        result.record(&shared, due, outcome);
        if let (Outcome::Success, Some(buyer)) = (outcome, buyer) {
            *result.per_user.entry(buyer).or_insert(0) += 1;
        }
        shared.progress.inc(1);
    }
    result
}

/// One worker of a run with payments: takes the next buyer until none is left, and buys for
/// it until it holds a unit. A buyer refused `sold_out` tries again while units may still come
/// back (holds awaiting payment expire back on sale); the payer takes every hold won.
async fn work_until_held(shared: Arc<Shared>, payer: Arc<Payer>) -> WorkerResult {
    let mut result = WorkerResult::new();
    let mut user = String::new();
    let Buyers::PerUser {
        users,
        identity,
        purchase_token,
    } = &shared.load.buyers
    else {
        return result;
    };
    let past_deadline = || shared.deadline.is_some_and(|d| Instant::now() >= d);
    loop {
        let buyer = shared.next.fetch_add(1, Ordering::Relaxed);
        if buyer >= *users || past_deadline() {
            break;
        }
        user.clear();
        let _ = write!(user, "bench-{:08x}-{buyer}", shared.run_id);
        loop {
            let due = Instant::now();
            let (mut outcome, body) = shared.buy_as(&user, identity, *purchase_token).await;
            if outcome == Outcome::Success && !payer.take(&body) {
                // A 201 that is not a confirmation: nothing the payer can pay.
                outcome = Outcome::Error;
            }
            result.record(&shared, due, outcome);
            if outcome == Outcome::Success {
                *result.per_user.entry(buyer).or_insert(0) += 1;
            }
            let again = match outcome {
                Outcome::SoldOut => match shared.target.sale(shared.load.sale).await {
                    Ok(sale) if sale.remaining > 0 => Some(Duration::ZERO),
                    Ok(sale) if !is_at_rest(&sale) => Some(SOLD_OUT_BACKOFF),
                    // Nothing held, nothing in transit, nothing left: no unit can come back.
                    _ => None,
                },
                Outcome::Overloaded => Some(SOLD_OUT_BACKOFF),
                _ => None,
            };
            match again {
                Some(wait) if !past_deadline() => tokio::time::sleep(wait).await,
                _ => break,
            }
        }
        shared.progress.inc(1);
    }
    result
}

impl WorkerResult {
    /// Records one request, due at `due`, and its outcome.
    fn record(&mut self, shared: &Shared, due: Instant, outcome: Outcome) {
        let micros = (due.elapsed().as_micros().max(1) as u64).min(MAX_LATENCY_US);
        // In bounds by construction: the only error `record` has.
        let _ = self.latency.record(micros);
        if shared.load.keep_samples {
            let since_start = (due - shared.started).as_secs_f32();
            self.samples.push((since_start, micros as f32 / 1000.0));
        }
        self.counts.record(outcome);
    }
}

impl Shared {
    /// When request `i` is due: now (closed loop), or on the open loop's schedule, waited for.
    async fn due(&self, i: u64) -> Instant {
        match self.load.rate {
            Some(rate) => {
                let due = self.started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        }
    }

    /// Sends purchase `i`; answers its outcome and, for a named buyer, the buyer's number.
    async fn buy(&self, i: u64, user: &mut String) -> (Outcome, Option<u64>) {
        match &self.load.buyers {
            Buyers::Classic => {
                let outcome = match self.target.send(Method::POST, self.paths.classic, &[]).await {
                    Ok((status, body)) => classify(Route::Classic, status, &body),
                    Err(_) => Outcome::Error,
                };
                (outcome, None)
            }
            Buyers::PerUser {
                users,
                identity,
                purchase_token,
            } => {
                let buyer = i % users;
                user.clear();
                let _ = write!(user, "bench-{:08x}-{buyer}", self.run_id);
                (self.buy_as(user, identity, *purchase_token).await.0, Some(buyer))
            }
        }
    }

    /// One named buyer's purchase: identity by header or JWT, and the purchase token fetched
    /// first when asked. The outcome, and the purchase's answer (empty when none).
    async fn buy_as(&self, user: &str, identity: &Identity, purchase_token: bool) -> (Outcome, Bytes) {
        let bearer;
        let who = match identity {
            Identity::Header => ("x-user-id", user),
            Identity::Jwt(key) => match signed(key, user) {
                Ok(jwt) => {
                    bearer = format!("Bearer {jwt}");
                    ("authorization", bearer.as_str())
                }
                Err(_) => return (Outcome::Error, Bytes::new()),
            },
        };
        let (token, with_token);
        let headers: &[(&str, &str)] = if purchase_token {
            token = match self.purchase_token(who).await {
                Ok(token) => token,
                Err(refused) => return (refused, Bytes::new()),
            };
            with_token = [who, ("x-purchase-token", token.as_str())];
            &with_token
        } else {
            std::slice::from_ref(&who)
        };
        match self.target.send(Method::POST, &self.paths.purchase, headers).await {
            Ok((status, body)) => (classify(Route::PerUser, status, &body), body),
            Err(_) => (Outcome::Error, Bytes::new()),
        }
    }

    /// The buyer's purchase token, or the outcome of the refusal (a sale not live, sold out...).
    async fn purchase_token(&self, who: (&str, &str)) -> Result<String, Outcome> {
        match self.target.send(Method::GET, &self.paths.token, &[who]).await {
            Ok((StatusCode::OK, body)) => serde_json::from_slice::<PurchaseTokenView>(&body)
                .map(|issued| issued.token)
                .map_err(|_| Outcome::Error),
            Ok((status, body)) => Err(classify(Route::PerUser, status, &body)),
            Err(_) => Err(Outcome::Error),
        }
    }
}

/// An HS256 JWT for `user`, valid for an hour.
fn signed(key: &EncodingKey, user: &str) -> jsonwebtoken::errors::Result<String> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: u64,
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let claims = Claims {
        sub: user,
        exp: now.as_secs() + 3600,
    };
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, key)
}

/// A progress bar on a terminal; nothing when stderr is a file or a pipe.
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {per_sec}") {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).expect("valid status")
    }

    #[test]
    fn per_user_answers_are_classified_by_status() {
        for (code, outcome) in [
            (201, Outcome::Success),
            (410, Outcome::SoldOut),
            (409, Outcome::AlreadyPurchased),
            (403, Outcome::Closed),
            (429, Outcome::Overloaded),
            (503, Outcome::Overloaded),
            (200, Outcome::Error),
            (400, Outcome::Error),
            (500, Outcome::Error),
        ] {
            assert_eq!(classify(Route::PerUser, status(code), b"{}"), outcome, "{code}");
        }
    }

    #[test]
    fn classic_answers_are_classified_by_ok_and_code() {
        let classic = |body: &str| classify(Route::Classic, StatusCode::OK, body.as_bytes());
        assert_eq!(
            classic(r#"{"messages":"购买成功，还剩下1个","ok":true,"order_id":"o","remaining":1,"user_id":"anon-1"}"#),
            Outcome::Success
        );
        assert_eq!(
            classic(r#"{"messages":"抢完了","ok":false,"code":"sold_out"}"#),
            Outcome::SoldOut
        );
        assert_eq!(
            classic(r#"{"messages":"活动还没开始","ok":false,"code":"not_started"}"#),
            Outcome::Closed
        );
        assert_eq!(
            classic(r#"{"messages":"活动已结束","ok":false,"code":"ended"}"#),
            Outcome::Closed
        );
        assert_eq!(classic(r#"{"messages":"?","ok":false}"#), Outcome::Error);
        assert_eq!(classic("not json"), Outcome::Error);
        // Beyond 200 the classic API answers like the per-user one.
        assert_eq!(
            classify(
                Route::Classic,
                status(503),
                br#"{"error":{"code":"overloaded","message":"m"}}"#
            ),
            Outcome::Overloaded
        );
    }

    #[test]
    fn a_signed_jwt_names_the_buyer() {
        let key = EncodingKey::from_secret(b"k");
        let jwt = signed(&key, "bench-1-2").expect("signs");
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &jwt,
            &jsonwebtoken::DecodingKey::from_secret(b"k"),
            &jsonwebtoken::Validation::default(),
        )
        .expect("valid for the engine's default validation");
        assert_eq!(decoded.claims["sub"], "bench-1-2");
    }
}
