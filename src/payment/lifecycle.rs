//! The engine's side of the payment lifecycle: pay, cancel, read an order, expire what is due.
//! Each transition is decided by the gate and made durable by the store before it is answered.

use seckill_api::OrderDetail;

use super::{LatePayment, Settlement, Transition};
use crate::backend::{BackendError, Role};
use crate::domain::{format_millis, now_millis, sale_of_order, Order, OrderState, Payment, UserId};
use crate::engine::Engine;
use crate::gate::StockGate;
use crate::metrics::{TransitionKind, METRICS};
use crate::store::OrderStore;

/// Why a payment or a cancellation was not applied.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("no such order")]
    OrderNotFound,
    /// Another payment settled this order.
    #[error("the order is already paid")]
    AlreadyPaid,
    /// The hold expired or was cancelled (or the order had no payment step): the payment is
    /// kept as a late payment, for a refund.
    #[error("the payment window is closed")]
    WindowClosed,
    /// Paid, expired or already cancelled (or no payment step): nothing to cancel.
    #[error("the order cannot be cancelled")]
    NotCancellable,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// An order as the API shows it.
pub fn detail(order: &Order) -> OrderDetail {
    OrderDetail {
        order_id: order.order_id.hyphenated().to_string(),
        sale_id: order.sale_id.0,
        user_id: order.user_id.to_string(),
        seq: order.seq,
        state: order.state,
        created_at: format_millis(order.created_at),
        pay_by: order.pay_by.map(format_millis),
        paid_at: order.payment.as_ref().map(|p| format_millis(p.at)),
        payment_id: order.payment.as_ref().map(|p| p.id.clone()),
    }
}

impl<G: StockGate, S: OrderStore> Engine<G, S> {
    /// The order by its id: as the gate holds it (fresh in distributed mode, where the store
    /// lags the log), else as the store has it.
    pub async fn order(&self, order_id: uuid::Uuid) -> Result<Option<Order>, BackendError> {
        let sale = sale_of_order(&order_id);
        if let Some(order) = self.gate.hold(sale, order_id).await? {
            return Ok(Some(order));
        }
        self.store.order(order_id).await
    }

    /// The payment provider says `payment` paid `order_id`.
    pub async fn pay(
        &self,
        order_id: uuid::Uuid,
        payment: Payment,
        amount: Option<String>,
    ) -> Result<Order, PaymentError> {
        let sale = sale_of_order(&order_id);
        // The gate learns a sale another instance created on first use.
        let _ = self.find_sale(sale).await;
        let transition = Transition::Pay(payment.clone());
        match self.gate.settle(sale, order_id, &transition, now_millis()).await? {
            Settlement::Won(order) => {
                self.record(std::slice::from_ref(&order), TransitionKind::Paid).await?;
                Ok(order)
            }
            Settlement::AlreadyDone { order, unconfirmed } => {
                if unconfirmed {
                    self.record(std::slice::from_ref(&order), TransitionKind::Paid).await?;
                }
                Ok(order)
            }
            Settlement::Lost(order) => self.refuse_payment(order, payment, amount).await,
            Settlement::Unknown => match self.store.order(order_id).await? {
                None => Err(PaymentError::OrderNotFound),
                // A hold open in the store but unknown to the gate: the gate lost it (it heals
                // by reloading the sale); retrying later is right.
                Some(order) if order.state == OrderState::AwaitingPayment => Err(BackendError::unavailable(
                    Role::Gate,
                    format!("order {order_id} awaits payment but the gate holds no such hold"),
                )
                .into()),
                Some(order) => self.refuse_payment(order, payment, amount).await,
            },
        }
    }

    /// A payment the order cannot take: the same payment again is fine; another one for a paid
    /// order is refused; one for a closed hold is kept for a refund, durably, then refused.
    async fn refuse_payment(
        &self,
        order: Order,
        payment: Payment,
        amount: Option<String>,
    ) -> Result<Order, PaymentError> {
        match &order.payment {
            Some(settled) if settled.id == payment.id => return Ok(order),
            Some(_) => return Err(PaymentError::AlreadyPaid),
            None => {}
        }
        let late = LatePayment {
            payment_id: payment.id,
            order_id: order.order_id,
            sale_id: order.sale_id,
            amount,
            received_at: payment.at,
        };
        self.store.record_late_payment(&late).await?;
        METRICS.observe_late_payment();
        tracing::warn!(order = %order.order_id, payment = %late.payment_id, state = order.state.as_str(),
            "payment for a closed hold refused; kept for a refund");
        Err(PaymentError::WindowClosed)
    }

    /// The buyer gives a hold up: its unit goes back on sale.
    pub async fn cancel(&self, order_id: uuid::Uuid, by: &UserId) -> Result<Order, PaymentError> {
        let sale = sale_of_order(&order_id);
        let _ = self.find_sale(sale).await;
        let transition = Transition::Cancel { by: by.clone() };
        match self.gate.settle(sale, order_id, &transition, now_millis()).await? {
            Settlement::Won(order) => {
                self.record(std::slice::from_ref(&order), TransitionKind::Cancelled)
                    .await?;
                Ok(order)
            }
            Settlement::AlreadyDone { .. } | Settlement::Lost(_) => Err(PaymentError::NotCancellable),
            Settlement::Unknown => match self.store.order(order_id).await? {
                Some(order) if order.user_id == *by => Err(PaymentError::NotCancellable),
                // Not revealing that another buyer's order exists.
                _ => Err(PaymentError::OrderNotFound),
            },
        }
    }

    /// Makes decided transitions durable, then tells the gate (which may give units back).
    pub(crate) async fn record(&self, orders: &[Order], kind: TransitionKind) -> Result<(), BackendError> {
        if orders.is_empty() {
            return Ok(());
        }
        self.store.record_transitions(orders).await?;
        self.gate.recorded(orders);
        METRICS.observe_transitions(kind, orders.len() as u64);
        Ok(())
    }
}
