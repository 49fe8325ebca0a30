//! Recovery of a gate that lost sales: a Redis without persistence that restarted, a
//! `FLUSHALL`, an evicted key. The store still has the sale and its orders, so the gate is
//! rebuilt from it, as at start-up; until then the sale answers 503 (never 404, never "sold
//! out"), and `/readyz` is 503 naming the sale.
//!
//! Rebuilding too early could sell a unit twice: in the distributed mode an order acknowledged
//! by the log may not be in MySQL yet, and a reservation made before the loss may still be
//! published. So a lost sale is rebuilt only once the store has caught up with everything
//! acknowledged up to then ([`crate::store::OrderStore::caught_up`]): the log's longest delivery
//! wait has passed since the loss was seen, and the consumers have drained the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::{BackendError, Check, Role};
use crate::domain::{now_millis, Millis, SaleId};
use crate::engine::Engine;
use crate::gate::StockGate;
use crate::store::OrderStore;

/// How often lost sales are looked at.
const EVERY: Duration = Duration::from_millis(500);

/// Sales the gate lost, with when the loss was first seen.
#[derive(Default)]
pub struct LostSales(Mutex<HashMap<SaleId, Millis>>);

impl LostSales {
    /// Marks `sale` lost (keeping the first sighting); `true` the first time.
    pub fn mark(&self, sale: SaleId, now: Millis) -> bool {
        let mut lost = self.lock();
        if lost.contains_key(&sale) {
            return false;
        }
        lost.insert(sale, now);
        true
    }

    fn snapshot(&self) -> Vec<(SaleId, Millis)> {
        self.lock().iter().map(|(s, at)| (*s, *at)).collect()
    }

    fn healed(&self, sale: SaleId) {
        self.lock().remove(&sale);
    }

    /// `/readyz`: a gate with a lost sale cannot sell it.
    pub fn check(&self) -> Check {
        let lost: Vec<String> = self.lock().keys().map(|s| s.to_string()).collect();
        let result = if lost.is_empty() {
            Ok(())
        } else {
            Err(BackendError::unavailable(
                Role::Gate,
                format!("the gate lost sale(s) {}; rebuilding from the store", lost.join(", ")),
            ))
        };
        Check::required("gate-state", result)
    }

    // A panic cannot leave the map half-written: poisoning is ignored.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SaleId, Millis>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<G: StockGate, S: OrderStore> Engine<G, S> {
    /// The gate does not know `sale`, which the store has: the gate lost it. The caller answers
    /// 503 with the returned error.
    pub(crate) fn gate_lost(&self, sale: SaleId) -> BackendError {
        if self.lost.mark(sale, now_millis()) {
            tracing::error!(sale = %sale, "the gate lost this sale; it is rebuilt from the store once the store has caught up");
        }
        BackendError::unavailable(
            Role::Gate,
            format!("the gate lost sale {sale}; rebuilding it from the store"),
        )
    }

    /// Rebuilds every lost sale whose store has caught up; returns how many.
    pub async fn heal_lost_sales(&self) -> usize {
        let mut healed = 0;
        for (sale_id, lost_at) in self.lost.snapshot() {
            match self.store.caught_up(lost_at).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(sale = %sale_id, error = %e.chain(), "cannot tell whether the store caught up");
                    continue;
                }
            }
            let Some(sale) = self.cached().get(&sale_id).cloned() else {
                self.lost.healed(sale_id);
                continue;
            };
            let rebuilt = async {
                self.gate
                    .load_sale(Arc::clone(&sale), self.store.gate_state(sale_id).await?)
                    .await
            };
            match rebuilt.await {
                Ok(()) => {
                    self.lost.healed(sale_id);
                    healed += 1;
                    tracing::warn!(sale = %sale_id, "the gate's sale was rebuilt from the store");
                }
                Err(e) => tracing::warn!(sale = %sale_id, error = %e.chain(), "cannot rebuild the lost sale yet"),
            }
        }
        healed
    }
}

/// Runs [`Engine::heal_lost_sales`] every `EVERY` until `stop`.
pub async fn run<G: StockGate, S: OrderStore>(engine: &Engine<G, S>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => { engine.heal_lost_sales().await; }
        }
    }
}
