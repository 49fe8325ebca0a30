//! The stock gate: the one place that decides, atomically, whether a buyer may have a unit.
//!
//! A gate never sells more than the stock and never more than the per-user limit to one buyer,
//! however requests interleave, and never hands one buyer the same `seq` twice. A reservation it
//! grants is either made durable by the order store (and so becomes an order) or released back
//! to the gate.

use std::future::Future;
use std::sync::Arc;

use crate::backend::{BackendError, Check};
use crate::domain::{GateState, Millis, Order, Refusal, Sale, SaleId, UserId};
use crate::payment::{Settlement, Transition};

mod holds;
pub mod memory;
#[cfg(feature = "distributed")]
pub mod redis;
#[cfg(feature = "distributed")]
pub mod shards;

#[cfg(feature = "distributed")]
pub use self::redis::{RedisGate, RedisTarget};
pub use memory::MemoryGate;

/// A unit held for one buyer between the gate's yes and the store's commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The order this unit is held for; a distributed gate keys the pending reservation by it.
    pub order_id: uuid::Uuid,
    pub sale_id: SaleId,
    pub user_id: UserId,
    /// The buyer's n-th reservation in this sale (1-based), never handed out twice.
    pub seq: u32,
    /// Stock left right after this reservation.
    pub remaining: u64,
    pub reserved_at: Millis,
    /// The payment deadline, if the sale has a payment step.
    pub pay_by: Option<Millis>,
    /// What the gate needs back when the reservation is confirmed or released.
    pub pending: PendingShare,
}

/// A reservation's share of what its gate keeps pending for it: for the distributed gate, the
/// pending record it has with the other reservations of its script call (forgotten once each
/// of them is confirmed or released); nothing for the embedded gate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PendingShare(#[cfg(feature = "distributed")] pub(crate) Option<Arc<redis::PendingGroup>>);

/// Holds of one sale by state, for the sale's view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HoldCounts {
    pub awaiting_payment: u64,
    pub paid: u64,
}

/// Why the gate granted no unit: the buyer's answer, or a backend that could not decide.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("refused: {0:?}")]
    Refused(Refusal),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl From<Refusal> for ReserveError {
    fn from(r: Refusal) -> Self {
        ReserveError::Refused(r)
    }
}

pub trait StockGate: Send + Sync + 'static {
    /// Registers a sale with what the store holds of it (on start-up or creation):
    /// remaining = stock − units held; each buyer's next `seq` follows their last; holds
    /// awaiting payment keep their deadlines.
    fn load_sale(&self, sale: Arc<Sale>, state: GateState) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Takes one unit for `user` if the sale is live, has stock, and the user is under the limit.
    /// The reservation carries a new order id (minted only when a unit is granted).
    fn reserve(
        &self,
        sale: SaleId,
        user: &UserId,
        now: Millis,
    ) -> impl Future<Output = Result<Reservation, ReserveError>> + Send;

    /// Whether this process already knows the sale is sold out, without asking anyone: lets the
    /// stampede's sold-out path skip all per-buyer work.
    fn known_sold_out(&self, sale: SaleId, now: Millis) -> bool;

    /// Gives a reserved unit back: its order is certainly not durable anywhere.
    fn release(&self, reservation: &Reservation) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The reservation's order is durable: the gate may forget the pending reservation, and
    /// opens the hold of an order awaiting payment. Best effort and off the answer's path; a
    /// lost confirmation only makes the reconciler re-publish an order that is already there,
    /// which the store ignores.
    fn confirm(&self, reservation: &Reservation);

    /// Applies a payment-lifecycle transition to one hold, atomically: exactly one of pay,
    /// expire and cancel wins, and a winning expiry or cancellation gives the unit back in the
    /// same step. A won transition stays unconfirmed until [`StockGate::recorded`].
    fn settle(
        &self,
        sale: SaleId,
        order_id: uuid::Uuid,
        transition: &Transition,
        now: Millis,
    ) -> impl Future<Output = Result<Settlement, BackendError>> + Send;

    /// Expires up to `limit` holds of `sale` whose deadline has passed; returns the expired
    /// orders (won, unconfirmed).
    fn expire_due(
        &self,
        sale: SaleId,
        now: Millis,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Order>, BackendError>> + Send;

    /// Transitions decided before `older_than` whose durability was never confirmed (the store
    /// failed, or the instance that decided them died): to be recorded again.
    fn unconfirmed(
        &self,
        sale: SaleId,
        older_than: Millis,
    ) -> impl Future<Output = Result<Vec<Order>, BackendError>> + Send;

    /// These orders' transitions are durable. Best effort, like [`StockGate::confirm`].
    fn recorded(&self, orders: &[Order]);

    /// The order of a hold as the gate sees it now (fresher than the store in distributed
    /// mode); `None` when the gate holds none by this id.
    fn hold(
        &self,
        sale: SaleId,
        order_id: uuid::Uuid,
    ) -> impl Future<Output = Result<Option<Order>, BackendError>> + Send;

    /// Holds awaiting payment and paid, for the sale's view.
    fn hold_counts(&self, sale: SaleId) -> impl Future<Output = Result<HoldCounts, BackendError>> + Send;

    /// Reservations not yet confirmed durable (the auditor's third column).
    fn open_reservations(&self, sale: SaleId) -> impl Future<Output = Result<u64, BackendError>> + Send;

    /// The gate's backend answers (`/readyz`).
    fn ready(&self) -> impl Future<Output = Vec<Check>> + Send;

    /// Units left, or `None` for a sale the gate does not know.
    fn remaining(&self, sale: SaleId) -> impl Future<Output = Result<Option<u64>, BackendError>> + Send;
}
