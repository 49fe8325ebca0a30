//! Process-wide metrics, rendered as Prometheus text at `/metrics`.
//!
//! Fixed tables of relaxed atomics, sized at compile time: recording a request or a purchase is
//! a few uncontended-ish increments, never an allocation or a lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

pub static METRICS: Metrics = Metrics::new();

/// What became of a purchase attempt: the `outcome` label of `seckill_purchases_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurchaseOutcome {
    Success,
    SoldOut,
    AlreadyPurchased,
    NotStarted,
    Ended,
    SaleNotFound,
    /// A backend could not answer, or the engine shed the purchase: worth a retry.
    Unavailable,
    /// A fault of ours.
    Error,
}

impl PurchaseOutcome {
    pub const ALL: [PurchaseOutcome; 8] = [
        PurchaseOutcome::Success,
        PurchaseOutcome::SoldOut,
        PurchaseOutcome::AlreadyPurchased,
        PurchaseOutcome::NotStarted,
        PurchaseOutcome::Ended,
        PurchaseOutcome::SaleNotFound,
        PurchaseOutcome::Unavailable,
        PurchaseOutcome::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PurchaseOutcome::Success => "success",
            PurchaseOutcome::SoldOut => "sold_out",
            PurchaseOutcome::AlreadyPurchased => "already_purchased",
            PurchaseOutcome::NotStarted => "not_started",
            PurchaseOutcome::Ended => "ended",
            PurchaseOutcome::SaleNotFound => "sale_not_found",
            PurchaseOutcome::Unavailable => "unavailable",
            PurchaseOutcome::Error => "error",
        }
    }
}

/// A payment-lifecycle transition: the `kind` label of `seckill_payment_transitions_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransitionKind {
    Paid,
    Expired,
    Cancelled,
}

impl TransitionKind {
    pub const ALL: [TransitionKind; 3] = [TransitionKind::Paid, TransitionKind::Expired, TransitionKind::Cancelled];

    pub fn label(self) -> &'static str {
        match self {
            TransitionKind::Paid => "paid",
            TransitionKind::Expired => "expired",
            TransitionKind::Cancelled => "cancelled",
        }
    }
}

/// Which rate limit refused a request: the `scope` label of `seckill_rate_limited_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitScope {
    Ip,
    User,
}

impl RateLimitScope {
    const ALL: [RateLimitScope; 2] = [RateLimitScope::Ip, RateLimitScope::User];

    fn label(self) -> &'static str {
        match self {
            RateLimitScope::Ip => "ip",
            RateLimitScope::User => "user",
        }
    }
}

/// Why a connection was closed as soon as it was accepted: the `reason` label of
/// `seckill_connections_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// Its client address already held `--max-connections-per-ip`.
    PerIp,
    /// The engine already held `--max-connections`.
    Total,
}

impl ConnectionRefusal {
    const ALL: [ConnectionRefusal; 2] = [ConnectionRefusal::PerIp, ConnectionRefusal::Total];

    fn label(self) -> &'static str {
        match self {
            ConnectionRefusal::PerIp => "per_ip",
            ConnectionRefusal::Total => "total",
        }
    }
}

/// Why the engine closed a connection its client had not closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionClose {
    /// A request head did not arrive whole within the header timeout.
    HeaderTimeout,
    /// Nothing moved for the keep-alive timeout.
    Idle,
}

/// A kind of round trip the Redis gate or waiting room makes: the `script` label of
/// `seckill_redis_calls_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisCall {
    /// One group of a sale's purchases (all that queued while the previous group was in flight).
    Reserve,
    /// One group of a sale's reservations given back.
    Release,
    /// One pipeline clearing a sale's confirmed reservations and transitions.
    Confirm,
    /// One payment-lifecycle transition of one hold.
    Settle,
    /// One pass of a sale's due holds.
    ExpireDue,
    /// Registering a sale.
    Load,
    /// One read of a sale's units left, for every reader that asked while the previous call of
    /// the sale was in flight.
    Remaining,
    /// One group of a sale's waiting-room joins and polls.
    Queue,
    /// One batch of a sale's waiting-room sweep (items: the tickets it looked at).
    QueueSweep,
    /// Waiting for replicas to have a group's decisions (`--redis-wait-replicas`).
    Wait,
    /// One half of moving stock between the shards of a sharded sale (items: units moved).
    Transfer,
}

impl RedisCall {
    pub const ALL: [RedisCall; 11] = [
        RedisCall::Reserve,
        RedisCall::Release,
        RedisCall::Confirm,
        RedisCall::Settle,
        RedisCall::ExpireDue,
        RedisCall::Load,
        RedisCall::Remaining,
        RedisCall::Queue,
        RedisCall::QueueSweep,
        RedisCall::Wait,
        RedisCall::Transfer,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RedisCall::Reserve => "reserve",
            RedisCall::Release => "release",
            RedisCall::Confirm => "confirm",
            RedisCall::Settle => "settle",
            RedisCall::ExpireDue => "expire_due",
            RedisCall::Load => "load",
            RedisCall::Remaining => "remaining",
            RedisCall::Queue => "queue",
            RedisCall::QueueSweep => "queue_sweep",
            RedisCall::Wait => "wait",
            RedisCall::Transfer => "transfer",
        }
    }
}

/// Routes the HTTP layer may report; the last slot collects everything else.
pub const MAX_ROUTES: usize = 32;
/// Statuses counted one by one; any other lands in the `other` column.
const STATUSES: [u16; 18] = [
    200, 201, 204, 304, 400, 401, 403, 404, 405, 408, 409, 410, 413, 422, 429, 500, 502, 503,
];
const MAX_BUCKETS: usize = 16;
/// Request latency bounds, in nanoseconds (0.5 ms … 10 s).
const LATENCY_BOUNDS_NS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
/// Group-commit batch size bounds, in orders.
const BATCH_BOUNDS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

/// A Prometheus histogram over fixed bounds, in integer units (scaled when rendered). Its
/// total is the sum of its buckets: one atomic fewer per observation.
pub struct Histogram {
    bounds: &'static [u64],
    counts: [AtomicU64; MAX_BUCKETS],
    sum: AtomicU64,
}

impl Histogram {
    const fn new(bounds: &'static [u64]) -> Self {
        assert!(bounds.len() < MAX_BUCKETS);
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; MAX_BUCKETS],
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// `name_bucket{labels,le=..}` (cumulative), `name_sum`, `name_count` of histograms (shards of
/// one, over the same bounds) read as one; values × `scale`.
fn render_histogram(shards: &[&Histogram], out: &mut String, name: &str, labels: &str, scale: f64) {
    let bounds = shards.first().map_or(&[][..], |h| h.bounds);
    let (buckets, count, sum) = merged(shards);
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (bound, in_bucket) in bounds.iter().zip(&buckets) {
        cumulative += in_bucket;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}",
            *bound as f64 * scale
        );
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", sum as f64 * scale);
    let _ = writeln!(out, "{name}_count{braces} {count}");
}

/// Several histograms over the same bounds, read as one: counts per bucket, total, sum.
fn merged(histograms: &[&Histogram]) -> (Vec<u64>, u64, u64) {
    let bounds = histograms.first().map_or(0, |h| h.bounds.len());
    let mut buckets = vec![0; bounds + 1];
    let (mut count, mut sum) = (0, 0);
    for h in histograms {
        for (slot, c) in buckets.iter_mut().zip(&h.counts) {
            let c = c.load(Relaxed);
            *slot += c;
            count += c;
        }
        sum += h.sum.load(Relaxed);
    }
    (buckets, count, sum)
}

/// The upper bound of the bucket holding quantile `q` (the last finite bound if beyond).
fn quantile(bounds: &[u64], buckets: &[u64], count: u64, q: f64) -> u64 {
    if count == 0 {
        return 0;
    }
    let rank = (q * count as f64).ceil() as u64;
    let mut seen = 0;
    for (i, c) in buckets.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return bounds.get(i).or(bounds.last()).copied().unwrap_or(0);
        }
    }
    bounds.last().copied().unwrap_or(0)
}

/// Counters each worker thread bumps: one shard per thread (round-robin), aligned apart, so two
/// cores never fight over a cache line on the hot path. Reading sums the shards.
const SHARDS: usize = 8;

#[repr(align(128))]
struct Shard {
    purchases: [AtomicU64; PurchaseOutcome::ALL.len()],
    requests: [[AtomicU64; STATUSES.len() + 1]; MAX_ROUTES],
    latency: [Histogram; MAX_ROUTES],
}

impl Shard {
    const fn new() -> Self {
        Shard {
            purchases: [const { AtomicU64::new(0) }; PurchaseOutcome::ALL.len()],
            requests: [const { [const { AtomicU64::new(0) }; STATUSES.len() + 1] }; MAX_ROUTES],
            latency: [const { Histogram::new(&LATENCY_BOUNDS_NS) }; MAX_ROUTES],
        }
    }
}

static NEXT_SHARD: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static SHARD: usize = (NEXT_SHARD.fetch_add(1, Relaxed) as usize) % SHARDS;
}

pub struct Metrics {
    shards: [Shard; SHARDS],
    rate_limited: [AtomicU64; RateLimitScope::ALL.len()],
    commit_batches: Histogram,
    store_queue_depth: AtomicU64,
    producer_queue: AtomicU64,
    consumer_lag: AtomicU64,
    consumer_rewinds: AtomicU64,
    log_records: AtomicU64,
    log_record_orders: AtomicU64,
    order_conflicts: AtomicU64,
    transitions: [AtomicU64; TransitionKind::ALL.len()],
    late_payments: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: [AtomicU64; ConnectionRefusal::ALL.len()],
    header_timeouts: AtomicU64,
    idle_closes: AtomicU64,
    redis_calls: [AtomicU64; RedisCall::ALL.len()],
    redis_items: [AtomicU64; RedisCall::ALL.len()],
}

/// What the admin page shows (`GET /api/admin/stats`), cumulative since start.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub purchases: serde_json::Map<String, serde_json::Value>,
    pub requests: RequestSummary,
    pub purchase_latency: LatencySummary,
}

#[derive(Debug, Serialize)]
pub struct RequestSummary {
    pub total: u64,
    pub client_errors: u64,
    pub server_errors: u64,
}

#[derive(Debug, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub sum_seconds: f64,
    pub p50_seconds: f64,
    pub p99_seconds: f64,
}

/// Per-process values read when rendering.
pub struct Snapshot<'a> {
    pub routes: &'a [&'a str],
    /// `(sale id, stock, remaining)`.
    pub per_sale: &'a [(i64, u64, u64)],
    pub purchases_in_flight: u64,
    /// `(sale id, its waiting room's counters)`, for the sales with a waiting room.
    pub queues: &'a [(i64, crate::waiting_room::QueueStats)],
}

impl Metrics {
    const fn new() -> Self {
        Metrics {
            shards: [const { Shard::new() }; SHARDS],
            rate_limited: [const { AtomicU64::new(0) }; RateLimitScope::ALL.len()],
            commit_batches: Histogram::new(&BATCH_BOUNDS),
            store_queue_depth: AtomicU64::new(0),
            producer_queue: AtomicU64::new(0),
            consumer_lag: AtomicU64::new(0),
            consumer_rewinds: AtomicU64::new(0),
            log_records: AtomicU64::new(0),
            log_record_orders: AtomicU64::new(0),
            order_conflicts: AtomicU64::new(0),
            transitions: [const { AtomicU64::new(0) }; TransitionKind::ALL.len()],
            late_payments: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_refused: [const { AtomicU64::new(0) }; ConnectionRefusal::ALL.len()],
            header_timeouts: AtomicU64::new(0),
            idle_closes: AtomicU64::new(0),
            redis_calls: [const { AtomicU64::new(0) }; RedisCall::ALL.len()],
            redis_items: [const { AtomicU64::new(0) }; RedisCall::ALL.len()],
        }
    }

    pub fn observe_purchase(&self, outcome: PurchaseOutcome) {
        self.shard().purchases[outcome as usize].fetch_add(1, Relaxed);
    }

    fn shard(&self) -> &Shard {
        &self.shards[SHARD.with(|s| *s)]
    }

    fn purchases(&self, outcome: PurchaseOutcome) -> u64 {
        self.shards
            .iter()
            .map(|s| s.purchases[outcome as usize].load(Relaxed))
            .sum()
    }

    fn requests(&self, route: usize, column: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.requests[route][column].load(Relaxed))
            .sum()
    }

    fn latency(&self, route: usize) -> Vec<&Histogram> {
        self.shards.iter().map(|s| &s.latency[route]).collect()
    }

    /// One answered request; `route` indexes the HTTP layer's route table.
    pub fn observe_request(&self, route: usize, status: u16, elapsed: Duration) {
        let route = route.min(MAX_ROUTES - 1);
        let column = STATUSES.iter().position(|&s| s == status).unwrap_or(STATUSES.len());
        let shard = self.shard();
        shard.requests[route][column].fetch_add(1, Relaxed);
        shard.latency[route].observe(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn observe_rate_limited(&self, scope: RateLimitScope) {
        self.rate_limited[scope as usize].fetch_add(1, Relaxed);
    }

    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }

    pub fn observe_connection_refused(&self, reason: ConnectionRefusal) {
        self.connections_refused[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn observe_connection_closed(&self, why: ConnectionClose) {
        match why {
            ConnectionClose::HeaderTimeout => &self.header_timeouts,
            ConnectionClose::Idle => &self.idle_closes,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn observe_commit(&self, rows: usize) {
        self.commit_batches.observe(rows as u64);
    }

    /// Orders this process has committed in group commits or consumer batches, since start: how
    /// a benchmark sees the consumer's progress without querying the database it loads.
    pub fn committed_orders(&self) -> u64 {
        self.commit_batches.sum.load(Relaxed)
    }

    /// Payment-lifecycle transitions made durable.
    pub fn observe_transitions(&self, kind: TransitionKind, orders: u64) {
        self.transitions[kind as usize].fetch_add(orders, Relaxed);
    }

    /// A payment refused because its hold had closed (kept for a refund).
    pub fn observe_late_payment(&self) {
        self.late_payments.fetch_add(1, Relaxed);
    }

    /// Orders a store met whose `(sale, user, seq)` another order held (a fault, never 0 by design).
    pub fn observe_order_conflicts(&self, orders: u64) {
        self.order_conflicts.fetch_add(orders, Relaxed);
    }

    /// One round trip of the Redis gate or waiting room carrying `items` purchases, releases,
    /// confirmations, joins or polls.
    pub fn observe_redis_call(&self, call: RedisCall, items: usize) {
        self.redis_calls[call as usize].fetch_add(1, Relaxed);
        self.redis_items[call as usize].fetch_add(items as u64, Relaxed);
    }

    /// Round trips of one kind so far (for benchmarks that run the gate in process).
    pub fn redis_calls(&self, call: RedisCall) -> u64 {
        self.redis_calls[call as usize].load(Relaxed)
    }

    pub fn set_store_queue_depth(&self, depth: usize) {
        self.store_queue_depth.store(depth as u64, Relaxed);
    }

    pub fn set_producer_queue(&self, messages: u64) {
        self.producer_queue.store(messages, Relaxed);
    }

    pub fn set_consumer_lag(&self, messages: u64) {
        self.consumer_lag.store(messages, Relaxed);
    }

    /// One record handed to the Kafka producer, carrying `orders` events.
    pub fn observe_log_record(&self, orders: usize) {
        self.log_records.fetch_add(1, Relaxed);
        self.log_record_orders.fetch_add(orders as u64, Relaxed);
    }

    pub fn observe_consumer_rewind(&self) {
        self.consumer_rewinds.fetch_add(1, Relaxed);
    }

    /// The admin page's numbers; `purchase_routes` are the route slots that sell.
    pub fn summary(&self, purchase_routes: &[usize]) -> Summary {
        let purchases = PurchaseOutcome::ALL
            .iter()
            .map(|&outcome| (outcome.label().to_owned(), self.purchases(outcome).into()))
            .collect();
        let (mut total, mut client_errors, mut server_errors) = (0, 0, 0);
        for route in 0..MAX_ROUTES {
            for column in 0..=STATUSES.len() {
                let count = self.requests(route, column);
                total += count;
                match STATUSES.get(column) {
                    Some(400..=499) => client_errors += count,
                    Some(500..=599) => server_errors += count,
                    _ => {}
                }
            }
        }
        let histograms: Vec<&Histogram> = purchase_routes
            .iter()
            .filter(|&&r| r < MAX_ROUTES)
            .flat_map(|&r| self.latency(r))
            .collect();
        let (buckets, count, sum) = merged(&histograms);
        let seconds = |ns: u64| ns as f64 / 1e9;
        Summary {
            purchases,
            requests: RequestSummary {
                total,
                client_errors,
                server_errors,
            },
            purchase_latency: LatencySummary {
                count,
                sum_seconds: seconds(sum),
                p50_seconds: seconds(quantile(&LATENCY_BOUNDS_NS, &buckets, count, 0.50)),
                p99_seconds: seconds(quantile(&LATENCY_BOUNDS_NS, &buckets, count, 0.99)),
            },
        }
    }

    /// Prometheus text exposition (format 0.0.4).
    pub fn render(&self, snapshot: &Snapshot<'_>) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let route_name = |i: usize| snapshot.routes.get(i).copied().unwrap_or("other");

        header(
            &mut out,
            "seckill_purchases_total",
            "counter",
            "Purchase attempts by outcome.",
        );
        for outcome in PurchaseOutcome::ALL {
            let _ = writeln!(
                out,
                "seckill_purchases_total{{outcome=\"{}\"}} {}",
                outcome.label(),
                self.purchases(outcome)
            );
        }

        header(
            &mut out,
            "seckill_http_requests_total",
            "counter",
            "HTTP requests answered, by route and status.",
        );
        for route in 0..MAX_ROUTES {
            for column in 0..=STATUSES.len() {
                let count = self.requests(route, column);
                if count == 0 {
                    continue;
                }
                let status = STATUSES.get(column).map_or("other".to_owned(), u16::to_string);
                let _ = writeln!(
                    out,
                    "seckill_http_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
                    route_name(route)
                );
            }
        }

        header(
            &mut out,
            "seckill_http_request_duration_seconds",
            "histogram",
            "Time from request to response head, by route.",
        );
        for route in 0..MAX_ROUTES {
            let shards = self.latency(route);
            if shards.iter().any(|h| h.count() > 0) {
                let labels = format!("route=\"{}\"", route_name(route));
                render_histogram(
                    &shards,
                    &mut out,
                    "seckill_http_request_duration_seconds",
                    &labels,
                    1e-9,
                );
            }
        }

        header(
            &mut out,
            "seckill_rate_limited_total",
            "counter",
            "Requests refused 429, by limit.",
        );
        for scope in RateLimitScope::ALL {
            let _ = writeln!(
                out,
                "seckill_rate_limited_total{{scope=\"{}\"}} {}",
                scope.label(),
                self.rate_limited[scope as usize].load(Relaxed)
            );
        }

        sample(
            &mut out,
            "seckill_connections_open",
            "gauge",
            "Client connections held now (the consumer's metrics port not counted).",
            self.connections_open.load(Relaxed),
        );
        header(
            &mut out,
            "seckill_connections_refused_total",
            "counter",
            "Connections closed as soon as accepted, by the cap they were over.",
        );
        for reason in ConnectionRefusal::ALL {
            let _ = writeln!(
                out,
                "seckill_connections_refused_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.connections_refused[reason as usize].load(Relaxed)
            );
        }
        sample(
            &mut out,
            "seckill_header_timeouts_total",
            "counter",
            "Connections closed because a request head did not arrive whole within the header timeout.",
            self.header_timeouts.load(Relaxed),
        );
        sample(
            &mut out,
            "seckill_idle_connections_closed_total",
            "counter",
            "Kept-alive connections closed after the keep-alive timeout with nothing moving.",
            self.idle_closes.load(Relaxed),
        );

        sample(
            &mut out,
            "seckill_purchases_in_flight",
            "gauge",
            "Purchases being processed now.",
            snapshot.purchases_in_flight,
        );

        header(&mut out, "seckill_stock_remaining", "gauge", "Units left per sale.");
        for (id, _, remaining) in snapshot.per_sale {
            let _ = writeln!(out, "seckill_stock_remaining{{sale=\"{id}\"}} {remaining}");
        }
        header(&mut out, "seckill_stock_initial", "gauge", "Initial stock per sale.");
        for (id, stock, _) in snapshot.per_sale {
            let _ = writeln!(out, "seckill_stock_initial{{sale=\"{id}\"}} {stock}");
        }

        header(
            &mut out,
            "seckill_queue_waiting",
            "gauge",
            "Waiting-room tickets waiting to be admitted, per sale (distributed: the shared queue's length).",
        );
        for (id, q) in snapshot.queues {
            let _ = writeln!(out, "seckill_queue_waiting{{sale=\"{id}\"}} {}", q.waiting);
        }
        header(
            &mut out,
            "seckill_queue_admitted_total",
            "counter",
            "Waiting-room tickets admitted, per sale (distributed: the shared queue's count, the same on every instance).",
        );
        for (id, q) in snapshot.queues {
            let _ = writeln!(out, "seckill_queue_admitted_total{{sale=\"{id}\"}} {}", q.admitted);
        }
        header(
            &mut out,
            "seckill_queue_expired_total",
            "counter",
            "Waiting-room tickets that expired unpolled before admission (their slots went to the next), per sale (distributed: shared, as admitted).",
        );
        for (id, q) in snapshot.queues {
            let _ = writeln!(out, "seckill_queue_expired_total{{sale=\"{id}\"}} {}", q.expired);
        }

        header(
            &mut out,
            "seckill_commit_batch_size",
            "histogram",
            "Orders per group commit (SQLite writer, or the Kafka consumer's MySQL batch).",
        );
        render_histogram(&[&self.commit_batches], &mut out, "seckill_commit_batch_size", "", 1.0);

        header(
            &mut out,
            "seckill_payment_transitions_total",
            "counter",
            "Holds settled by this process, made durable: paid, expired unpaid, cancelled by the buyer.",
        );
        for kind in TransitionKind::ALL {
            let _ = writeln!(
                out,
                "seckill_payment_transitions_total{{kind=\"{}\"}} {}",
                kind.label(),
                self.transitions[kind as usize].load(Relaxed)
            );
        }
        sample(
            &mut out,
            "seckill_late_payments_total",
            "counter",
            "Payments refused because their hold had expired or been cancelled; kept for refunds.",
            self.late_payments.load(Relaxed),
        );
        sample(&mut out, "seckill_order_conflicts_total", "counter", "Orders whose (sale, user, seq) another order held: refused (embedded) or kept apart (distributed). A fault: alert on any.", self.order_conflicts.load(Relaxed));
        header(
            &mut out,
            "seckill_redis_calls_total",
            "counter",
            "Round trips of the Redis gate and waiting room (a script call or a pipeline), by what they do.",
        );
        for call in RedisCall::ALL {
            let _ = writeln!(
                out,
                "seckill_redis_calls_total{{script=\"{}\"}} {}",
                call.label(),
                self.redis_calls[call as usize].load(Relaxed)
            );
        }
        header(
            &mut out,
            "seckill_redis_call_items_total",
            "counter",
            "What those round trips carried: purchases (reserve), releases, confirmations, holds settled, sales loaded, reads of the units left, joins and polls (queue), tickets swept, units moved between a sale's shards (transfer: counted when taken and when given). Divided by seckill_redis_calls_total: items per round trip.",
        );
        for call in RedisCall::ALL {
            let _ = writeln!(
                out,
                "seckill_redis_call_items_total{{script=\"{}\"}} {}",
                call.label(),
                self.redis_items[call as usize].load(Relaxed)
            );
        }
        sample(
            &mut out,
            "seckill_store_queue_depth",
            "gauge",
            "Orders waiting for the embedded store's writer (at its last batch).",
            self.store_queue_depth.load(Relaxed),
        );
        sample(
            &mut out,
            "seckill_kafka_producer_queue_messages",
            "gauge",
            "Messages in the Kafka producer's queue, not yet acknowledged (librdkafka statistics).",
            self.producer_queue.load(Relaxed),
        );
        sample(&mut out, "seckill_kafka_consumer_lag_messages", "gauge", "Records (groups of order events) in the log not yet stored by this process's consumer, over its partitions.", self.consumer_lag.load(Relaxed));
        sample(
            &mut out,
            "seckill_kafka_records_total",
            "counter",
            "Records this process handed to the Kafka producer (each carries one group of order events).",
            self.log_records.load(Relaxed),
        );
        sample(
            &mut out,
            "seckill_kafka_record_events_total",
            "counter",
            "Order events those records carried. Divided by seckill_kafka_records_total: events per record.",
            self.log_record_orders.load(Relaxed),
        );
        sample(
            &mut out,
            "seckill_kafka_consumer_rewinds_total",
            "counter",
            "Times the consumer found offsets missing in a partition and read them again.",
            self.consumer_rewinds.load(Relaxed),
        );
        out
    }
}

/// A metric of one sample without labels: its header, then its value.
fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_slot_in_order() {
        for (i, outcome) in PurchaseOutcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i, "{outcome:?}");
        }
        for (i, scope) in RateLimitScope::ALL.iter().enumerate() {
            assert_eq!(*scope as usize, i, "{scope:?}");
        }
        for (i, kind) in TransitionKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind:?}");
        }
        for (i, reason) in ConnectionRefusal::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason:?}");
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_quantiles_pick_the_bucket() {
        static BOUNDS: [u64; 3] = [10, 20, 30];
        let h = Histogram::new(&BOUNDS);
        for v in [5, 15, 15, 25, 100] {
            h.observe(v);
        }
        let mut out = String::new();
        render_histogram(&[&h, &Histogram::new(&BOUNDS)], &mut out, "x", "", 1.0);
        assert!(out.contains("x_bucket{le=\"10\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"20\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"30\"} 4\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("x_sum 160\nx_count 5\n"), "{out}");
        let (buckets, count, _) = merged(&[&h]);
        assert_eq!(quantile(&BOUNDS, &buckets, count, 0.5), 20);
        assert_eq!(quantile(&BOUNDS, &buckets, count, 0.2), 10);
        assert_eq!(
            quantile(&BOUNDS, &buckets, count, 0.99),
            30,
            "beyond the last bound: the last bound"
        );
    }
}
