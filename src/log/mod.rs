//! The order log: the durable hand-off between the buy path and the order store in the
//! distributed mode. An order is "confirmed" once the log has acknowledged it.

pub mod kafka;

pub use kafka::KafkaLog;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::domain::{Millis, Order, OrderState, Payment, SaleId, UserId};

/// An order as it travels through the log (JSON). Borrows the user id when publishing, so the
/// buy path serialises without copying it.
///
/// The log carries every state an order passes through: the purchase (`confirmed` or
/// `awaiting_payment`), then its payment, expiry or cancellation as the whole order again. The
/// store merges them in any order (a hold only ever closes), so a replay or a re-published copy
/// changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderEvent<'a> {
    pub order_id: uuid::Uuid,
    pub sale_id: i64,
    pub user_id: Cow<'a, str>,
    pub seq: u32,
    pub created_at: Millis,
    /// Absent in events written before orders had states: `confirmed`.
    #[serde(default = "confirmed", skip_serializing_if = "is_confirmed")]
    pub state: OrderState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay_by: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<Millis>,
}

fn confirmed() -> OrderState {
    OrderState::Confirmed
}

fn is_confirmed(state: &OrderState) -> bool {
    *state == OrderState::Confirmed
}

/// Why an event read from the log is not an order.
#[derive(Debug, thiserror::Error)]
pub enum InvalidEvent {
    #[error("invalid user id")]
    UserId(#[from] crate::domain::UserIdError),
    #[error("a paid order without its payment")]
    PaymentMissing,
}

impl<'a> From<&'a Order> for OrderEvent<'a> {
    fn from(o: &'a Order) -> Self {
        OrderEvent {
            order_id: o.order_id,
            sale_id: o.sale_id.0,
            user_id: Cow::Borrowed(o.user_id.as_str()),
            seq: o.seq,
            created_at: o.created_at,
            state: o.state,
            pay_by: o.pay_by,
            payment_id: o.payment.as_ref().map(|p| Cow::Borrowed(p.id.as_str())),
            paid_at: o.payment.as_ref().map(|p| p.at),
        }
    }
}

impl OrderEvent<'_> {
    /// Parses and validates an event read from the log.
    pub fn into_order(self) -> Result<Order, InvalidEvent> {
        let payment = match (self.payment_id, self.paid_at) {
            (Some(id), Some(at)) => Some(Payment {
                id: id.into_owned(),
                at,
            }),
            _ if self.state == OrderState::Paid => return Err(InvalidEvent::PaymentMissing),
            _ => None,
        };
        Ok(Order {
            order_id: self.order_id,
            sale_id: SaleId(self.sale_id),
            user_id: UserId::parse(&self.user_id)?,
            seq: self.seq,
            created_at: self.created_at,
            state: self.state,
            pay_by: self.pay_by,
            payment,
        })
    }
}
