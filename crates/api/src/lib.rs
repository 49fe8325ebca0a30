//! # seckill-api: the wire types of the seckill HTTP API
//!
//! One type per JSON body the engine answers, with the engine's field names and shapes, so a
//! client (the load generator, the auditor, a test) reads `sale.remaining` rather than
//! `value["remaining"]`. It depends on `serde` only: a client takes these types without the
//! engine and its backends.
//!
//! What every type here keeps of the wire format:
//! - times are RFC 3339 strings, UTC, millisecond precision (`2026-12-01T10:00:00.000Z`);
//! - a sale id is an integer, a user id a string of 1 to 64 of `A-Z a-z 0-9 _ - . : @`;
//! - an optional field the engine sends as `null` is an `Option` that serializes to `null`; one
//!   the engine leaves out is an `Option` that is left out when `None`;
//! - fields a type does not know are ignored when reading, so an engine that adds a field does
//!   not break a client built against these types.
//!
//! The engine's `src/http/openapi.json` describes the same bodies for clients in other languages.

use serde::{Deserialize, Serialize};

/// Where a sale stands, as of the answer's `server_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleStatus {
    /// Before `starts_at`.
    Upcoming,
    /// Open, with stock remaining.
    Live,
    /// Open, but nothing remains.
    SoldOut,
    /// From `ends_at` on.
    Ended,
}

/// Where an order stands. Without a payment window an order is `confirmed` for good; with one it
/// is `awaiting_payment` until exactly one of `paid`, `expired` or `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Confirmed,
    AwaitingPayment,
    Paid,
    Expired,
    Cancelled,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Confirmed => "confirmed",
            OrderState::AwaitingPayment => "awaiting_payment",
            OrderState::Paid => "paid",
            OrderState::Expired => "expired",
            OrderState::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "confirmed" => OrderState::Confirmed,
            "awaiting_payment" => OrderState::AwaitingPayment,
            "paid" => OrderState::Paid,
            "expired" => OrderState::Expired,
            "cancelled" => OrderState::Cancelled,
            _ => return None,
        })
    }

    /// The order holds its unit: it counts against the stock and the buyer's limit.
    pub fn holds_unit(self) -> bool {
        matches!(
            self,
            OrderState::Confirmed | OrderState::AwaitingPayment | OrderState::Paid
        )
    }
}

/// A sale as the API shows it: `GET /api/sales/{id}`, and `POST /api/sales` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleView {
    pub id: i64,
    pub name: String,
    /// Units the sale started with.
    pub stock: u64,
    /// Units the gate can still hand out.
    pub remaining: u64,
    /// `stock - remaining`.
    pub sold: u64,
    /// Units one buyer may hold.
    pub per_user_limit: u32,
    /// `null`: open from creation.
    pub starts_at: Option<String>,
    /// `null`: no end.
    pub ends_at: Option<String>,
    pub status: SaleStatus,
    /// The sale created on first start, the one the classic API (`/seckill/*`) sells.
    pub demo: bool,
    /// The engine's clock when it answered, so a page counts down against it, not the buyer's.
    pub server_time: String,
    /// Seconds a winner has to pay; 0: no payment step, orders are final.
    #[serde(default)]
    pub payment_window_secs: u32,
    /// Units held by orders awaiting payment (part of `sold`; back in `remaining` if unpaid).
    #[serde(default)]
    pub awaiting_payment: u64,
    /// Units paid for.
    #[serde(default)]
    pub paid: u64,
    /// The sale's waiting room; left out when it has none (buyers purchase directly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_room: Option<WaitingRoom>,
    /// Over how many Redis hash tags the distributed gate splits the stock (1: one).
    #[serde(default = "one_shard")]
    pub stock_shards: u16,
}

fn one_shard() -> u16 {
    1
}

/// In which order a waiting room admits its tickets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    /// Arrival order, from the first join.
    Fifo,
    /// Tickets taken before the start are put in a random order at the start; later ones
    /// queue behind them in arrival order.
    RandomAtStart,
}

impl QueueMode {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueMode::Fifo => "fifo",
            QueueMode::RandomAtStart => "random_at_start",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "fifo" => Some(QueueMode::Fifo),
            "random_at_start" => Some(QueueMode::RandomAtStart),
            _ => None,
        }
    }
}

/// A sale's waiting room: buyers join a queue and may purchase once admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingRoom {
    /// Tickets admitted per second from the start.
    pub admit_per_sec: u32,
    pub mode: QueueMode,
    /// A ticket not polled for this long expires; its slot goes to the next ticket.
    pub ticket_ttl_secs: u32,
}

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    Waiting,
    /// May purchase, with `admission_token` as `X-Admission-Token`.
    Admitted,
    /// Nothing left to admit to.
    SoldOut,
    /// Not polled within the sale's `ticket_ttl_secs`; join again for a new ticket.
    Expired,
}

impl TicketState {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketState::Waiting => "waiting",
            TicketState::Admitted => "admitted",
            TicketState::SoldOut => "sold_out",
            TicketState::Expired => "expired",
        }
    }
}

/// A ticket in a sale's waiting room: `POST /api/sales/{id}/queue`,
/// `GET /api/sales/{id}/queue/{ticket}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketView {
    /// Opaque: poll with it.
    pub ticket: String,
    pub state: TicketState,
    /// Tickets still to be admitted before this one; `null` before the start of a
    /// `random_at_start` queue, where no ticket has a place yet.
    pub ahead: Option<u64>,
    /// Seconds until admission, estimated.
    pub eta_secs: Option<u64>,
    /// When to poll next, jittered so a crowd does not poll in step.
    pub poll_after_ms: u64,
    /// When admitted: send it as `X-Admission-Token` with the purchase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_token: Option<String>,
    /// The ticket's place in the queue (1 is first), once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<u64>,
    /// Once admitted: when the queue's front reached this ticket, in unix milliseconds. What the
    /// rate allowed, not when the buyer happened to poll; the same on every poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at_ms: Option<i64>,
}

/// Every sale: `GET /api/sales`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleList {
    pub sales: Vec<SaleView>,
    /// While more sales follow: `?after=` this for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
}

/// Where an order stands in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// The purchase's answer: the order is durable (or, distributed, acknowledged by the log).
    Confirmed,
    /// The order as read back from the order store.
    Stored,
}

/// A purchase the engine has made durable: `POST /api/sales/{id}/purchase` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// A UUID.
    pub order_id: String,
    pub sale_id: i64,
    pub user_id: String,
    /// This buyer's n-th unit of this sale, from 1 to the per-user limit.
    pub seq: u32,
    /// Always [`OrderStatus::Confirmed`].
    pub status: OrderStatus,
    pub created_at: String,
    /// Units left right after this purchase.
    pub remaining: u64,
    /// `confirmed`, or `awaiting_payment` on a sale with a payment window.
    pub state: OrderState,
    /// When awaiting payment: the deadline, after which the unit goes back on sale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay_by: Option<String>,
}

/// How the buyer's page offers payment: `GET /api/payments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentsConfig {
    /// `test`: the engine's built-in test provider (`POST /api/orders/{id}/test-payment`);
    /// `none`: a provider outside the engine.
    pub provider: String,
    /// The shop's payment page, `{order_id}` to fill in; `null`: none.
    pub payment_url: Option<String>,
}

/// One order: `GET /api/orders/{order_id}`, `POST /api/orders/{order_id}/cancel`, and the
/// payment webhook's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDetail {
    /// A UUID.
    pub order_id: String,
    pub sale_id: i64,
    pub user_id: String,
    pub seq: u32,
    pub state: OrderState,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<String>,
    /// The payment provider's id of the payment that settled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
}

/// One stored order of a buyer, inside [`BuyerOrders`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    /// A UUID.
    pub order_id: String,
    /// This buyer's n-th unit of this sale.
    pub seq: u32,
    /// Always [`OrderStatus::Stored`].
    pub status: OrderStatus,
    pub created_at: String,
    /// Where the order stands (as the store has it).
    #[serde(default = "confirmed")]
    pub state: OrderState,
}

fn confirmed() -> OrderState {
    OrderState::Confirmed
}

/// A buyer's stored orders in one sale: `GET /api/sales/{id}/orders/{user}` (404 when none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuyerOrders {
    pub sale_id: i64,
    pub user_id: String,
    /// Always [`OrderStatus::Confirmed`].
    pub status: OrderStatus,
    /// At least one.
    pub orders: Vec<OrderView>,
}

/// The auditor's verdict on one sale: `GET /api/sales/{id}/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    pub sale_id: i64,
    pub stock: u64,
    /// Units the gate can still hand out.
    pub remaining: u64,
    /// Units the gate has handed out (`stock - remaining`).
    pub sold: u64,
    /// Stored orders that hold a unit (confirmed, awaiting payment or paid).
    pub stored: u64,
    /// Units reserved at the gate whose orders are not confirmed yet.
    pub open_reservations: u64,
    /// Orders stored more than once.
    pub duplicates: u64,
    /// Orders the store kept apart because another order held their `(sale, user, seq)`.
    pub conflicts: u64,
    /// Buyers holding more units than the per-user limit.
    pub over_limit: u64,
    /// Stored orders awaiting payment (part of `stored`).
    #[serde(default)]
    pub awaiting_payment: u64,
    /// Stored orders paid (part of `stored`).
    #[serde(default)]
    pub paid: u64,
    /// Orders whose hold expired unpaid: their units are back in `remaining`.
    #[serde(default)]
    pub expired: u64,
    /// Orders their buyer cancelled: their units are back in `remaining`.
    #[serde(default)]
    pub cancelled: u64,
    /// Payments refused because their order's hold had closed, kept for refunds.
    #[serde(default)]
    pub late_payments: u64,
    /// `remaining + stored + conflicts + open_reservations == stock`, and no duplicate,
    /// conflict or buyer over the limit.
    pub consistent: bool,
}

/// Every error answer, whatever the route: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, inside [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable and machine-readable (`sold_out`, `already_purchased`, `not_started`, ...); each
    /// code comes with one HTTP status.
    pub code: String,
    /// For people; its wording may change.
    pub message: String,
}

/// A purchase token for `X-Purchase-Token`: `GET /api/sales/{id}/token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseTokenView {
    /// Opaque: send it as is.
    pub token: String,
    pub sale_id: i64,
    /// The buyer it is bound to.
    pub user_id: String,
    /// The token is refused from then on.
    pub expires_at: String,
}

/// The classic API's stock count of the demo sale: `GET /seckill/getCount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicCount {
    /// Units left in the demo sale.
    pub num: u64,
}

/// The classic API's purchase answer: `POST /seckill/seckill`, 200 whether it sold or not.
/// On success `ok` is true and `order_id`, `user_id`, `remaining` are set; on a refusal `ok`
/// is false and `code` says why. Fields that do not apply are left out, not `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicPurchase {
    /// The classic API's message for people: `购买成功，还剩下N个` (bought, N left), `抢完了`
    /// (sold out), `活动还没开始` (not started), `活动已结束` (ended), `你已经买过了` (already bought).
    pub messages: String,
    pub ok: bool,
    /// Why the purchase was refused: `sold_out`, `not_started`, `ended` or `already_purchased`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The buyer: a fresh anonymous id per call, or the buyer the request named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Units left right after this purchase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// On success: `confirmed`, or `awaiting_payment` on a sale with a payment window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<OrderState>,
    /// When awaiting payment: the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay_by: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    /// Reads `body` (an answer the engine really sent) into `T`, and checks that writing it
    /// back gives the same JSON: same fields, `null` where the engine sends `null`, absent
    /// where it leaves a field out.
    fn read<T: DeserializeOwned + Serialize>(body: &str) -> T {
        let parsed: T = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let original: Value = serde_json::from_str(body).expect("valid JSON");
        let written = serde_json::to_value(&parsed).expect("serializes");
        assert_eq!(written, original, "written back differently");
        parsed
    }

    // Bodies copied from a run of `seckill serve` answering curl.

    #[test]
    fn sale_views_read_with_and_without_a_window() {
        let windowed: SaleView = read(
            r#"{"id":2,"name":"Windowed","stock":5,"remaining":5,"sold":0,"per_user_limit":2,"starts_at":"2020-01-01T00:00:00.000Z","ends_at":"2099-01-01T00:00:00.000Z","status":"live","demo":false,"server_time":"2026-11-25T09:57:33.551Z","payment_window_secs":0,"awaiting_payment":0,"paid":0,"stock_shards":1}"#,
        );
        assert_eq!(windowed.status, SaleStatus::Live);
        assert_eq!(windowed.ends_at.as_deref(), Some("2099-01-01T00:00:00.000Z"));
        let later: SaleView = read(
            r#"{"id":3,"name":"Later","stock":3,"remaining":3,"sold":0,"per_user_limit":1,"starts_at":"2099-01-01T00:00:00.000Z","ends_at":null,"status":"upcoming","demo":false,"server_time":"2026-11-25T09:57:33.538Z","payment_window_secs":0,"awaiting_payment":0,"paid":0,"stock_shards":1}"#,
        );
        assert_eq!((later.status, later.ends_at), (SaleStatus::Upcoming, None));
    }

    #[test]
    fn the_sale_list_reads() {
        let list: SaleList = read(
            r#"{"sales":[{"demo":true,"ends_at":null,"id":1,"name":"第一个商品 (demo item)","per_user_limit":1,"remaining":0,"server_time":"2026-11-25T09:57:33.706Z","sold":2,"starts_at":null,"status":"sold_out","stock":2,"payment_window_secs":0,"awaiting_payment":0,"paid":0,"stock_shards":1},{"demo":false,"ends_at":"2099-01-01T00:00:00.000Z","id":2,"name":"Windowed","per_user_limit":2,"remaining":3,"server_time":"2026-11-25T09:57:33.706Z","sold":2,"starts_at":"2020-01-01T00:00:00.000Z","status":"live","stock":5,"payment_window_secs":0,"awaiting_payment":0,"paid":0,"stock_shards":1}]}"#,
        );
        assert_eq!(list.sales.len(), 2);
        assert!(list.sales[0].demo);
        assert_eq!(list.sales[0].status, SaleStatus::SoldOut);
    }

    #[test]
    fn a_confirmation_reads() {
        let c: Confirmation = read(
            r#"{"order_id":"01a21223-9cff-778a-b14b-75bc435bd388","sale_id":2,"user_id":"alice","seq":1,"status":"confirmed","created_at":"2026-11-25T09:57:33.567Z","remaining":4,"state":"confirmed"}"#,
        );
        assert_eq!((c.seq, c.status, c.remaining), (1, OrderStatus::Confirmed, 4));
    }

    #[test]
    fn a_buyers_orders_read() {
        let orders: BuyerOrders = read(
            r#"{"orders":[{"created_at":"2026-11-25T09:57:33.567Z","order_id":"01a21223-9cff-778a-b14b-75bc435bd388","seq":1,"status":"stored","state":"confirmed"},{"created_at":"2026-11-25T09:57:33.586Z","order_id":"01a21223-9d12-7391-a38b-8ae72de82422","seq":2,"status":"stored","state":"paid"}],"sale_id":2,"status":"confirmed","user_id":"alice"}"#,
        );
        assert_eq!(orders.status, OrderStatus::Confirmed);
        assert_eq!(orders.orders.len(), 2);
        assert_eq!(orders.orders[1].status, OrderStatus::Stored);
        assert_eq!(orders.orders[1].state, OrderState::Paid);
    }

    #[test]
    fn an_audit_reads() {
        let audit: Audit = read(
            r#"{"sale_id":2,"stock":5,"remaining":3,"sold":2,"stored":2,"open_reservations":0,"duplicates":0,"conflicts":0,"over_limit":0,"consistent":true,"awaiting_payment":0,"paid":0,"expired":0,"cancelled":0,"late_payments":0}"#,
        );
        assert_eq!((audit.sold, audit.stored, audit.consistent), (2, 2, true));
    }

    #[test]
    fn error_bodies_read() {
        for (body, code) in [
            (r#"{"error":{"code":"sold_out","message":"sold out"}}"#, "sold_out"),
            (
                r#"{"error":{"code":"already_purchased","message":"this buyer has reached the per-user limit for this sale"}}"#,
                "already_purchased",
            ),
            (
                r#"{"error":{"code":"sale_not_found","message":"no such sale"}}"#,
                "sale_not_found",
            ),
            (
                r#"{"error":{"code":"missing_user_id","message":"the X-User-Id header is required"}}"#,
                "missing_user_id",
            ),
        ] {
            assert_eq!(read::<ErrorBody>(body).error.code, code);
        }
    }

    #[test]
    fn tickets_read() {
        let waiting: TicketView = read(
            r#"{"ticket":"0f3c9a2b5d7e4f61a8b9c0d1e2f30415","state":"waiting","ahead":null,"eta_secs":3,"poll_after_ms":800}"#,
        );
        assert_eq!((waiting.state, waiting.ahead), (TicketState::Waiting, None));
        let admitted: TicketView = read(
            r#"{"ticket":"0f3c9a2b5d7e4f61a8b9c0d1e2f30415","state":"admitted","ahead":0,"eta_secs":0,"poll_after_ms":5000,"admission_token":"1795600683678.KBQHY6dHBQwNB8iKtlWI3t_eu70V7l0SxEuH9F_-8Fs"}"#,
        );
        assert!(admitted.admission_token.is_some());
        let room: WaitingRoom = read(r#"{"admit_per_sec":50,"mode":"random_at_start","ticket_ttl_secs":30}"#);
        assert_eq!(room.mode, QueueMode::RandomAtStart);
    }

    #[test]
    fn a_purchase_token_reads() {
        let token: PurchaseTokenView = read(
            r#"{"expires_at":"2026-11-25T09:58:03.678Z","sale_id":2,"token":"1795600683678.KBQHY6dHBQwNB8iKtlWI3t_eu70V7l0SxEuH9F_-8Fs","user_id":"bob"}"#,
        );
        assert_eq!(token.user_id, "bob");
        assert!(token.token.starts_with("1795600683678."));
    }

    #[test]
    fn the_classic_answers_read() {
        assert_eq!(read::<ClassicCount>(r#"{"num":2}"#).num, 2);
        let anonymous: ClassicPurchase = read(
            r#"{"messages":"购买成功，还剩下1个","ok":true,"order_id":"01a21223-9c6b-70b6-9eca-08c72433b5d9","remaining":1,"user_id":"anon-27a4468dfc5b40ac-1"}"#,
        );
        assert!(anonymous.ok);
        assert_eq!((anonymous.remaining, anonymous.code), (Some(1), None));
        let named: ClassicPurchase = read(
            r#"{"messages":"购买成功，还剩下0个","ok":true,"order_id":"01a21223-9c9e-73f6-8446-8708e58908ae","remaining":0,"user_id":"carol"}"#,
        );
        assert_eq!(named.user_id.as_deref(), Some("carol"));
        let sold_out: ClassicPurchase = read(r#"{"messages":"抢完了","ok":false,"code":"sold_out"}"#);
        assert!(!sold_out.ok);
        assert_eq!(sold_out.code.as_deref(), Some("sold_out"));
        assert_eq!((sold_out.order_id, sold_out.remaining), (None, None));
    }

    #[test]
    fn fields_a_type_does_not_know_are_ignored() {
        let count: ClassicCount = serde_json::from_str(r#"{"num":2,"added_later":true}"#).expect("reads");
        assert_eq!(count.num, 2);
    }
}
