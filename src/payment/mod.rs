//! The payment lifecycle: a won unit is a hold, paid within its window or put back on sale.
//!
//! With `payment_window_secs > 0` a purchase answers an order in `awaiting_payment` with a
//! `pay_by` deadline. Three transitions compete for each hold, and exactly one wins, however they
//! race:
//! - **pay**: the payment provider's signed webhook ([`webhook`]), up to `pay_by` → `paid`;
//! - **expire**: the deadline passed ([`expiry`] runs on every instance) → `expired`;
//! - **cancel**: the buyer gives it up → `cancelled`.
//!
//! The stock gate is the arbiter: it applies a transition atomically (in process: one map
//! entry's lock; Redis: one script), so a unit is never both paid and returned. The store then
//! makes the decided transition durable before anyone is answered (SQLite: group commit;
//! distributed: the Kafka log, then MySQL). A transition decided but not yet durable stays
//! *unconfirmed* in the gate: a retried webhook records it again, and the expiry task re-records
//! those left behind (a store that failed, an instance that died).
//!
//! The unit of an expired or cancelled hold goes back where the authority of the stock is: the
//! Redis script gives it back in the same step (Redis is the stock); the embedded gate gives it
//! back once SQLite has the transition (SQLite is what a restart rebuilds the stock from, so a
//! unit resold before its expiry was durable could be held twice after a crash).
//!
//! A payment for a hold that expired or was cancelled is refused (`payment_window_closed`) and
//! kept as a late payment, so the shop can refund it.

use crate::domain::{Millis, Order, Payment, SaleId, UserId};

pub mod expiry;
pub mod lifecycle;
pub mod webhook;

/// A transition of an order awaiting payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    Pay(Payment),
    /// Only once its deadline has passed.
    Expire,
    /// Only by the order's buyer.
    Cancel {
        by: UserId,
    },
}

/// What the gate answers to a transition.
#[derive(Clone, Debug, PartialEq)]
pub enum Settlement {
    /// This transition won: here is the order in its new state, to be made durable.
    Won(Order),
    /// The order already is where this transition leads (a provider retrying the same
    /// payment): nothing changes. `unconfirmed`: its durability was never confirmed, so it must
    /// be recorded again before answering.
    AlreadyDone { order: Order, unconfirmed: bool },
    /// Another transition won first (or the deadline has not passed, for an expiry): the order
    /// as it stands.
    Lost(Order),
    /// The gate holds no open or settled hold by this id (or, for a cancellation, not one of
    /// this buyer's).
    Unknown,
}

/// A payment that arrived for an order that could no longer take it, kept for a refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatePayment {
    pub payment_id: String,
    pub order_id: uuid::Uuid,
    pub sale_id: SaleId,
    /// As the provider sent it, if it did.
    pub amount: Option<String>,
    pub received_at: Millis,
}
