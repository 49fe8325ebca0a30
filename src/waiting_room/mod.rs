//! The waiting room: a fair queue in front of a sale that has one.
//!
//! A buyer joins (`POST /api/sales/{id}/queue`) and gets a ticket; polling the ticket says how
//! many are ahead and, once its turn comes, admits it with a short-lived admission token that the
//! purchase must carry. Admission is arithmetic on counters, never a scan of the queue:
//!
//! - each ticket has a place (1, 2, ...): in `fifo` its arrival number; in `random_at_start` the
//!   tickets taken before the start are put in a random order at the start (ordered by an HMAC
//!   of the ticket under a key no client knows), and later joiners queue behind them in arrival
//!   order;
//! - from the sale's start, the front of the queue is `admit_per_sec × elapsed + burst`, plus one
//!   for each ticket that expired before it was ever told it was admitted: an abandoned ticket
//!   gives its slot to the next one, so abandonment never slows the queue;
//! - a ticket whose place is at or before the front is admitted.
//!
//! Whether stock remains is the gate's answer, asked by the HTTP layer: a sold-out sale answers
//! `sold_out` to every ticket without asking the room.
//!
//! Two backends implement [`WaitingRoom`], chosen once in [`crate::startup`]: [`MemoryWaitingRoom`]
//! (embedded; the queue lives in the process) and `RedisWaitingRoom` (distributed; one Lua script
//! call per group of a sale's concurrent joins and polls, every instance sharing the queue).

use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::backend::BackendError;
use crate::domain::{Millis, QueueMode, Sale, SaleId, UserId, WaitingRoomSpec};

pub mod memory;
#[cfg(feature = "distributed")]
pub mod redis;

pub use memory::MemoryWaitingRoom;
#[cfg(feature = "distributed")]
pub use redis::RedisWaitingRoom;

/// Where a ticket stands, as the room sees it (sold out is the gate's to say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// `ahead`: tickets still to be admitted before this one; `None` while a `random_at_start`
    /// queue has not started (no ticket has a place yet).
    Waiting {
        ahead: Option<u64>,
        eta_ms: Millis,
    },
    Admitted,
    /// Not polled within the sale's ticket time to live.
    Expired,
}

/// A ticket and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub ticket: String,
    pub standing: Standing,
    /// Its place in the queue (1 is first); `None` until it has one.
    pub place: Option<u64>,
    /// Once admitted: when the front reached it ([`reached_at`]), fixed at its first admission.
    pub admitted_at: Option<Millis>,
}

/// What `/metrics` shows of one sale's room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Tickets waiting: joined, neither admitted nor expired.
    pub waiting: u64,
    /// Tickets told they were admitted.
    pub admitted: u64,
    /// Tickets that expired before they were admitted.
    pub expired: u64,
}

/// Why the room could not answer.
#[derive(Debug, thiserror::Error)]
pub enum WaitingRoomError {
    /// No ticket by this id in this sale for this buyer.
    #[error("no such ticket")]
    TicketNotFound,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// One sale's queue, shared by every instance that serves the sale.
pub trait WaitingRoom: Send + Sync + 'static {
    /// The buyer's ticket: a new one at the back, or the one they hold unless it expired.
    fn join<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        now: Millis,
    ) -> BoxFuture<'a, Result<Place, WaitingRoomError>>;

    /// Where the buyer's ticket stands now; a poll keeps it alive.
    fn poll<'a>(
        &'a self,
        sale: &'a Sale,
        ticket: &'a str,
        user: &'a UserId,
        now: Millis,
    ) -> BoxFuture<'a, Result<Place, WaitingRoomError>>;

    /// Expires the tickets nobody polled within the time to live, so their slots go to the next
    /// tickets even if nobody polls them again. Background work, not a buyer's request.
    fn sweep<'a>(&'a self, sale: &'a Sale, now: Millis) -> BoxFuture<'a, Result<(), BackendError>>;

    /// The sale's counters, for `/metrics`; `None` when nobody ever joined.
    fn stats(&self, sale: SaleId) -> BoxFuture<'_, Result<Option<QueueStats>, BackendError>>;

    /// Lets the queue of a sale that can admit nobody any more (it ended, or sold out for good,
    /// at `done_at`) go once every ticket's time to live has passed since, so the state of past
    /// sales does not pile up. Embedded: drops it then (`true` once dropped); distributed: sets
    /// the queue's keys to expire then (`true` once set). Call again until it answers `true`.
    fn retire<'a>(&'a self, sale: &'a Sale, done_at: Millis, now: Millis) -> BoxFuture<'a, Result<bool, BackendError>>;

    /// Writes what was answered but not yet written (the distributed room's quick joins before
    /// a start), for a graceful shutdown; gives up after `within`.
    fn flush(&self, _within: std::time::Duration) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// When a finished sale's queue may go: a ticket time to live after `done_at`.
pub fn retire_at(sale: &Sale, done_at: Millis) -> Millis {
    let ttl_ms = sale
        .spec
        .waiting_room
        .map_or(0, |w| Millis::from(w.ticket_ttl_secs) * 1000);
    done_at.saturating_add(ttl_ms)
}

/// When admission begins: the sale's start, or its creation for a sale open from creation.
pub fn opens_at(sale: &Sale) -> Millis {
    sale.spec.starts_at.unwrap_or(sale.created_at)
}

/// Tickets admitted at once at the start: a small burst, so the first buyers need not wait for
/// the clock, bounded so a fast room does not let in a crowd at once.
pub fn burst(room: &WaitingRoomSpec) -> u64 {
    u64::from(room.admit_per_sec).clamp(1, 10)
}

/// The last place admitted at `now`, before adding the expired tickets' slots.
pub fn front(room: &WaitingRoomSpec, opens_at: Millis, now: Millis) -> u64 {
    if now < opens_at {
        return 0;
    }
    let elapsed = u64::try_from(now - opens_at).unwrap_or(0);
    (u64::from(room.admit_per_sec).saturating_mul(elapsed) / 1000).saturating_add(burst(room))
}

/// When the front reached `place`, with `expired` slots handed on: the admission time the rate
/// gives the ticket, which a poll may only tell later. Computed from the place, not from the
/// poll that admits, so a client can check the rate against it, and check that nobody was told
/// before this time (when [`standing`] admits, this is never after `now`).
pub fn reached_at(room: &WaitingRoomSpec, place: u64, expired: u64, opens_at: Millis) -> Millis {
    let by_rate = place.saturating_sub(burst(room)).saturating_sub(expired);
    let after_ms = by_rate
        .saturating_mul(1000)
        .div_ceil(u64::from(room.admit_per_sec.max(1)));
    opens_at.saturating_add(Millis::try_from(after_ms).unwrap_or(Millis::MAX))
}

/// Where the ticket at `place` stands, with `front` already including the expired slots.
pub fn standing(room: &WaitingRoomSpec, place: u64, front: u64, opens_at: Millis, now: Millis) -> Standing {
    if now >= opens_at && place <= front {
        return Standing::Admitted;
    }
    let ahead = place.saturating_sub(front).saturating_sub(1);
    // Until the start, the burst is admitted at once; after, one slot per 1/rate seconds.
    let to_start = (opens_at - now).max(0);
    let behind_burst = place.saturating_sub(front.max(if now < opens_at { burst(room) } else { 0 }));
    let eta_ms = to_start + (behind_burst.saturating_mul(1000) / u64::from(room.admit_per_sec.max(1))) as Millis;
    Standing::Waiting {
        ahead: Some(ahead),
        eta_ms,
    }
}

/// Where a ticket taken before the start stands before the start: in `fifo` its arrival is its
/// place; in `random_at_start` it has no place until the start.
pub fn before_start(room: &WaitingRoomSpec, arrival: u64, opens_at: Millis, now: Millis) -> Standing {
    match room.mode {
        QueueMode::Fifo => standing(room, arrival, 0, opens_at, now),
        QueueMode::RandomAtStart => Standing::Waiting {
            ahead: None,
            eta_ms: (opens_at - now).max(0),
        },
    }
}

/// The key that orders an embedded `random_at_start` queue: random per process, never shown, so
/// no client can predict where a ticket will land. (The distributed queue orders its tickets in
/// Redis, by a permutation seeded when it starts.)
pub struct ShuffleKey(Hmac<Sha256>);

impl ShuffleKey {
    pub fn random() -> Self {
        ShuffleKey(hmac_key(&crate::domain::random_key()))
    }

    /// The ticket's rank key: the first 52 bits of its HMAC.
    pub fn rank(&self, ticket: &str) -> u64 {
        (keyed_prefix(&self.0, ticket.as_bytes()) >> 76) as u64
    }
}

/// An HMAC-SHA256 key, what both rooms key their orders and tickets with.
pub(crate) fn hmac_key(key: &[u8]) -> Hmac<Sha256> {
    Hmac::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// The first 128 bits of the HMAC of `data` under `key`, as a number.
pub(crate) fn keyed_prefix(key: &Hmac<Sha256>, data: &[u8]) -> u128 {
    let mut mac = key.clone();
    mac.update(data);
    let tag = mac.finalize().into_bytes();
    let mut first = [0u8; 16];
    first.copy_from_slice(&tag[..16]);
    u128::from_be_bytes(first)
}

/// A new ticket id: 122 random bits, so a ticket cannot be guessed.
pub fn new_ticket() -> String {
    ticket_text(new_ticket_id())
}

/// A new ticket id as a number: what the embedded room keeps (16 bytes, no allocation).
pub(crate) fn new_ticket_id() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

/// A ticket id as buyers see it: 32 lowercase hex digits.
pub(crate) fn ticket_text(id: u128) -> String {
    write_ticket_text(id, &mut [0; 32]).to_owned()
}

/// [`ticket_text`] written into `buf`, where no `String` is needed (the shuffle at the start
/// ranks every pre-start ticket by it).
pub(crate) fn write_ticket_text(id: u128, buf: &mut [u8; 32]) -> &str {
    uuid::Uuid::from_u128(id).simple().encode_lower(buf)
}

/// A ticket's id as a number, if it is written as [`new_ticket`] hands ids out (32 lowercase hex
/// digits); `None` for anything else, which names no ticket of the embedded room and which
/// only Redis answers in the distributed one.
pub(crate) fn ticket_id(ticket: &str) -> Option<u128> {
    let hex = ticket.len() == 32 && ticket.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    hex.then(|| u128::from_str_radix(ticket, 16).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(rate: u32) -> WaitingRoomSpec {
        WaitingRoomSpec {
            admit_per_sec: rate,
            mode: QueueMode::Fifo,
            ticket_ttl_secs: 30,
        }
    }

    #[test]
    fn the_front_moves_at_the_rate_after_a_small_burst() {
        let r = room(10);
        assert_eq!(front(&r, 1_000, 999), 0);
        assert_eq!(front(&r, 1_000, 1_000), 10);
        assert_eq!(front(&r, 1_000, 2_000), 20);
        assert_eq!(front(&room(1), 0, 500), 1);
        assert_eq!(standing(&r, 10, 10, 0, 5), Standing::Admitted);
        // Place 20 is reached when the front is 20: one second after the start.
        assert_eq!(reached_at(&r, 20, 0, 1_000), 2_000);
        assert_eq!(reached_at(&r, 21, 0, 1_000), 2_100);
        assert_eq!(reached_at(&r, 21, 1, 1_000), 2_000);
        assert_eq!(reached_at(&r, 5, 0, 1_000), 1_000, "in the burst");
        // Whenever a place is admitted, it was reached no later than then.
        for rate in [1, 3, 7, 10, 333, 1000] {
            let r = room(rate);
            for now in (1_000..4_000).step_by(7) {
                let front = front(&r, 1_000, now) + 2;
                for place in front.saturating_sub(3)..=front {
                    assert_eq!(standing(&r, place, front, 1_000, now), Standing::Admitted);
                    assert!(
                        reached_at(&r, place, 2, 1_000) <= now,
                        "rate {rate} place {place} at {now}"
                    );
                }
                assert!(
                    reached_at(&r, front + 1, 2, 1_000) > now,
                    "rate {rate} place {} at {now}",
                    front + 1
                );
            }
        }
        assert_eq!(
            standing(&r, 15, 10, 0, 5),
            Standing::Waiting {
                ahead: Some(4),
                eta_ms: 500
            }
        );
    }

    #[test]
    fn ticket_ids_read_back_only_as_handed_out() {
        let ticket = new_ticket();
        let id = ticket_id(&ticket).expect("a new ticket reads back");
        assert_eq!(ticket_text(id), ticket);
        let fixed = "0123456789abcdef0123456789abcdef";
        assert_eq!(ticket_id(fixed), Some(0x0123456789abcdef0123456789abcdef));
        assert_eq!(ticket_text(0x0123456789abcdef0123456789abcdef), fixed);
        assert_eq!(ticket_text(1), format!("{}1", "0".repeat(31)));
        // Redis tells these apart from the lowercase id, so no instance may merge them.
        assert_eq!(ticket_id(&fixed.to_uppercase()), None);
        assert_eq!(ticket_id(&format!("+{}", &fixed[1..])), None);
        assert_eq!(ticket_id(&fixed[1..]), None);
        assert_eq!(ticket_id(""), None);
    }

    /// Spearman's rank correlation between join order and queue order over 200 pre-start
    /// joiners: a fair shuffle leaves them uncorrelated.
    #[test]
    fn the_shuffle_is_uncorrelated_with_join_order() {
        let key = ShuffleKey::random();
        let tickets: Vec<String> = (0..200).map(|_| new_ticket()).collect();
        let mut order: Vec<usize> = (0..tickets.len()).collect();
        order.sort_by_key(|&i| key.rank(&tickets[i]));
        let n = order.len() as f64;
        let d2: f64 = order
            .iter()
            .enumerate()
            .map(|(place, &joined)| (place as f64 - joined as f64).powi(2))
            .sum();
        let rho = 1.0 - 6.0 * d2 / (n * (n * n - 1.0));
        assert!(rho.abs() < 0.3, "Spearman rho {rho}");
    }

    #[test]
    fn the_order_depends_on_the_key() {
        let tickets: Vec<String> = (0..50).map(|_| new_ticket()).collect();
        let ordered = |key: &ShuffleKey| {
            let mut t = tickets.clone();
            t.sort_by_key(|t| key.rank(t));
            t
        };
        assert_ne!(ordered(&ShuffleKey::random()), ordered(&ShuffleKey::random()));
    }
}
