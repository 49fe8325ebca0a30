//! The order store: where a confirmed order lives, and the catalogue of sales.
//!
//! `record` is the durability point of the buy path: it returns `Ok` only once the order
//! survives a crash of this process (embedded: fsynced to SQLite by group commit). A buyer is
//! told "success" only after that.

use std::future::Future;

use crate::backend::{BackendError, Check};
use crate::domain::{GateState, Order, Sale, SaleId, SaleSpec, UserId};
use crate::payment::LatePayment;

#[cfg(feature = "distributed")]
pub mod distributed;
#[cfg(feature = "distributed")]
pub mod mysql;
pub mod sqlite;

#[cfg(feature = "distributed")]
pub use distributed::DistributedStore;
#[cfg(feature = "distributed")]
pub use mysql::MySqlStore;
pub use sqlite::SqliteStore;

/// Counts the auditor compares with the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreAudit {
    /// Orders that hold a unit: confirmed, awaiting payment or paid.
    pub stored: u64,
    pub awaiting_payment: u64,
    pub paid: u64,
    /// Orders whose unit went back on sale.
    pub expired: u64,
    pub cancelled: u64,
    pub late_payments: u64,
    /// Rows beyond the first for the same `(sale, user, seq)`: must be 0.
    pub duplicates: u64,
    /// Orders kept apart because another order held their `(sale, user, seq)`: must be 0.
    pub conflicts: u64,
    /// Buyers holding more units than the per-user limit: must be 0.
    pub over_limit: u64,
}

pub trait OrderStore: Send + Sync + 'static {
    /// Makes `order` durable. On `Err` the order is not stored and its reservation must be
    /// released, unless the error is [`BackendError::OutcomeUnknown`]: then it may be stored.
    fn record(&self, order: &Order) -> impl Future<Output = Result<(), BackendError>> + Send;

    fn create_sale(&self, spec: SaleSpec) -> impl Future<Output = Result<Sale, BackendError>> + Send;

    /// The sales with ids above `after`, in id order: the whole catalogue from `SaleId(0)`, and
    /// only what is new since a refresh otherwise, so keeping up with other instances costs
    /// an index range, not a scan.
    fn sales_after(&self, after: SaleId) -> impl Future<Output = Result<Vec<Sale>, BackendError>> + Send;

    /// A buyer's orders in one sale, oldest first.
    fn orders_of(&self, sale: SaleId, user: &UserId) -> impl Future<Output = Result<Vec<Order>, BackendError>> + Send;

    /// One order by its id.
    fn order(&self, order_id: uuid::Uuid) -> impl Future<Output = Result<Option<Order>, BackendError>> + Send;

    /// What the gate of `sale` is rebuilt from: every buyer with the units they hold and their
    /// highest `seq`, the orders awaiting payment, the count paid.
    fn gate_state(&self, sale: SaleId) -> impl Future<Output = Result<GateState, BackendError>> + Send;

    /// Makes payment-lifecycle transitions durable (the gate decided them): each order's new
    /// state, payment and all. `Ok` only once every one of them survives a crash.
    fn record_transitions(&self, orders: &[Order]) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Keeps a payment that came after its hold closed, so the shop can refund it; the same
    /// payment id twice is kept once.
    fn record_late_payment(&self, late: &LatePayment) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Whether every order acknowledged before `since` is in what [`OrderStore::gate_state`]
    /// reads (a gate that lost a sale is rebuilt only then). Embedded: always, a recorded
    /// order is in SQLite. Distributed: once the log's longest delivery wait has passed since
    /// `since` and the consumers have drained the log into MySQL.
    fn caught_up(&self, since: crate::domain::Millis) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// What the store holds for a sale, for the auditor.
    fn audit(&self, sale: SaleId, per_user_limit: u32)
        -> impl Future<Output = Result<StoreAudit, BackendError>> + Send;

    /// Flushes what is queued and stops accepting orders (graceful shutdown).
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// The store's backends answer and its writer runs (`/readyz`).
    fn ready(&self) -> impl Future<Output = Vec<Check>> + Send;
}
