//! The embedded stock gate: an atomic counter and a sharded buyer map per sale, in process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::holds::HoldBook;
use super::{HoldCounts, PendingShare, Reservation, ReserveError, StockGate};
use crate::backend::{BackendError, Check};
use crate::domain::{new_order_id, GateState, Millis, Order, OrderState, Refusal, Sale, SaleId, UserId};
use crate::payment::{Settlement, Transition};

/// In-process gate. Lock-free on the sold-out path (one atomic load); a purchase takes one
/// shard lock of the buyer map, which also serialises concurrent requests of the same buyer.
#[derive(Default)]
pub struct MemoryGate {
    sales: DashMap<SaleId, Arc<SaleGate>>,
}

struct SaleGate {
    sale: Arc<Sale>,
    remaining: AtomicU64,
    holders: DashMap<UserId, Held>,
    /// Orders awaiting payment, for a sale with a payment window.
    holds: HoldBook,
}

impl SaleGate {
    /// Gives one of `user`'s units back to the sale. Their entry stays, with its `last_seq`:
    /// their next unit gets a new number.
    fn restock(&self, user: &UserId) {
        if let Some(mut entry) = self.holders.get_mut(user) {
            entry.held = entry.held.saturating_sub(1);
        }
        self.remaining.fetch_add(1, Ordering::AcqRel);
    }
}

/// One buyer's units: `held` now (against the limit) and the last `seq` handed out, which a
/// release never lowers, so no `seq` is handed out twice.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    held: u32,
    last_seq: u32,
}

impl MemoryGate {
    pub fn new() -> Self {
        Self::default()
    }

    fn sale(&self, id: SaleId) -> Option<Arc<SaleGate>> {
        self.sales.get(&id).map(|g| Arc::clone(&g))
    }

    fn reserve_now(&self, sale_id: SaleId, user: &UserId, now: Millis) -> Result<Reservation, Refusal> {
        let sale = self.sale(sale_id).ok_or(Refusal::UnknownSale)?;
        let limit = sale.sale.spec.per_user_limit;
        if let Some(refusal) = sale.sale.spec.window_refusal(now) {
            return Err(refusal);
        }
        // Stampede fast path: once the stock is gone, no write lock is taken; a shard read
        // tells a buyer who already holds their units so, rather than "sold out".
        if sale.remaining.load(Ordering::Acquire) == 0 {
            let at_limit = sale.holders.get(user).is_some_and(|h| h.held >= limit);
            return Err(if at_limit {
                Refusal::LimitReached
            } else {
                Refusal::SoldOut
            });
        }
        // The entry guard holds this buyer's shard: the same buyer's concurrent requests queue here.
        let mut entry = sale.holders.entry(user.clone()).or_default();
        if entry.held >= limit {
            return Err(Refusal::LimitReached);
        }
        match sale
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1))
        {
            Ok(before) => {
                entry.held += 1;
                entry.last_seq += 1;
                Ok(Reservation {
                    order_id: new_order_id(sale_id),
                    sale_id,
                    user_id: user.clone(),
                    seq: entry.last_seq,
                    remaining: before - 1,
                    reserved_at: now,
                    pay_by: sale.sale.spec.pay_by(now),
                    pending: PendingShare::default(),
                })
            }
            Err(_) => {
                // A buyer who never got a unit leaves no entry behind.
                let never_held = entry.last_seq == 0;
                drop(entry);
                if never_held {
                    sale.holders.remove_if(user, |_, h| h.last_seq == 0);
                }
                Err(Refusal::SoldOut)
            }
        }
    }
}

impl StockGate for MemoryGate {
    async fn load_sale(&self, sale: Arc<Sale>, state: GateState) -> Result<(), BackendError> {
        let GateState {
            holders,
            mut open_holds,
            paid,
        } = state;
        let held: u64 = holders.iter().map(|h| u64::from(h.held)).sum();
        let id = sale.id;
        let gate = SaleGate {
            remaining: AtomicU64::new(sale.spec.stock.saturating_sub(held)),
            sale,
            holders: holders
                .into_iter()
                .map(|h| {
                    let held = Held {
                        held: h.held,
                        last_seq: h.last_seq.max(h.held),
                    };
                    (h.user, held)
                })
                .collect(),
            holds: HoldBook::default(),
        };
        open_holds.sort_by_key(|o| o.pay_by);
        for order in open_holds.iter().filter(|o| o.state == OrderState::AwaitingPayment) {
            gate.holds.open(order);
        }
        gate.holds.set_paid(paid);
        self.sales.insert(id, Arc::new(gate));
        Ok(())
    }

    async fn reserve(&self, sale: SaleId, user: &UserId, now: Millis) -> Result<Reservation, ReserveError> {
        self.reserve_now(sale, user, now).map_err(ReserveError::Refused)
    }

    fn known_sold_out(&self, sale: SaleId, _: Millis) -> bool {
        self.sales
            .get(&sale)
            .is_some_and(|g| g.remaining.load(Ordering::Acquire) == 0)
    }

    /// Nothing is pending in process (the store's commit is the confirmation); an order
    /// awaiting payment opens its hold.
    fn confirm(&self, r: &Reservation) {
        let (Some(pay_by), Some(sale)) = (r.pay_by, self.sale(r.sale_id)) else {
            return;
        };
        sale.holds.open(&Order {
            order_id: r.order_id,
            sale_id: r.sale_id,
            user_id: r.user_id.clone(),
            seq: r.seq,
            created_at: r.reserved_at,
            state: OrderState::AwaitingPayment,
            pay_by: Some(pay_by),
            payment: None,
        });
    }

    async fn release(&self, reservation: &Reservation) -> Result<(), BackendError> {
        // A sale the gate does not know has no stock to return to.
        if let Some(sale) = self.sale(reservation.sale_id) {
            sale.restock(&reservation.user_id);
        }
        Ok(())
    }

    async fn settle(
        &self,
        sale_id: SaleId,
        order_id: uuid::Uuid,
        transition: &Transition,
        now: Millis,
    ) -> Result<Settlement, BackendError> {
        let Some(sale) = self.sale(sale_id) else {
            return Ok(Settlement::Unknown);
        };
        Ok(sale.holds.settle(sale_id, order_id, transition, now))
    }

    async fn expire_due(&self, sale_id: SaleId, now: Millis, limit: usize) -> Result<Vec<Order>, BackendError> {
        let Some(sale) = self.sale(sale_id) else {
            return Ok(Vec::new());
        };
        let expired = sale
            .holds
            .due(now, limit)
            .into_iter()
            .filter_map(
                |order_id| match sale.holds.settle(sale_id, order_id, &Transition::Expire, now) {
                    Settlement::Won(order) => Some(order),
                    _ => None, // paid or cancelled meanwhile
                },
            )
            .collect();
        Ok(expired)
    }

    async fn unconfirmed(&self, sale: SaleId, older_than: Millis) -> Result<Vec<Order>, BackendError> {
        Ok(self
            .sale(sale)
            .map(|g| g.holds.unconfirmed(sale, older_than))
            .unwrap_or_default())
    }

    /// An expiry or cancellation gives its unit back here, once SQLite has it.
    fn recorded(&self, orders: &[Order]) {
        for order in orders {
            if let Some(sale) = self.sale(order.sale_id) {
                let first = sale.holds.recorded(&order.order_id);
                if first && matches!(order.state, OrderState::Expired | OrderState::Cancelled) {
                    sale.restock(&order.user_id);
                }
            }
        }
    }

    async fn hold(&self, sale: SaleId, order_id: uuid::Uuid) -> Result<Option<Order>, BackendError> {
        Ok(self.sale(sale).and_then(|g| g.holds.get(sale, &order_id)))
    }

    async fn hold_counts(&self, sale: SaleId) -> Result<HoldCounts, BackendError> {
        let (awaiting_payment, paid) = self.sale(sale).map_or((0, 0), |g| g.holds.counts());
        Ok(HoldCounts { awaiting_payment, paid })
    }

    /// In process, a reservation lives only inside its request: none is left open at rest.
    async fn open_reservations(&self, _: SaleId) -> Result<u64, BackendError> {
        Ok(0)
    }

    /// In process: ready whenever it runs.
    async fn ready(&self) -> Vec<Check> {
        vec![Check::required("gate", Ok(()))]
    }

    async fn remaining(&self, sale: SaleId) -> Result<Option<u64>, BackendError> {
        Ok(self.sales.get(&sale).map(|g| g.remaining.load(Ordering::Acquire)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Holding;
    use proptest::prelude::*;

    fn sale(stock: u64, limit: u32) -> Arc<Sale> {
        Arc::new(Sale {
            id: SaleId(1),
            spec: crate::domain::SaleSpec {
                name: "phone".into(),
                stock,
                starts_at: Some(1_000),
                ends_at: Some(2_000),
                per_user_limit: limit,
                demo: false,
                payment_window_secs: 0,
                waiting_room: None,
                stock_shards: 1,
            },
            created_at: 0,
        })
    }

    fn user(n: usize) -> UserId {
        UserId::parse(&format!("u{n}")).unwrap()
    }

    fn holding(user: UserId, held: u32) -> Holding {
        Holding {
            user,
            held,
            last_seq: held,
        }
    }

    fn gate(stock: u64, limit: u32, holders: Vec<Holding>) -> MemoryGate {
        let gate = MemoryGate::new();
        let state = GateState {
            holders,
            ..GateState::default()
        };
        futures::executor::block_on(gate.load_sale(sale(stock, limit), state)).unwrap();
        gate
    }

    #[test]
    fn refuses_outside_the_window_and_unknown_sales() {
        let g = gate(5, 1, vec![]);
        assert_eq!(g.reserve_now(SaleId(1), &user(1), 999), Err(Refusal::NotStarted));
        assert_eq!(g.reserve_now(SaleId(1), &user(1), 2_000), Err(Refusal::Ended));
        assert_eq!(g.reserve_now(SaleId(2), &user(1), 1_500), Err(Refusal::UnknownSale));
    }

    #[test]
    fn sells_stock_then_sold_out_and_counts_down() {
        let g = gate(2, 1, vec![]);
        assert_eq!(g.reserve_now(SaleId(1), &user(1), 1_500).unwrap().remaining, 1);
        assert_eq!(g.reserve_now(SaleId(1), &user(1), 1_500), Err(Refusal::LimitReached));
        assert_eq!(g.reserve_now(SaleId(1), &user(2), 1_500).unwrap().remaining, 0);
        assert_eq!(g.reserve_now(SaleId(1), &user(3), 1_500), Err(Refusal::SoldOut));
    }

    #[test]
    fn release_returns_the_unit_and_the_buyers_slot_under_a_new_seq() {
        let g = gate(1, 1, vec![]);
        let r = g.reserve_now(SaleId(1), &user(1), 1_500).unwrap();
        futures::executor::block_on(g.release(&r)).unwrap();
        let again = g.reserve_now(SaleId(1), &user(1), 1_500).unwrap();
        assert_eq!((again.seq, again.remaining), (2, 0));
    }

    #[test]
    fn releasing_a_lower_seq_never_reissues_a_higher_one_still_held() {
        // The buyer holds seq 1 and 2; seq 1 goes back (its store write failed). The next unit
        // must not be seq 2 again: that one is stored, and a second order under it would be lost.
        let g = gate(10, 3, vec![]);
        let first = g.reserve_now(SaleId(1), &user(1), 1_500).unwrap();
        let second = g.reserve_now(SaleId(1), &user(1), 1_500).unwrap();
        futures::executor::block_on(g.release(&first)).unwrap();
        let third = g.reserve_now(SaleId(1), &user(1), 1_500).unwrap();
        assert_eq!((first.seq, second.seq, third.seq), (1, 2, 3));
    }

    #[test]
    fn a_rebuilt_gate_continues_after_the_highest_stored_seq() {
        // Stored: only seq 2 (seq 1 was released). Held 1, last seq 2: the next unit is seq 3.
        let g = gate(
            10,
            3,
            vec![Holding {
                user: user(1),
                held: 1,
                last_seq: 2,
            }],
        );
        assert_eq!(g.reserve_now(SaleId(1), &user(1), 1_500).unwrap().seq, 3);
    }

    #[test]
    fn load_sale_rebuilds_remaining_and_holders() {
        let g = gate(10, 2, vec![holding(user(1), 2), holding(user(2), 1)]);
        assert_eq!(futures::executor::block_on(g.remaining(SaleId(1))).unwrap(), Some(7));
        assert_eq!(g.reserve_now(SaleId(1), &user(1), 1_500), Err(Refusal::LimitReached));
        assert_eq!(g.reserve_now(SaleId(1), &user(2), 1_500).unwrap().seq, 2);
    }

    #[test]
    fn threads_racing_never_oversell_or_exceed_the_limit() {
        let g = Arc::new(gate(500, 2, vec![]));
        let granted: Vec<Reservation> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let g = Arc::clone(&g);
                    // Every thread hammers the same 300 buyers: contention on stock and on buyers.
                    s.spawn(move || {
                        (0..300)
                            .filter_map(|u| g.reserve_now(SaleId(1), &user((u + t) % 300), 1_500).ok())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(granted.len(), 500);
        let mut per_user = std::collections::HashMap::new();
        for r in &granted {
            *per_user.entry(r.user_id.clone()).or_insert(0u32) += 1;
        }
        assert!(per_user.values().all(|&n| n <= 2));
    }

    proptest! {
        /// Any sequence of purchases and releases keeps sold ≤ stock and held ≤ limit per buyer,
        /// sold + remaining == stock, and never hands out one buyer's `seq` twice.
        #[test]
        fn interleavings_keep_the_invariants(stock in 0u64..20, limit in 1u32..4,
                                             ops in prop::collection::vec((0usize..6, any::<bool>()), 0..80)) {
            let g = gate(stock, limit, vec![]);
            let mut held: Vec<Reservation> = Vec::new();
            let mut issued = std::collections::HashSet::new();
            for (buyer, buy) in ops {
                if buy || held.is_empty() {
                    if let Ok(r) = g.reserve_now(SaleId(1), &user(buyer), 1_500) {
                        prop_assert!(issued.insert((r.user_id.clone(), r.seq)), "seq {} reissued", r.seq);
                        held.push(r);
                    }
                } else {
                    let r = held.swap_remove(buyer % held.len());
                    futures::executor::block_on(g.release(&r)).unwrap();
                }
                let remaining = futures::executor::block_on(g.remaining(SaleId(1))).unwrap().unwrap();
                prop_assert_eq!(held.len() as u64 + remaining, stock);
                for b in 0..6 {
                    let n = held.iter().filter(|r| r.user_id == user(b)).count();
                    prop_assert!(n <= limit as usize);
                }
            }
        }
    }
}
