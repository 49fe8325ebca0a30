//! The reconciler: finds reservations whose instance never confirmed them (it died between the
//! gate and the log's ack, or the ack was lost) and re-publishes their orders, and finishes
//! moves of units between a sharded sale's shards that an instance started and never finished.
//!
//! Re-publishing is always safe: if the order did reach the log, the store ignores the copy;
//! if it did not, the unit becomes the order its buyer asked for. Returning such a unit to
//! stock instead could sell it twice, because nothing can prove the order is not in the log.

use std::time::Duration;

use crate::backend::BackendError;
use crate::domain::now_millis;
use crate::gate::RedisGate;
use crate::log::KafkaLog;

/// One pass: every reservation pending for longer than `grace` is re-published and forgotten.
/// Returns how many were re-published.
pub async fn reconcile_once(gate: &RedisGate, log: &KafkaLog, grace: Duration) -> Result<usize, BackendError> {
    let cutoff = now_millis() - grace.as_millis() as i64;
    let mut republished = 0;
    for sale in gate.sale_ids().await? {
        // Units cut off between two shards of a sale go where they were going. A move that
        // cannot be finished now (a shard Redis lost) waits for the next pass and holds up
        // nothing else.
        match gate.finish_moves(sale, cutoff).await {
            Ok(0) => {}
            Ok(moves) => {
                tracing::warn!(sale = %sale, moves, "finished moves of units between shards that were cut off")
            }
            Err(e) => {
                tracing::warn!(sale = %sale, error = %e.chain(), "could not finish a move between shards; retrying next pass")
            }
        }
        for stale in gate.stale(sale, cutoff).await? {
            for order in &stale.orders {
                log.publish(order).await?;
                tracing::warn!(sale = %sale, order = %order.order_id, reserved_at = order.created_at, "re-published an unconfirmed reservation");
                republished += 1;
            }
            gate.forget(&stale).await?;
        }
    }
    Ok(republished)
}

/// Runs [`reconcile_once`] every `every` until `shutdown` resolves.
pub async fn run(
    gate: &RedisGate,
    log: &KafkaLog,
    grace: Duration,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {
                if let Err(e) = reconcile_once(gate, log, grace).await {
                    tracing::warn!(error = %e.chain(), "reconciler pass failed; retrying next tick");
                }
            }
        }
    }
}
