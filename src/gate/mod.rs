//! The stock gate: the one place that decides, atomically, whether a buyer may have a unit.
//!
//! A gate never sells more than the stock and never more than the per-user limit to one buyer,
//! however requests interleave, and never hands one buyer the same `seq` twice. A reservation it
//! grants is either made durable by the order store (and so becomes an order) or released back
//! to the gate.

use std::future::Future;
use std::sync::Arc;

use crate::backend::{BackendError, Check};
use crate::domain::{Holding, Millis, Refusal, Sale, SaleId, UserId};

pub mod memory;
#[cfg(feature = "distributed")]
pub mod redis;

#[cfg(feature = "distributed")]
pub use self::redis::RedisGate;
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
    /// Registers a sale with the buyers who already hold units (from the store, on start-up or
    /// creation): remaining = stock − units held; each buyer's next `seq` follows their last.
    fn load_sale(
        &self,
        sale: Arc<Sale>,
        holders: Vec<Holding>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

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

    /// The reservation's order is durable: the gate may forget the pending reservation.
    /// Best effort and off the answer's path; a lost confirmation only makes the reconciler
    /// re-publish an order that is already there, which the store ignores.
    fn confirm(&self, reservation: &Reservation);

    /// Reservations not yet confirmed durable (the auditor's third column).
    fn open_reservations(&self, sale: SaleId) -> impl Future<Output = Result<u64, BackendError>> + Send;

    /// The gate's backend answers (`/readyz`).
    fn ready(&self) -> impl Future<Output = Vec<Check>> + Send;

    /// Units left, or `None` for a sale the gate does not know.
    fn remaining(&self, sale: SaleId) -> impl Future<Output = Result<Option<u64>, BackendError>> + Send;
}
