//! Expiry: holds whose deadline passed go back on sale. Every instance runs it (any instance
//! may expire any hold: the gate decides each hold once), every [`EVERY`], so a hold expires
//! within about that much after its `pay_by`. It also records again transitions the gate decided
//! but whose durability was never confirmed.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::{now_millis, OrderState};
use crate::engine::Engine;
use crate::gate::StockGate;
use crate::metrics::TransitionKind;
use crate::store::OrderStore;

/// How often due holds are looked for: well inside the promised second after `pay_by`.
pub const EVERY: Duration = Duration::from_millis(200);
/// Holds expired per gate call and store batch: one group commit or one publish batch each.
const BATCH: usize = 5_000;
/// A transition unconfirmed for this long is recorded again (long enough that the request or
/// pass that decided it has finished trying).
const UNCONFIRMED_AFTER_MS: i64 = 3_000;

/// Runs [`Engine::expire_due`] every [`EVERY`] until `stop`.
pub async fn run<G: StockGate, S: OrderStore>(engine: &Engine<G, S>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut passes: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                // Sales another instance created: this one expires their holds too, so holds
                // expire while that instance is down.
                if passes.is_multiple_of(25) {
                    if let Err(e) = engine.refresh_catalogue().await {
                        tracing::warn!(error = %e, "cannot refresh the catalogue of sales");
                    }
                }
                engine.expire_due().await;
                passes += 1;
                // Every few seconds: what a failed store or a dead instance left unconfirmed.
                if passes.is_multiple_of(15) {
                    engine.record_unconfirmed().await;
                }
            }
        }
    }
}

impl<G: StockGate, S: OrderStore> Engine<G, S> {
    /// The sales whose wins are holds: the only ones with anything to expire.
    fn sales_with_a_window(&self) -> Vec<crate::domain::SaleId> {
        self.cached()
            .values()
            .filter(|s| s.spec.payment_window_secs > 0)
            .map(|s| s.id)
            .collect()
    }

    /// Expires every due hold of every sale with a payment window; returns how many expired.
    pub async fn expire_due(&self) -> usize {
        let sales = self.sales_with_a_window();
        let mut expired = 0;
        for sale in sales {
            loop {
                let due = match self.gate.expire_due(sale, now_millis(), BATCH).await {
                    Ok(due) if due.is_empty() => break,
                    Ok(due) => due,
                    Err(e) => {
                        tracing::warn!(sale = %sale, error = %e.chain(), "cannot expire holds now");
                        break;
                    }
                };
                expired += due.len();
                if let Err(e) = self.record(&due, TransitionKind::Expired).await {
                    // Decided, not durable: recorded again by a later pass.
                    tracing::warn!(sale = %sale, holds = due.len(), error = %e.chain(), "expiries not recorded yet");
                    break;
                }
            }
        }
        expired
    }

    /// Records again the transitions the gate decided but never saw confirmed.
    pub async fn record_unconfirmed(&self) {
        let sales = self.sales_with_a_window();
        for sale in sales {
            let older_than = now_millis() - UNCONFIRMED_AFTER_MS;
            let orders = match self.gate.unconfirmed(sale, older_than).await {
                Ok(orders) if orders.is_empty() => continue,
                Ok(orders) => orders,
                Err(e) => {
                    tracing::warn!(sale = %sale, error = %e.chain(), "cannot read unconfirmed transitions");
                    continue;
                }
            };
            for kind in [TransitionKind::Paid, TransitionKind::Expired, TransitionKind::Cancelled] {
                let batch: Vec<_> = orders
                    .iter()
                    .filter(|o| TransitionKind::of(o.state) == Some(kind))
                    .cloned()
                    .collect();
                if let Err(e) = self.record(&batch, kind).await {
                    tracing::warn!(sale = %sale, error = %e.chain(), "unconfirmed transitions not recorded yet");
                }
            }
        }
    }
}

impl TransitionKind {
    /// The transition that leads to `state`, if one does.
    pub fn of(state: OrderState) -> Option<Self> {
        match state {
            OrderState::Paid => Some(TransitionKind::Paid),
            OrderState::Expired => Some(TransitionKind::Expired),
            OrderState::Cancelled => Some(TransitionKind::Cancelled),
            OrderState::Confirmed | OrderState::AwaitingPayment => None,
        }
    }
}
