//! The in-process book of one sale's holds: orders awaiting payment, their deadlines, and the
//! transitions decided but not yet durable. Used by [`super::MemoryGate`] for sales with a
//! payment window.
//!
//! Each hold is one entry of a sharded map: its lock makes a transition atomic, so exactly one
//! of pay, expire and cancel wins. The unit of an expired or cancelled hold goes back to the
//! sale only once the store has the transition ([`HoldBook::recorded`]): SQLite is what a
//! restart rebuilds the gate from, and a unit resold before the expiry was durable would be
//! held twice after a crash.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use dashmap::DashMap;

use crate::domain::{Millis, Order, OrderState, Payment, SaleId, UserId};
use crate::payment::{Settlement, Transition};

/// Order ids are made by the engine, never chosen by a client, so their map needs no
/// flood-resistant hasher: foldhash costs a fraction of SipHash on every purchase.
type OrderIdHasher = foldhash::fast::RandomState;

#[derive(Default)]
pub(super) struct HoldBook {
    holds: DashMap<uuid::Uuid, Hold, OrderIdHasher>,
    /// `(pay_by, order)` in arrival order, which is deadline order up to the few milliseconds
    /// threads can interleave: the expiry pops from the front.
    deadlines: Mutex<VecDeque<(Millis, uuid::Uuid)>>,
    /// Transitions decided here but not yet durable, with when they were decided.
    unconfirmed: DashMap<uuid::Uuid, Millis, OrderIdHasher>,
    awaiting: AtomicU64,
    paid: AtomicU64,
}

#[derive(Clone, Debug)]
struct Hold {
    user: UserId,
    seq: u32,
    created_at: Millis,
    pay_by: Millis,
    state: OrderState,
    payment: Option<Payment>,
}

impl HoldBook {
    /// Opens a hold for a durable order awaiting payment.
    pub(super) fn open(&self, order: &Order) {
        let Some(pay_by) = order.pay_by else { return };
        let hold = Hold {
            user: order.user_id.clone(),
            seq: order.seq,
            created_at: order.created_at,
            pay_by,
            state: order.state,
            payment: order.payment.clone(),
        };
        if self.holds.insert(order.order_id, hold).is_none() {
            self.awaiting.fetch_add(1, Ordering::Relaxed);
            self.lock_deadlines().push_back((pay_by, order.order_id));
        }
    }

    /// Sets the paid count of a rebuilt gate (paid orders are not kept in memory).
    pub(super) fn set_paid(&self, paid: u64) {
        self.paid.store(paid, Ordering::Relaxed);
    }

    /// Applies `transition` to the hold of `order_id`.
    pub(super) fn settle(
        &self,
        sale: SaleId,
        order_id: uuid::Uuid,
        transition: &Transition,
        now: Millis,
    ) -> Settlement {
        let Some(mut hold) = self.holds.get_mut(&order_id) else {
            return Settlement::Unknown;
        };
        let unconfirmed = self.unconfirmed.contains_key(&order_id);
        let next = match (transition, hold.state) {
            (Transition::Cancel { by }, _) if *by != hold.user => return Settlement::Unknown,
            (Transition::Pay(payment), OrderState::Paid)
                if hold.payment.as_ref().map(|p| &p.id) == Some(&payment.id) =>
            {
                return Settlement::AlreadyDone {
                    order: hold.order(sale, order_id),
                    unconfirmed,
                };
            }
            // A payment after the deadline is late even if the expiry has not run yet.
            (Transition::Pay(_), OrderState::AwaitingPayment) if now <= hold.pay_by => OrderState::Paid,
            (Transition::Expire, OrderState::AwaitingPayment) if hold.pay_by <= now => OrderState::Expired,
            (Transition::Cancel { .. }, OrderState::AwaitingPayment) => OrderState::Cancelled,
            _ => return Settlement::Lost(hold.order(sale, order_id)),
        };
        hold.state = next;
        // A paid unit moves from awaiting to paid now; an expired or cancelled one stays counted
        // as awaiting until it is back in the sale's stock ([`HoldBook::recorded`]), so the
        // sale's counts always add up to its stock.
        if let Transition::Pay(payment) = transition {
            hold.payment = Some(payment.clone());
            self.awaiting.fetch_sub(1, Ordering::Relaxed);
            self.paid.fetch_add(1, Ordering::Relaxed);
        }
        self.unconfirmed.insert(order_id, now);
        Settlement::Won(hold.order(sale, order_id))
    }

    /// Holds whose deadline has passed, at most `limit`, in deadline order.
    pub(super) fn due(&self, now: Millis, limit: usize) -> Vec<uuid::Uuid> {
        let mut deadlines = self.lock_deadlines();
        let mut due = Vec::new();
        while due.len() < limit && deadlines.front().is_some_and(|(pay_by, _)| *pay_by <= now) {
            if let Some((_, order)) = deadlines.pop_front() {
                due.push(order);
            }
        }
        due
    }

    /// Decided transitions older than `older_than` whose durability was never confirmed.
    pub(super) fn unconfirmed(&self, sale: SaleId, older_than: Millis) -> Vec<Order> {
        self.unconfirmed
            .iter()
            .filter(|e| *e.value() < older_than)
            .filter_map(|e| Some(self.holds.get(e.key())?.order(sale, *e.key())))
            .collect()
    }

    /// The transition of `order_id` is durable; `true` the first time (its unit, if it gives
    /// one back, goes back now, and once).
    pub(super) fn recorded(&self, order_id: &uuid::Uuid) -> bool {
        let first = self.unconfirmed.remove(order_id).is_some();
        let returned = self
            .holds
            .get(order_id)
            .is_some_and(|h| matches!(h.state, OrderState::Expired | OrderState::Cancelled));
        if first && returned {
            self.awaiting.fetch_sub(1, Ordering::Relaxed);
        }
        first
    }

    pub(super) fn get(&self, sale: SaleId, order_id: &uuid::Uuid) -> Option<Order> {
        self.holds.get(order_id).map(|h| h.order(sale, *order_id))
    }

    /// `(awaiting payment, paid)`.
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.awaiting.load(Ordering::Relaxed), self.paid.load(Ordering::Relaxed))
    }

    // The deque holds plain data a panic cannot leave half-written: poisoning is ignored.
    fn lock_deadlines(&self) -> std::sync::MutexGuard<'_, VecDeque<(Millis, uuid::Uuid)>> {
        self.deadlines.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Hold {
    fn order(&self, sale: SaleId, order_id: uuid::Uuid) -> Order {
        Order {
            order_id,
            sale_id: sale,
            user_id: self.user.clone(),
            seq: self.seq,
            created_at: self.created_at,
            state: self.state,
            pay_by: Some(self.pay_by),
            payment: self.payment.clone(),
        }
    }
}
