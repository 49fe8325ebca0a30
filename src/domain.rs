//! Domain types, parsed once at the edge so that nothing behind the HTTP layer re-validates.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch: the one time unit the engine uses inside.
pub type Millis = i64;

/// The current wall-clock time in milliseconds.
pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

/// Formats milliseconds as RFC 3339 (UTC, millisecond precision) for JSON answers.
pub fn format_millis(ms: Millis) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// A key for a process-local secret: two v4 UUIDs' bytes (244 random bits from the OS's
/// generator), so no client can guess it.
pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key
}

/// Identifies a sale. Positive, assigned by the order store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SaleId(pub i64);

impl SaleId {
    /// `None` for anything but a positive integer: such a sale cannot exist.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.parse::<i64>() {
            Ok(id) if id > 0 => Some(SaleId(id)),
            _ => None,
        }
    }
}

impl fmt::Display for SaleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a buyer id was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("no buyer id")]
    Missing,
    #[error("a buyer id is 1 to 64 characters of A-Z a-z 0-9 _ - . : @")]
    Invalid,
}

/// A buyer's identity: 1 to 64 characters of `[A-Za-z0-9_.:@-]`.
///
/// Shared (`Arc<str>`) because the gate's buyer set and the order both hold it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl UserId {
    pub const MAX_LEN: usize = 64;
    /// Ids the engine gives the classic API's anonymous buyers start so. No client may name
    /// itself so: it would share, or lock out, an anonymous buyer's purchases.
    pub const ANONYMOUS_PREFIX: &'static str = "anon-";

    pub fn parse(raw: &str) -> Result<Self, UserIdError> {
        if raw.is_empty() {
            return Err(UserIdError::Missing);
        }
        let valid_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@');
        if raw.len() > Self::MAX_LEN || !raw.bytes().all(valid_char) {
            return Err(UserIdError::Invalid);
        }
        Ok(UserId(Arc::from(raw)))
    }

    /// Wraps an id the engine made itself or read back from its own store.
    pub(crate) fn trusted(id: String) -> Self {
        UserId(Arc::from(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The largest stock one sale may hold; far above any flash sale, far below any overflow.
pub const MAX_STOCK: u64 = 1_000_000_000;
/// The largest per-user limit.
pub const MAX_PER_USER_LIMIT: u32 = 1_000;
const MAX_NAME_LEN: usize = 200;

/// What an admin sends to create a sale (`POST /api/sales`), before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSaleRequest {
    pub name: String,
    pub stock: i64,
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub per_user_limit: Option<i64>,
    /// Seconds a buyer has to pay for a unit they won; 0: no payment step. Absent: the
    /// engine's default (`--payment-window-secs`).
    #[serde(default)]
    pub payment_window_secs: Option<i64>,
    /// Absent: no waiting room, buyers purchase directly.
    #[serde(default)]
    pub waiting_room: Option<WaitingRoomRequest>,
    /// Over how many Redis hash tags (cluster shards) the distributed gate splits the stock.
    /// Absent: 1.
    #[serde(default)]
    pub stock_shards: Option<i64>,
}

/// A sale's waiting room as an admin asks for it, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitingRoomRequest {
    pub admit_per_sec: i64,
    pub mode: QueueMode,
    pub ticket_ttl_secs: i64,
}

pub use seckill_api::{QueueMode, WaitingRoom as WaitingRoomSpec};

/// The most tickets a waiting room admits per second.
pub const MAX_ADMIT_PER_SEC: u32 = 1_000_000;
/// The bounds of a ticket's time to live: long enough for a poll to arrive, short enough that
/// an abandoned ticket frees its place soon.
pub const TICKET_TTL_SECS: std::ops::RangeInclusive<u32> = 5..=3600;

/// A waiting room from the store's three columns (all NULL: none). Values were validated on
/// the way in; ones that no longer read are a fault of ours, named by the error.
pub fn waiting_room_from(
    admit_per_sec: Option<i64>,
    mode: Option<String>,
    ticket_ttl_secs: Option<i64>,
) -> Result<Option<WaitingRoomSpec>, &'static str> {
    let (Some(admit_per_sec), Some(mode), Some(ticket_ttl_secs)) = (admit_per_sec, mode, ticket_ttl_secs) else {
        return Ok(None);
    };
    Ok(Some(WaitingRoomSpec {
        admit_per_sec: u32::try_from(admit_per_sec).map_err(|_| "queue_admit_per_sec out of range")?,
        mode: QueueMode::parse(&mode).ok_or("queue_mode is not a queue mode")?,
        ticket_ttl_secs: u32::try_from(ticket_ttl_secs).map_err(|_| "queue_ticket_ttl_secs out of range")?,
    }))
}

impl WaitingRoomRequest {
    fn parse(self) -> Result<WaitingRoomSpec, InvalidSale> {
        if !(1..=i64::from(MAX_ADMIT_PER_SEC)).contains(&self.admit_per_sec) {
            return Err(InvalidSale(format!(
                "waiting_room.admit_per_sec must be between 1 and {MAX_ADMIT_PER_SEC}"
            )));
        }
        let (low, high) = (*TICKET_TTL_SECS.start(), *TICKET_TTL_SECS.end());
        if !(i64::from(low)..=i64::from(high)).contains(&self.ticket_ttl_secs) {
            return Err(InvalidSale(format!(
                "waiting_room.ticket_ttl_secs must be between {low} and {high}"
            )));
        }
        Ok(WaitingRoomSpec {
            admit_per_sec: self.admit_per_sec as u32,
            mode: self.mode,
            ticket_ttl_secs: self.ticket_ttl_secs as u32,
        })
    }
}

/// Why a sale cannot be created as asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSale(pub String);

/// What a sale is: everything an admin decides when creating it. Validated once, here.
#[derive(Clone, Debug, PartialEq)]
pub struct SaleSpec {
    pub name: String,
    pub stock: u64,
    pub starts_at: Option<Millis>,
    pub ends_at: Option<Millis>,
    pub per_user_limit: u32,
    /// The demo sale is the one the classic `/seckill/*` API sells.
    pub demo: bool,
    /// Seconds a winner has to pay before the unit goes back on sale; 0: orders are final.
    pub payment_window_secs: u32,
    /// `Some`: buyers queue and purchase only once admitted.
    pub waiting_room: Option<WaitingRoomSpec>,
    /// Over how many hash tags the distributed gate splits the stock, so one hot sale is served
    /// by several Redis Cluster shards (1: one tag; the embedded gate has one counter whatever
    /// this says).
    pub stock_shards: u16,
}

/// The most hash tags one sale's stock may be split over.
pub const MAX_STOCK_SHARDS: u16 = 16;

/// The longest payment window a sale may have.
pub const MAX_PAYMENT_WINDOW_SECS: u32 = 7 * 24 * 3600;

impl SaleSpec {
    /// Validates an admin's request; `default_payment_window_secs` applies when it names none.
    pub fn parse(req: NewSaleRequest, default_payment_window_secs: u32) -> Result<Self, InvalidSale> {
        let name = req.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
            return Err(InvalidSale(format!("name must be 1 to {MAX_NAME_LEN} characters")));
        }
        if req.stock < 0 || req.stock as u64 > MAX_STOCK {
            return Err(InvalidSale(format!("stock must be between 0 and {MAX_STOCK}")));
        }
        let per_user_limit = req.per_user_limit.unwrap_or(1);
        if !(1..=MAX_PER_USER_LIMIT as i64).contains(&per_user_limit) {
            return Err(InvalidSale(format!(
                "per_user_limit must be between 1 and {MAX_PER_USER_LIMIT}"
            )));
        }
        let starts_at = req.starts_at.map(|t| t.timestamp_millis());
        let ends_at = req.ends_at.map(|t| t.timestamp_millis());
        // Every clock here counts unix milliseconds from 1970 (queues, holds, tokens, stores): a
        // time before it would give a buyer a negative admission time.
        if starts_at.is_some_and(|t| t < 0) || ends_at.is_some_and(|t| t < 0) {
            return Err(InvalidSale("starts_at and ends_at must be after 1970-01-01".into()));
        }
        if let (Some(s), Some(e)) = (starts_at, ends_at) {
            if e <= s {
                return Err(InvalidSale("ends_at must be after starts_at".into()));
            }
        }
        let payment_window_secs = req
            .payment_window_secs
            .unwrap_or(i64::from(default_payment_window_secs));
        if !(0..=i64::from(MAX_PAYMENT_WINDOW_SECS)).contains(&payment_window_secs) {
            return Err(InvalidSale(format!(
                "payment_window_secs must be between 0 and {MAX_PAYMENT_WINDOW_SECS}"
            )));
        }
        let waiting_room = req.waiting_room.map(WaitingRoomRequest::parse).transpose()?;
        let stock_shards = req.stock_shards.unwrap_or(1);
        if !(1..=i64::from(MAX_STOCK_SHARDS)).contains(&stock_shards) {
            return Err(InvalidSale(format!(
                "stock_shards must be between 1 and {MAX_STOCK_SHARDS}"
            )));
        }
        Ok(SaleSpec {
            name: name.to_owned(),
            stock: req.stock as u64,
            starts_at,
            ends_at,
            per_user_limit: per_user_limit as u32,
            demo: false,
            payment_window_secs: payment_window_secs as u32,
            waiting_room,
            stock_shards: stock_shards as u16,
        })
    }

    /// When a unit won at `now` must be paid for, if this sale has a payment step.
    pub fn pay_by(&self, now: Millis) -> Option<Millis> {
        (self.payment_window_secs > 0).then(|| now + i64::from(self.payment_window_secs) * 1000)
    }

    /// Whether the sale window is closed at `now`, as the refusal a buyer gets.
    pub fn window_refusal(&self, now: Millis) -> Option<Refusal> {
        if self.starts_at.is_some_and(|s| now < s) {
            Some(Refusal::NotStarted)
        } else if self.ends_at.is_some_and(|e| now >= e) {
            Some(Refusal::Ended)
        } else {
            None
        }
    }

    pub fn status(&self, remaining: u64, now: Millis) -> SaleStatus {
        match self.window_refusal(now) {
            Some(Refusal::NotStarted) => SaleStatus::Upcoming,
            Some(_) => SaleStatus::Ended,
            None if remaining == 0 => SaleStatus::SoldOut,
            None => SaleStatus::Live,
        }
    }
}

/// A sale as the store keeps it: its spec, and what the store gave it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sale {
    pub id: SaleId,
    pub spec: SaleSpec,
    pub created_at: Millis,
}

/// Why the gate refused a purchase: the buyer's answer, not a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    UnknownSale,
    NotStarted,
    Ended,
    SoldOut,
    /// The buyer already holds the per-user limit.
    LimitReached,
}

pub use seckill_api::SaleStatus;

/// What one buyer holds in one sale: what the gate is rebuilt from.
///
/// `held` counts the units the buyer holds now (checked against the per-user limit);
/// `last_seq` is the highest unit number ever handed to them. The two differ once a unit goes
/// back to the sale: `held` goes down, `last_seq` never does, so a `seq` is never reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holding {
    pub user: UserId,
    pub held: u32,
    pub last_seq: u32,
}

/// What a sale's gate is rebuilt from (on start-up, or when a gate lost it): who holds units,
/// the orders still awaiting payment, and how many are paid.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GateState {
    pub holders: Vec<Holding>,
    pub open_holds: Vec<Order>,
    pub paid: u64,
}

/// Where an order stands (the API's own type: it is what buyers read).
pub use seckill_api::OrderState;

/// A payment that settled an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// The provider's id: the same payment delivered twice is one payment.
    pub id: String,
    pub at: Millis,
}

/// An order. `seq` numbers the buyer's reservations in this sale (1, 2, ...) and is never handed
/// out twice, so `(sale_id, user_id, seq)` is unique and a redelivered order can never count
/// twice.
#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    pub order_id: uuid::Uuid,
    pub sale_id: SaleId,
    pub user_id: UserId,
    pub seq: u32,
    pub created_at: Millis,
    pub state: OrderState,
    /// The payment deadline of an order awaiting payment.
    pub pay_by: Option<Millis>,
    /// Set once paid.
    pub payment: Option<Payment>,
}

/// A new order id: a UUIDv7 (time-ordered, so a batch of them appends to a B-tree index) whose
/// low 32 bits carry the sale id, so any instance finds an order's sale from its id alone,
/// without a lookup. The v7 counter and random bits above keep ids unique.
pub fn new_order_id(sale: SaleId) -> uuid::Uuid {
    let mut bytes = *uuid::Uuid::now_v7().as_bytes();
    bytes[12..].copy_from_slice(&(sale.0 as u32).to_be_bytes());
    uuid::Uuid::from_bytes(bytes)
}

/// The sale an order id names (see [`new_order_id`]); a hint to verify, never a proof.
pub fn sale_of_order(order_id: &uuid::Uuid) -> SaleId {
    let b = order_id.as_bytes();
    SaleId(i64::from(u32::from_be_bytes([b[12], b[13], b[14], b[15]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_accepts_the_allowed_alphabet() {
        assert_eq!(
            UserId::parse("alice-01_x.y:z@corp").unwrap().as_str(),
            "alice-01_x.y:z@corp"
        );
        assert!(UserId::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn user_id_refuses_empty_long_and_foreign_characters() {
        assert_eq!(UserId::parse(""), Err(UserIdError::Missing));
        assert_eq!(UserId::parse(&"a".repeat(65)), Err(UserIdError::Invalid));
        for bad in ["a b", "ä", "a/b", "a\u{0}", "用户", "a\"b"] {
            assert_eq!(UserId::parse(bad), Err(UserIdError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn sale_id_is_a_positive_integer() {
        assert_eq!(SaleId::parse("7"), Some(SaleId(7)));
        for bad in ["0", "-1", "x", "", "99999999999999999999"] {
            assert_eq!(SaleId::parse(bad), None, "{bad:?}");
        }
    }

    fn request(stock: i64, limit: Option<i64>) -> NewSaleRequest {
        NewSaleRequest {
            name: "phone".into(),
            stock,
            starts_at: None,
            ends_at: None,
            per_user_limit: limit,
            payment_window_secs: None,
            waiting_room: None,
            stock_shards: None,
        }
    }

    #[test]
    fn order_ids_carry_their_sale_and_never_repeat() {
        let ids: std::collections::HashSet<uuid::Uuid> = (0..200_000).map(|_| new_order_id(SaleId(77))).collect();
        assert_eq!(ids.len(), 200_000);
        assert!(ids
            .iter()
            .all(|id| sale_of_order(id) == SaleId(77) && id.get_version_num() == 7));
        let (a, b) = (new_order_id(SaleId(1)), new_order_id(SaleId(1)));
        assert!(a < b, "time-ordered");
    }

    #[test]
    fn a_payment_window_is_bounded_and_defaults_from_the_engine() {
        let mut req = request(1, None);
        assert_eq!(SaleSpec::parse(req, 900).unwrap().payment_window_secs, 900);
        req = request(1, None);
        req.payment_window_secs = Some(0);
        assert_eq!(SaleSpec::parse(req, 900).unwrap().pay_by(5), None);
        req = request(1, None);
        req.payment_window_secs = Some(60);
        assert_eq!(SaleSpec::parse(req, 0).unwrap().pay_by(5), Some(60_005));
        for bad in [-1, i64::from(MAX_PAYMENT_WINDOW_SECS) + 1] {
            let mut req = request(1, None);
            req.payment_window_secs = Some(bad);
            assert!(SaleSpec::parse(req, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn sale_spec_validates_stock_limit_and_window() {
        assert_eq!(SaleSpec::parse(request(10, None), 0).unwrap().per_user_limit, 1);
        assert!(SaleSpec::parse(request(-1, None), 0).is_err());
        assert!(SaleSpec::parse(request(MAX_STOCK as i64 + 1, None), 0).is_err());
        assert!(SaleSpec::parse(request(1, Some(0)), 0).is_err());
        let mut backwards = request(1, None);
        backwards.starts_at = Some(Utc::now());
        backwards.ends_at = Some(Utc::now() - chrono::Duration::seconds(1));
        assert!(SaleSpec::parse(backwards, 0).is_err());
        let before_1970 = DateTime::<Utc>::from_timestamp_millis(-1).expect("a time");
        let mut early = request(1, None);
        early.starts_at = Some(before_1970);
        assert!(SaleSpec::parse(early, 0).is_err());
        let mut early_end = request(1, None);
        early_end.ends_at = Some(before_1970);
        assert!(SaleSpec::parse(early_end, 0).is_err());
        let mut at_1970 = request(1, None);
        at_1970.starts_at = DateTime::<Utc>::from_timestamp_millis(0);
        assert!(SaleSpec::parse(at_1970, 0).is_ok());
    }

    #[test]
    fn stock_shards_default_to_one_and_are_bounded() {
        assert_eq!(SaleSpec::parse(request(10, None), 0).unwrap().stock_shards, 1);
        let mut three = request(10, None);
        three.stock_shards = Some(3);
        assert_eq!(SaleSpec::parse(three, 0).unwrap().stock_shards, 3);
        for bad in [0, -1, i64::from(MAX_STOCK_SHARDS) + 1] {
            let mut req = request(10, None);
            req.stock_shards = Some(bad);
            assert!(SaleSpec::parse(req, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_follows_window_then_stock() {
        let rules = SaleSpec {
            name: "phone".into(),
            stock: 5,
            starts_at: Some(100),
            ends_at: Some(200),
            per_user_limit: 1,
            demo: false,
            payment_window_secs: 0,
            waiting_room: None,
            stock_shards: 1,
        };
        assert_eq!(rules.status(5, 99), SaleStatus::Upcoming);
        assert_eq!(rules.status(5, 100), SaleStatus::Live);
        assert_eq!(rules.status(0, 150), SaleStatus::SoldOut);
        assert_eq!(rules.status(5, 200), SaleStatus::Ended);
    }
}
