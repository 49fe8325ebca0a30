//! The distributed [`OrderStore`]: an order is recorded once the Kafka log acknowledges it;
//! the consumer later writes it to MySQL, where the catalogue and the reads live.

use super::{MySqlStore, OrderStore, StoreAudit};
use crate::backend::{BackendError, Check, Role};
use crate::domain::{GateState, Order, Sale, SaleId, SaleSpec, UserId};
use crate::log::KafkaLog;
use crate::payment::LatePayment;

/// How long `/readyz` waits for each of MySQL and the broker (within the engine's 2.5 s bound).
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

pub struct DistributedStore {
    pub log: std::sync::Arc<KafkaLog>,
    pub mysql: MySqlStore,
    /// Fault injection (`--commit-delay-ms`): hold each order before publishing it.
    pub publish_delay: std::time::Duration,
    /// The consumers' group: whether they drained the log tells when MySQL has every order.
    pub consumer_group: String,
}

impl OrderStore for DistributedStore {
    async fn record(&self, order: &Order) -> Result<(), BackendError> {
        if !self.publish_delay.is_zero() {
            tokio::time::sleep(self.publish_delay).await;
        }
        self.log.publish(order).await
    }

    async fn create_sale(&self, spec: SaleSpec) -> Result<Sale, BackendError> {
        self.mysql.create_sale(spec).await
    }

    async fn sales_after(&self, after: SaleId) -> Result<Vec<Sale>, BackendError> {
        self.mysql.sales_after(after).await
    }

    async fn orders_of(&self, sale: SaleId, user: &UserId) -> Result<Vec<Order>, BackendError> {
        self.mysql.orders_of(sale, user).await
    }

    async fn order(&self, order_id: uuid::Uuid) -> Result<Option<Order>, BackendError> {
        self.mysql.order(order_id).await
    }

    async fn gate_state(&self, sale: SaleId) -> Result<GateState, BackendError> {
        self.mysql.gate_state(sale).await
    }

    /// Through the log, like a purchase: durable once the broker has every one of them.
    async fn record_transitions(&self, orders: &[Order]) -> Result<(), BackendError> {
        let published = futures::future::join_all(orders.iter().map(|o| self.log.publish(o))).await;
        published.into_iter().collect()
    }

    async fn record_late_payment(&self, late: &LatePayment) -> Result<(), BackendError> {
        self.mysql.record_late_payment(late).await
    }

    async fn caught_up(&self, since: crate::domain::Millis) -> Result<bool, BackendError> {
        let settled_at = since + self.log.longest_delivery_wait().as_millis() as i64;
        if crate::domain::now_millis() < settled_at {
            return Ok(false);
        }
        let log = std::sync::Arc::clone(&self.log);
        let group = self.consumer_group.clone();
        tokio::task::spawn_blocking(move || log.drained(&group, READY_TIMEOUT))
            .await
            .map_err(|e| BackendError::fault(Role::Log, e))?
    }

    async fn audit(&self, sale: SaleId, per_user_limit: u32) -> Result<StoreAudit, BackendError> {
        self.mysql.audit(sale, per_user_limit).await
    }

    /// Kafka is on the buy path; MySQL is not (orders wait in the log while it is down), so an
    /// instance without MySQL still sells: degraded, not unready.
    async fn ready(&self) -> Vec<Check> {
        let mysql = async {
            tokio::time::timeout(READY_TIMEOUT, self.mysql.ready())
                .await
                .unwrap_or_else(|_| {
                    Err(BackendError::unavailable(
                        Role::Store,
                        format!("mysql: no answer within {READY_TIMEOUT:?}"),
                    ))
                })
        };
        let (mysql, kafka) = tokio::join!(mysql, self.log.ready(READY_TIMEOUT));
        vec![Check::required("kafka", kafka), Check::optional("mysql", mysql)]
    }

    async fn close(&self) {
        let log = std::sync::Arc::clone(&self.log);
        let _ = tokio::task::spawn_blocking(move || log.flush()).await;
    }
}
