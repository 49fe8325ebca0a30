//! The engine: the buy path (gate → store → answer) and the sale catalogue, over any
//! [`StockGate`] and [`OrderStore`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::backend::{BackendError, Check, Role};
use crate::domain::{
    format_millis, now_millis, GateState, Millis, Order, OrderState, Refusal, Sale, SaleId, SaleSpec, UserId,
};
use crate::gate::{ReserveError, StockGate};
use crate::metrics::{PurchaseOutcome, METRICS};
use crate::store::{OrderStore, StoreAudit};

/// What the engine answers is the API's own wire types: one definition for the engine and
/// its clients.
pub use seckill_api::{Audit, Confirmation, OrderStatus, OrderView, SaleView};

/// Why a purchase did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PurchaseError {
    /// The buyer's answer: sold out, not started, over the limit, ...
    #[error("refused: {0:?}")]
    Refused(Refusal),
    /// More purchases in flight than the engine takes: shed at once, not queued.
    #[error("too many purchases in flight")]
    Overloaded,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl From<ReserveError> for PurchaseError {
    fn from(e: ReserveError) -> Self {
        match e {
            ReserveError::Refused(r) => PurchaseError::Refused(r),
            ReserveError::Backend(e) => PurchaseError::Backend(e),
        }
    }
}

impl From<Refusal> for PurchaseError {
    fn from(r: Refusal) -> Self {
        PurchaseError::Refused(r)
    }
}

impl PurchaseError {
    /// The `outcome` label of the purchase metrics.
    fn outcome(&self) -> PurchaseOutcome {
        match self {
            PurchaseError::Refused(Refusal::SoldOut) => PurchaseOutcome::SoldOut,
            PurchaseError::Refused(Refusal::LimitReached) => PurchaseOutcome::AlreadyPurchased,
            PurchaseError::Refused(Refusal::NotStarted) => PurchaseOutcome::NotStarted,
            PurchaseError::Refused(Refusal::Ended) => PurchaseOutcome::Ended,
            PurchaseError::Refused(Refusal::UnknownSale) => PurchaseOutcome::SaleNotFound,
            PurchaseError::Overloaded
            | PurchaseError::Backend(
                BackendError::Unavailable { .. }
                | BackendError::OutcomeUnknown { .. }
                | BackendError::Overloaded { .. }
                | BackendError::Full { .. },
            ) => PurchaseOutcome::Unavailable,
            PurchaseError::Backend(BackendError::Fault { .. }) => PurchaseOutcome::Error,
        }
    }
}

/// Why a read found nothing or could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no such sale")]
    SaleNotFound,
    #[error("no order for this buyer in this sale")]
    OrderNotFound,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Name of the sale created on first start; the classic `/seckill/*` API sells it.
pub const DEMO_SALE_NAME: &str = "第一个商品 (demo item)";

pub struct Engine<G, S> {
    pub(crate) gate: G,
    pub(crate) store: S,
    /// Sale metadata for reads (the gate holds what purchases need).
    sales: RwLock<BTreeMap<SaleId, Arc<Sale>>>,
    demo: SaleId,
    anonymous: AnonymousIds,
    /// Purchases in flight; past the limit the engine sheds load (503) instead of queueing.
    in_flight: tokio::sync::Semaphore,
    max_in_flight: usize,
    /// Sales the gate lost and that wait to be rebuilt from the store.
    pub(crate) lost: crate::recovery::LostSales,
    refresh: CatalogueRefresh,
    /// Units left per sale as last read for the waiting room, and when (see [`Engine::remaining_lately`]).
    lately: dashmap::DashMap<SaleId, (Millis, u64)>,
}

/// How long the units left that a waiting-room join or poll read stay good for the next ones:
/// a crowd polling costs the gate a read per sale every 50 ms, not one per poll, and a sale
/// sold out on another instance answers `sold_out` at most this much later.
const REMAINING_FRESH_MS: Millis = 50;

/// How far below the newest known sale a refresh looks again: a sale whose insert committed
/// after a newer one's (two instances creating at once) is still found.
const REFRESH_MARGIN: i64 = 64;

/// One catalogue refresh at a time, shared by every caller that arrived before it started: a
/// flood of lookups for unknown sales costs the store one small query at a time, not one each.
#[derive(Default)]
struct CatalogueRefresh {
    /// Callers so far; a refresh that starts when this reads `n` serves callers `0..n`.
    arrivals: AtomicU64,
    last: tokio::sync::Mutex<LastRefresh>,
}

#[derive(Default)]
struct LastRefresh {
    /// Callers the last completed refresh served: those that arrived before it started.
    served: u64,
    failed: bool,
}

/// How long an ended sale's stock series stay in `/metrics`.
pub const METRICS_RETENTION_MS: i64 = 10 * 60 * 1000;

/// Purchases in flight at once unless configured otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16_384;

/// Ids for the classic API's anonymous buyers: a random per-process prefix and a counter, so ids
/// never collide across restarts and cost no syscall each.
struct AnonymousIds {
    prefix: String,
    next: AtomicU64,
}

impl AnonymousIds {
    fn new() -> Self {
        let nonce = uuid::Uuid::new_v4().as_u64_pair().0;
        AnonymousIds {
            prefix: format!("{}{nonce:016x}-", UserId::ANONYMOUS_PREFIX),
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> UserId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        UserId::trusted(format!("{}{n}", self.prefix))
    }
}

impl<G: StockGate, S: OrderStore> Engine<G, S> {
    /// Loads every sale from the store into the gate (remaining = stock − stored orders) and
    /// creates the demo sale on first start (with the engine's default payment window).
    pub async fn start(gate: G, store: S, demo_stock: u64, payment_window_secs: u32) -> Result<Self, BackendError> {
        let mut sales = store.sales_after(SaleId(0)).await?;
        if !sales.iter().any(|s| s.spec.demo) {
            let spec = SaleSpec {
                name: DEMO_SALE_NAME.into(),
                stock: demo_stock,
                starts_at: None,
                ends_at: None,
                per_user_limit: 1,
                demo: true,
                payment_window_secs,
                waiting_room: None,
                stock_shards: 1,
            };
            sales.push(store.create_sale(spec).await?);
        }
        let demo =
            sales.iter().find(|s| s.spec.demo).map(|s| s.id).ok_or_else(|| {
                BackendError::fault(Role::Store, "the demo sale was created but is not in the catalogue")
            })?;
        let sales: BTreeMap<SaleId, Arc<Sale>> = sales.into_iter().map(|s| (s.id, Arc::new(s))).collect();
        for sale in sales.values() {
            gate.load_sale(Arc::clone(sale), store.gate_state(sale.id).await?)
                .await?;
        }
        Ok(Engine {
            gate,
            store,
            sales: RwLock::new(sales),
            demo,
            anonymous: AnonymousIds::new(),
            in_flight: tokio::sync::Semaphore::new(DEFAULT_MAX_IN_FLIGHT),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            lost: crate::recovery::LostSales::default(),
            refresh: CatalogueRefresh::default(),
            lately: dashmap::DashMap::new(),
        })
    }

    /// At most `limit` purchases in flight; the rest are answered 503 `overloaded` at once.
    pub fn with_max_in_flight(mut self, limit: usize) -> Self {
        self.in_flight = tokio::sync::Semaphore::new(limit.max(1));
        self.max_in_flight = limit.max(1);
        self
    }

    /// Purchases being processed right now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight.saturating_sub(self.in_flight.available_permits())
    }

    /// Refuses, as a purchase would, unless the sale is open and not known to be sold out:
    /// what a buyer must pass to be handed a purchase token.
    pub async fn check_live(&self, sale_id: SaleId) -> Result<(), PurchaseError> {
        let sale = match self.find_sale(sale_id).await {
            Ok(sale) => sale,
            Err(EngineError::Backend(e)) => return Err(e.into()),
            Err(_) => return Err(Refusal::UnknownSale.into()),
        };
        let now = now_millis();
        if let Some(refusal) = sale.spec.window_refusal(now) {
            return Err(refusal.into());
        }
        if self.gate.known_sold_out(sale_id, now) {
            return Err(Refusal::SoldOut.into());
        }
        Ok(())
    }

    /// Every backend's check, each bounded in time (a hung backend is a failed check).
    pub async fn ready(&self) -> Vec<Check> {
        const WITHIN: std::time::Duration = std::time::Duration::from_millis(2500);
        let timed_out = |role| BackendError::unavailable(role, format!("no answer within {WITHIN:?}"));
        let (gate, store) = tokio::join!(
            tokio::time::timeout(WITHIN, self.gate.ready()),
            tokio::time::timeout(WITHIN, self.store.ready())
        );
        [(gate, "gate", Role::Gate), (store, "store", Role::Store)]
            .into_iter()
            .flat_map(|(checks, name, role)| {
                checks.unwrap_or_else(|_| vec![Check::required(name, Err(timed_out(role)))])
            })
            .chain(std::iter::once(self.lost.check()))
            .collect()
    }

    pub fn gate(&self) -> &G {
        &self.gate
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn demo_sale(&self) -> SaleId {
        self.demo
    }

    /// The buy path: reserve at the gate, make the order durable, answer. A reservation whose
    /// order cannot be stored goes back to the gate, so a failure never eats stock.
    pub async fn purchase(&self, sale_id: SaleId, user: UserId) -> Result<Confirmation, PurchaseError> {
        let result = match self.in_flight.try_acquire() {
            Ok(_permit) => self.try_purchase(sale_id, user).await,
            Err(_) => Err(PurchaseError::Overloaded),
        };
        METRICS.observe_purchase(match &result {
            Ok(_) => PurchaseOutcome::Success,
            Err(e) => e.outcome(),
        });
        result
    }

    async fn try_purchase(&self, sale_id: SaleId, user: UserId) -> Result<Confirmation, PurchaseError> {
        let now = now_millis();
        let reservation = match self.gate.reserve(sale_id, &user, now).await {
            Err(ReserveError::Refused(Refusal::UnknownSale)) if self.cached().contains_key(&sale_id) => {
                return Err(self.gate_lost(sale_id).into());
            }
            reserved => reserved?,
        };
        if reservation.remaining == 0 {
            self.lately.remove(&sale_id);
        }
        let order = Order {
            order_id: reservation.order_id,
            sale_id,
            user_id: user,
            seq: reservation.seq,
            created_at: now,
            state: match reservation.pay_by {
                Some(_) => OrderState::AwaitingPayment,
                None => OrderState::Confirmed,
            },
            pay_by: reservation.pay_by,
            payment: None,
        };
        match self.store.record(&order).await {
            Ok(()) => self.gate.confirm(&reservation),
            // The order may be durable after all (a broker that took it but did not answer):
            // releasing could sell the unit twice, so it stays reserved for the reconciler.
            Err(e @ BackendError::OutcomeUnknown { .. }) => {
                tracing::warn!(order = %order.order_id, error = %e.chain(), "order possibly durable; left to the reconciler");
                return Err(e.into());
            }
            Err(e) => {
                if let Err(release) = self.gate.release(&reservation).await {
                    tracing::error!(error = %release.chain(), sale = %sale_id, "could not release a reservation");
                }
                return Err(e.into());
            }
        }
        Ok(Confirmation {
            order_id: order.order_id.hyphenated().to_string(),
            sale_id: sale_id.0,
            user_id: order.user_id.to_string(),
            seq: order.seq,
            status: OrderStatus::Confirmed,
            created_at: format_millis(now),
            remaining: reservation.remaining,
            state: order.state,
            pay_by: order.pay_by.map(format_millis),
        })
    }

    /// The classic API's `POST /seckill/seckill`: every call is a new buyer of the demo sale.
    pub async fn purchase_anonymous(&self) -> Result<Confirmation, PurchaseError> {
        // A new buyer cannot have bought before: once sold out, skip minting a buyer id.
        if self.gate.known_sold_out(self.demo, now_millis()) {
            METRICS.observe_purchase(PurchaseOutcome::SoldOut);
            return Err(Refusal::SoldOut.into());
        }
        self.purchase(self.demo, self.anonymous.next()).await
    }

    pub async fn create_sale(&self, spec: SaleSpec) -> Result<SaleView, BackendError> {
        let sale = Arc::new(self.store.create_sale(spec).await?);
        self.gate.load_sale(Arc::clone(&sale), GateState::default()).await?;
        self.cache().insert(sale.id, Arc::clone(&sale));
        self.view(&sale).await
    }

    pub async fn remaining(&self, id: SaleId) -> Result<u64, EngineError> {
        match self.gate.remaining(id).await? {
            Some(remaining) => Ok(remaining),
            None if self.cached().contains_key(&id) => Err(self.gate_lost(id).into()),
            None => Err(EngineError::SaleNotFound),
        }
    }

    /// Units left, as read at most `REMAINING_FRESH_MS` ago: what the waiting room asks on
    /// every join and poll. A purchase here that takes the last unit forgets the figure.
    pub async fn remaining_lately(&self, id: SaleId, now: Millis) -> Result<u64, EngineError> {
        if let Some(&(at, left)) = self.lately.get(&id).as_deref() {
            if (0..REMAINING_FRESH_MS).contains(&(now - at)) {
                return Ok(left);
            }
        }
        let left = self.remaining(id).await?;
        self.lately.insert(id, (now, left));
        Ok(left)
    }

    pub async fn sale(&self, id: SaleId) -> Result<SaleView, EngineError> {
        let sale = self.find_sale(id).await?;
        Ok(self.view(&sale).await?)
    }

    /// From the cache, or, for a sale another instance created, from a catalogue refresh.
    pub(crate) async fn find_sale(&self, id: SaleId) -> Result<Arc<Sale>, EngineError> {
        if let Some(sale) = self.cached().get(&id).cloned() {
            return Ok(sale);
        }
        if id.0 <= 0 {
            return Err(EngineError::SaleNotFound);
        }
        self.refresh_catalogue().await?;
        self.cached().get(&id).cloned().ok_or(EngineError::SaleNotFound)
    }

    /// Loads into the cache (and the gate) the sales other instances created since the last
    /// refresh. Returns once a refresh that started after this call has completed.
    pub(crate) async fn refresh_catalogue(&self) -> Result<(), EngineError> {
        let me = self.refresh.arrivals.fetch_add(1, Ordering::SeqCst);
        let mut last = self.refresh.last.lock().await;
        if last.served > me {
            // A refresh that started after this call has run: its outcome is this call's.
            return match last.failed {
                false => Ok(()),
                true => Err(BackendError::unavailable(Role::Store, "the catalogue of sales could not be read").into()),
            };
        }
        let serves = self.refresh.arrivals.load(Ordering::SeqCst);
        let result = self.load_new_sales().await;
        *last = LastRefresh {
            served: serves,
            failed: result.is_err(),
        };
        result
    }

    async fn load_new_sales(&self) -> Result<(), EngineError> {
        let newest = self.cached().keys().next_back().map_or(0, |id| id.0);
        for sale in self.store.sales_after(SaleId(newest - REFRESH_MARGIN)).await? {
            if self.cached().contains_key(&sale.id) {
                continue;
            }
            let sale = Arc::new(sale);
            self.gate
                .load_sale(Arc::clone(&sale), self.store.gate_state(sale.id).await?)
                .await?;
            self.cache().insert(sale.id, sale);
        }
        Ok(())
    }

    /// Up to `limit` sales with ids above `after`, in id order (other instances' sales
    /// included), and whether more follow: one page, so an answer and its memory stay bounded
    /// however many sales there are.
    pub async fn sales(&self, after: Option<SaleId>, limit: usize) -> Result<(Vec<SaleView>, bool), EngineError> {
        self.refresh_catalogue().await?;
        let page: Vec<Arc<Sale>> = {
            let cached = self.cached();
            let start = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
            cached
                .range((start, std::ops::Bound::Unbounded))
                .take(limit + 1)
                .map(|(_, sale)| Arc::clone(sale))
                .collect()
        };
        let more = page.len() > limit;
        // All at once: on Redis's multiplexed connection they share round trips.
        let views = futures::future::join_all(page.iter().take(limit).map(|sale| self.view(sale)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok((views, more))
    }

    pub async fn orders_of(&self, sale: SaleId, user: &UserId) -> Result<Vec<OrderView>, EngineError> {
        self.find_sale(sale).await?;
        let orders = self.store.orders_of(sale, user).await?;
        Ok(orders
            .into_iter()
            .map(|order| OrderView {
                order_id: order.order_id.hyphenated().to_string(),
                seq: order.seq,
                status: OrderStatus::Stored,
                created_at: format_millis(order.created_at),
                state: order.state,
            })
            .collect())
    }

    /// Compares the gate with the store. At rest (consumer drained, reconciler done, expiries
    /// recorded) every unit is either remaining, held by one stored order (confirmed, awaiting
    /// payment or paid), or by an open reservation: remaining + stored + open == stock, with no
    /// duplicate, conflict or buyer over the limit. Expired and cancelled orders hold nothing:
    /// their units are back in `remaining`.
    pub async fn audit(&self, sale: SaleId) -> Result<Audit, EngineError> {
        let view = self.sale(sale).await?;
        let StoreAudit {
            stored,
            duplicates,
            conflicts,
            over_limit,
            awaiting_payment,
            paid,
            expired,
            cancelled,
            late_payments,
        } = self.store.audit(sale, view.per_user_limit).await?;
        let open_reservations = self.gate.open_reservations(sale).await?;
        let balanced = view.remaining + stored + conflicts + open_reservations == view.stock;
        Ok(Audit {
            sale_id: sale.0,
            stock: view.stock,
            remaining: view.remaining,
            sold: view.sold,
            stored,
            open_reservations,
            duplicates,
            conflicts,
            over_limit,
            awaiting_payment,
            paid,
            expired,
            cancelled,
            late_payments,
            consistent: balanced && duplicates == 0 && conflicts == 0 && over_limit == 0,
        })
    }

    /// Best effort, for `/metrics` and the admin page, which must answer while a backend is
    /// down (that is when they are read). Sales come from the store when it answers, else from
    /// this process's cache; a sale whose remaining stock the gate cannot tell now is left out.
    pub async fn sales_best_effort(&self) -> Vec<SaleView> {
        self.views_best_effort(|_| true).await
    }

    /// The views of the sales `keep` keeps, every backend call bounded in time.
    async fn views_best_effort(&self, keep: impl Fn(&Sale) -> bool) -> Vec<SaleView> {
        // A scrape must not hang on a backend that does not answer: each step is bounded.
        const STEP: std::time::Duration = std::time::Duration::from_millis(500);
        let _ = tokio::time::timeout(STEP, self.refresh_catalogue()).await;
        let all: Vec<Arc<Sale>> = self.cached().values().filter(|s| keep(s)).cloned().collect();
        let views = futures::future::join_all(all.iter().map(|sale| self.view(sale)));
        let views = tokio::time::timeout(STEP, views).await.unwrap_or_default();
        views.into_iter().filter_map(Result::ok).collect()
    }

    /// `(id, stock, remaining)` of every sale but those ended more than
    /// [`METRICS_RETENTION_MS`] ago, for `/metrics`: a shop that ran thousands of sales does not
    /// scrape thousands of dead series.
    pub async fn stock_levels(&self) -> Vec<(i64, u64, u64)> {
        let cutoff = now_millis() - METRICS_RETENTION_MS;
        let views = self
            .views_best_effort(|s| s.spec.ends_at.is_none_or(|ends| ends >= cutoff))
            .await;
        views.iter().map(|v| (v.id, v.stock, v.remaining)).collect()
    }

    /// Flushes the store: every order accepted before this call is durable when it returns.
    pub async fn shutdown(&self) {
        self.store.close().await;
    }

    // The cache holds plain data that a panic cannot leave half-written, so poisoning is ignored.
    pub(crate) fn cached(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<SaleId, Arc<Sale>>> {
        self.sales.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cache(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<SaleId, Arc<Sale>>> {
        self.sales.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn view(&self, sale: &Sale) -> Result<SaleView, BackendError> {
        let remaining = self
            .gate
            .remaining(sale.id)
            .await?
            .ok_or_else(|| self.gate_lost(sale.id))?;
        let holds = self.gate.hold_counts(sale.id).await?;
        let now = now_millis();
        let spec = &sale.spec;
        Ok(SaleView {
            id: sale.id.0,
            name: spec.name.clone(),
            stock: spec.stock,
            remaining,
            sold: spec.stock.saturating_sub(remaining),
            per_user_limit: spec.per_user_limit,
            starts_at: spec.starts_at.map(format_millis),
            ends_at: spec.ends_at.map(format_millis),
            status: spec.status(remaining, now),
            demo: spec.demo,
            server_time: format_millis(now),
            payment_window_secs: spec.payment_window_secs,
            awaiting_payment: holds.awaiting_payment,
            paid: holds.paid,
            waiting_room: spec.waiting_room,
            stock_shards: spec.stock_shards,
        })
    }
}
