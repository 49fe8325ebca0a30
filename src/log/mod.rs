//! The order log: the durable hand-off between the buy path and the order store in the
//! distributed mode. An order is "confirmed" once the log has acknowledged it.

pub mod kafka;

pub use kafka::KafkaLog;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::domain::{Millis, Order, SaleId, UserId, UserIdError};

/// An order as it travels through the log (JSON). Borrows the user id when publishing, so the
/// buy path serialises without copying it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderEvent<'a> {
    pub order_id: uuid::Uuid,
    pub sale_id: i64,
    pub user_id: Cow<'a, str>,
    pub seq: u32,
    pub created_at: Millis,
}

impl<'a> From<&'a Order> for OrderEvent<'a> {
    fn from(o: &'a Order) -> Self {
        OrderEvent {
            order_id: o.order_id,
            sale_id: o.sale_id.0,
            user_id: Cow::Borrowed(o.user_id.as_str()),
            seq: o.seq,
            created_at: o.created_at,
        }
    }
}

impl OrderEvent<'_> {
    /// Parses and validates an event read from the log.
    pub fn into_order(self) -> Result<Order, UserIdError> {
        Ok(Order {
            order_id: self.order_id,
            sale_id: SaleId(self.sale_id),
            user_id: UserId::parse(&self.user_id)?,
            seq: self.seq,
            created_at: self.created_at,
        })
    }
}
