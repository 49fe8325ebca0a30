//! The embedded waiting room: each sale's queue in this process's memory.
//!
//! Joining is a map insert, an atomic increment and a lock-free push (for the sweep); a poll
//! reads a ticket and three counters. The one step that touches every ticket is the shuffle at
//! the start of a `random_at_start` queue, done once per sale by whichever request first sees
//! the start. The sweep looks at a ticket about once per time to live, when it would expire if
//! not polled since (see `Expiries`), not at every ticket every second.
//!
//! A restart loses the queue: buyers polling a lost ticket are told it is unknown and join
//! again. Acceptable for the embedded engine, which is one process whose restart already drops
//! every connection; stock and orders are in SQLite and are never lost.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use dashmap::DashMap;
use futures::future::BoxFuture;

use super::{
    before_start, front, new_ticket_id, opens_at, reached_at, retire_at, standing, ticket_id, ticket_text,
    write_ticket_text, Place, QueueStats, ShuffleKey, Standing,
};
use super::{WaitingRoom, WaitingRoomError};
use crate::backend::BackendError;
use crate::domain::{Millis, QueueMode, Sale, SaleId, UserId, WaitingRoomSpec};

pub struct MemoryWaitingRoom {
    rooms: DashMap<SaleId, Arc<Room>>,
    key: ShuffleKey,
}

struct Ticket {
    /// The id buyers see as 32 hex digits ([`super::ticket_text`]), kept as the number: 16 bytes
    /// inline instead of a string's 24 and its 32 on the heap, a joiner's biggest single part.
    id: u128,
    /// 1 for the first joiner of the sale, and so on.
    arrival: u64,
    /// The place in the queue; 0 until it has one (a pre-start ticket before the start).
    place: AtomicU64,
    last_seen: AtomicI64,
    /// Told it was admitted: its slot was used, whatever it does next.
    admitted: AtomicBool,
    /// When the front reached it, set with `admitted`.
    admitted_at: AtomicI64,
    expired: AtomicBool,
}

struct Room {
    /// Each buyer's ticket. A poll names its buyer, so it finds the ticket here: one map for
    /// joins and polls.
    by_user: DashMap<UserId, Arc<Ticket>>,
    arrivals: AtomicU64,
    /// Tickets taken before the start, placed at the start.
    before_start: Mutex<Vec<Arc<Ticket>>>,
    /// Set at the start: how many tickets were placed then. Later joiners go behind them.
    placed_at_start: OnceLock<u64>,
    after_start: AtomicU64,
    admitted: AtomicU64,
    /// Tickets that expired before they were admitted: each moves the front by one.
    expired_waiting: AtomicU64,
    /// Each new ticket, in the order they were taken, for the sweep (see [`Expiries`]): a join
    /// only sends it here, which takes no lock.
    taken: mpsc::Sender<Arc<Ticket>>,
    expiries: Mutex<Expiries>,
}

impl Default for Room {
    fn default() -> Self {
        let (taken, fresh) = mpsc::channel();
        Room {
            by_user: DashMap::new(),
            arrivals: AtomicU64::new(0),
            before_start: Mutex::new(Vec::new()),
            placed_at_start: OnceLock::new(),
            after_start: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            expired_waiting: AtomicU64::new(0),
            taken,
            expiries: Mutex::new(Expiries {
                fresh,
                next: None,
                marks: VecDeque::new(),
                joined_long_ago: 0,
                due: BTreeMap::new(),
            }),
        }
    }
}

/// The sweep's own: where it finds the tickets whose time to live may have run out.
/// - Tickets never looked at wait in `fresh`, in the order they were taken (16 bytes each, in
///   the channel's blocks): each sweep marks how many tickets had been taken by then, so once a
///   mark is a time to live old, every ticket up to its count joined at least that long ago.
/// - A ticket polled since goes to `due`, under the second in which it would be stale if not
///   polled again; a ticket not polled since expires.
///
/// So each ticket is looked at about once per time to live, at most a sweep late, however many
/// tickets wait.
struct Expiries {
    fresh: mpsc::Receiver<Arc<Ticket>>,
    /// The first of `fresh`, taken off the channel but not due yet.
    next: Option<Arc<Ticket>>,
    /// Each sweep's time and the tickets taken by then (arrival numbers up to it), oldest first.
    marks: VecDeque<(Millis, u64)>,
    /// Every ticket of an arrival up to this joined more than a time to live ago.
    joined_long_ago: u64,
    due: BTreeMap<Millis, Vec<Arc<Ticket>>>,
}

impl Expiries {
    /// The first whole second after which the ticket, last seen at `last_seen`, is stale.
    fn second(last_seen: Millis, ttl_ms: Millis) -> Millis {
        last_seen.saturating_add(ttl_ms).div_euclid(1000) + 1
    }

    fn track(&mut self, ticket: Arc<Ticket>, ttl_ms: Millis) {
        let second = Self::second(ticket.last_seen.load(Relaxed), ttl_ms);
        self.due.entry(second).or_default().push(ticket);
    }
}

impl Default for MemoryWaitingRoom {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryWaitingRoom {
    pub fn new() -> Self {
        MemoryWaitingRoom {
            rooms: DashMap::new(),
            key: ShuffleKey::random(),
        }
    }

    fn room(&self, sale: SaleId) -> Arc<Room> {
        // A read lock first: `entry` write-locks the map's shard, which every join of the sale
        // would otherwise take in turn.
        if let Some(room) = self.rooms.get(&sale) {
            return Arc::clone(&room);
        }
        Arc::clone(&self.rooms.entry(sale).or_default())
    }

    /// Places the tickets taken before the start, once: in `random_at_start` by their rank under
    /// the secret key, in `fifo` by arrival.
    fn start(&self, room: &Room, mode: QueueMode) -> u64 {
        if let Some(&placed) = room.placed_at_start.get() {
            return placed;
        }
        // A poisoned lock only means a panic elsewhere mid-push; the list is still whole.
        let mut waiting = room.before_start.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&placed) = room.placed_at_start.get() {
            return placed;
        }
        match mode {
            QueueMode::Fifo => waiting.sort_by_key(|t| t.arrival),
            QueueMode::RandomAtStart => {
                waiting.sort_by_cached_key(|t| self.key.rank(write_ticket_text(t.id, &mut [0; 32])))
            }
        }
        for (i, ticket) in waiting.iter().enumerate() {
            ticket.place.store(i as u64 + 1, Relaxed);
        }
        let placed = waiting.len() as u64;
        waiting.clear();
        let _ = room.placed_at_start.set(placed);
        placed
    }

    /// Expires the ticket if it was not polled in time; counts its slot for the next ticket
    /// unless it had already been admitted. Exactly once, whoever sees it first.
    fn expire_if_stale(room: &Room, ticket: &Ticket, ttl_ms: Millis, now: Millis) -> bool {
        if ticket.expired.load(Relaxed) {
            return true;
        }
        if now - ticket.last_seen.load(Relaxed) <= ttl_ms {
            return false;
        }
        if ticket.expired.compare_exchange(false, true, Relaxed, Relaxed).is_ok() && !ticket.admitted.load(Relaxed) {
            room.expired_waiting.fetch_add(1, Relaxed);
        }
        true
    }

    fn place_of(&self, sale: &Sale, room: &Room, ticket: &Ticket, now: Millis) -> Place {
        let answer = |standing, place| Place {
            ticket: ticket_text(ticket.id),
            standing,
            place,
            admitted_at: None,
        };
        let Some(spec) = sale.spec.waiting_room else {
            return answer(Standing::Admitted, None);
        };
        let ttl_ms = Millis::from(spec.ticket_ttl_secs) * 1000;
        if Self::expire_if_stale(room, ticket, ttl_ms, now) {
            return answer(Standing::Expired, None);
        }
        ticket.last_seen.store(now, Relaxed);
        let opens = opens_at(sale);
        if now >= opens {
            self.start(room, spec.mode);
        }
        let place = ticket.place.load(Relaxed);
        if place == 0 {
            return answer(before_start(&spec, ticket.arrival, opens, now), None);
        }
        let expired = room.expired_waiting.load(Relaxed);
        let front = front(&spec, opens, now).saturating_add(expired);
        let standing = standing(&spec, place, front, opens, now);
        if standing != Standing::Admitted {
            return answer(standing, Some(place));
        }
        // The first admission's time stays: whichever poll sets it first, every answer agrees.
        let at = reached_at(&spec, place, expired, opens);
        let at = match ticket.admitted_at.compare_exchange(0, at, Relaxed, Relaxed) {
            Ok(_) => at,
            Err(first) => first,
        };
        if !ticket.admitted.swap(true, Relaxed) {
            room.admitted.fetch_add(1, Relaxed);
        }
        Place {
            admitted_at: Some(at),
            ..answer(standing, Some(place))
        }
    }

    /// Expires the room's tickets past their time to live; answers how many it looked at.
    fn sweep_room(room: &Room, spec: &WaitingRoomSpec, now: Millis) -> usize {
        let ttl_ms = Millis::from(spec.ticket_ttl_secs) * 1000;
        // Only the sweep takes this lock; a poisoned one only means a panic mid-sweep.
        let mut expiries = room.expiries.lock().unwrap_or_else(|p| p.into_inner());
        let mut looked_at = 0;
        expiries.marks.push_back((now, room.arrivals.load(Relaxed)));
        while let Some(&(at, taken)) = expiries.marks.front() {
            if now - at <= ttl_ms {
                break;
            }
            expiries.joined_long_ago = expiries.joined_long_ago.max(taken);
            expiries.marks.pop_front();
        }
        loop {
            let next = match expiries.next.take() {
                Some(ticket) => ticket,
                None => match expiries.fresh.try_recv() {
                    Ok(ticket) => ticket,
                    Err(_) => break,
                },
            };
            if next.arrival > expiries.joined_long_ago {
                expiries.next = Some(next);
                break;
            }
            looked_at += 1;
            if !Self::expire_if_stale(room, &next, ttl_ms, now) {
                expiries.track(next, ttl_ms);
            }
        }
        while let Some(entry) = expiries.due.first_entry() {
            if entry.key().saturating_mul(1000) > now {
                break;
            }
            let due = entry.remove();
            looked_at += due.len();
            for ticket in due {
                // Expired (now or by a join or poll that saw it stale): never looked at again.
                if !Self::expire_if_stale(room, &ticket, ttl_ms, now) {
                    expiries.track(ticket, ttl_ms);
                }
            }
        }
        looked_at
    }

    fn new_ticket(&self, sale: &Sale, room: &Room, now: Millis) -> Arc<Ticket> {
        let ticket = Arc::new(Ticket {
            id: new_ticket_id(),
            arrival: room.arrivals.fetch_add(1, Relaxed) + 1,
            place: AtomicU64::new(0),
            last_seen: AtomicI64::new(now),
            admitted: AtomicBool::new(false),
            admitted_at: AtomicI64::new(0),
            expired: AtomicBool::new(false),
        });
        let mode = sale.spec.waiting_room.map_or(QueueMode::Fifo, |w| w.mode);
        let placed = if now < opens_at(sale) {
            let mut waiting = room.before_start.lock().unwrap_or_else(|p| p.into_inner());
            match room.placed_at_start.get() {
                // Not started yet: placed with the others at the start.
                None => {
                    waiting.push(Arc::clone(&ticket));
                    None
                }
                Some(&placed) => Some(placed),
            }
        } else {
            Some(self.start(room, mode))
        };
        if let Some(placed) = placed {
            let behind = room.after_start.fetch_add(1, Relaxed) + 1;
            ticket.place.store(placed + behind, Relaxed);
        }
        // The room holds the receiver, so this cannot fail while the room exists.
        let _ = room.taken.send(Arc::clone(&ticket));
        ticket
    }
}

impl WaitingRoom for MemoryWaitingRoom {
    fn join<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        now: Millis,
    ) -> BoxFuture<'a, Result<Place, WaitingRoomError>> {
        Box::pin(async move {
            let room = self.room(sale.id);
            let ttl_ms = sale
                .spec
                .waiting_room
                .map_or(0, |w| Millis::from(w.ticket_ttl_secs) * 1000);
            // The buyer's entry is locked while it is read or replaced: two joins of one buyer
            // get one ticket.
            let ticket = {
                let mut held = room
                    .by_user
                    .entry(user.clone())
                    .or_insert_with(|| self.new_ticket(sale, &room, now));
                if Self::expire_if_stale(&room, &held, ttl_ms, now) {
                    *held = self.new_ticket(sale, &room, now);
                }
                Arc::clone(&held)
            };
            Ok(self.place_of(sale, &room, &ticket, now))
        })
    }

    fn poll<'a>(
        &'a self,
        sale: &'a Sale,
        ticket: &'a str,
        user: &'a UserId,
        now: Millis,
    ) -> BoxFuture<'a, Result<Place, WaitingRoomError>> {
        Box::pin(async move {
            let room = self
                .rooms
                .get(&sale.id)
                .map(|r| Arc::clone(&r))
                .ok_or(WaitingRoomError::TicketNotFound)?;
            // The buyer's ticket, if it is the one asked about: another buyer's, or one this buyer
            // held before joining again, is not theirs to poll.
            let found = room.by_user.get(user).map(|t| Arc::clone(&t));
            let ticket = found
                .filter(|t| Some(t.id) == ticket_id(ticket))
                .ok_or(WaitingRoomError::TicketNotFound)?;
            Ok(self.place_of(sale, &room, &ticket, now))
        })
    }

    fn sweep<'a>(&'a self, sale: &'a Sale, now: Millis) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let (Some(spec), Some(room)) = (sale.spec.waiting_room, self.rooms.get(&sale.id).map(|r| Arc::clone(&r)))
            else {
                return Ok(());
            };
            Self::sweep_room(&room, &spec, now);
            Ok(())
        })
    }

    fn stats(&self, sale: SaleId) -> BoxFuture<'_, Result<Option<QueueStats>, BackendError>> {
        let stats = self.rooms.get(&sale).map(|room| {
            let (joined, admitted, expired) = (
                room.arrivals.load(Relaxed),
                room.admitted.load(Relaxed),
                room.expired_waiting.load(Relaxed),
            );
            QueueStats {
                waiting: joined.saturating_sub(admitted).saturating_sub(expired),
                admitted,
                expired,
            }
        });
        Box::pin(async move { Ok(stats) })
    }

    fn retire<'a>(&'a self, sale: &'a Sale, done_at: Millis, now: Millis) -> BoxFuture<'a, Result<bool, BackendError>> {
        let due = now >= retire_at(sale, done_at);
        if due {
            self.rooms.remove(&sale.id);
        }
        Box::pin(async move { Ok(due) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SaleSpec, WaitingRoomSpec};

    fn sale(mode: QueueMode, rate: u32, starts_at: Millis) -> Sale {
        Sale {
            id: SaleId(1),
            spec: SaleSpec {
                name: "phone".into(),
                stock: 100,
                starts_at: Some(starts_at),
                ends_at: None,
                per_user_limit: 1,
                demo: false,
                payment_window_secs: 0,
                waiting_room: Some(WaitingRoomSpec {
                    admit_per_sec: rate,
                    mode,
                    ticket_ttl_secs: 10,
                }),
                stock_shards: 1,
            },
            created_at: 0,
        }
    }

    fn user(n: usize) -> UserId {
        UserId::parse(&format!("u{n}")).expect("valid")
    }

    async fn join(room: &MemoryWaitingRoom, sale: &Sale, n: usize, now: Millis) -> Place {
        room.join(sale, &user(n), now).await.expect("join")
    }

    #[tokio::test]
    async fn joining_twice_gives_the_same_ticket() {
        let (room, sale) = (MemoryWaitingRoom::new(), sale(QueueMode::Fifo, 1, 1_000));
        let first = join(&room, &sale, 1, 0).await;
        let again = join(&room, &sale, 1, 10).await;
        assert_eq!(first.ticket, again.ticket);
        assert_ne!(join(&room, &sale, 2, 10).await.ticket, first.ticket);
    }

    /// A poll finds the ticket through its buyer: another buyer's ticket, even polled by a buyer
    /// who holds one of their own, is not found.
    #[tokio::test]
    async fn a_ticket_answers_only_its_buyer() {
        let (room, sale) = (MemoryWaitingRoom::new(), sale(QueueMode::Fifo, 1, 1_000));
        let first = join(&room, &sale, 1, 0).await.ticket;
        let not_found = |r: Result<Place, WaitingRoomError>| matches!(r, Err(WaitingRoomError::TicketNotFound));
        assert!(not_found(room.poll(&sale, &first, &user(2), 10).await));
        let second = join(&room, &sale, 2, 10).await.ticket;
        assert!(not_found(room.poll(&sale, &first, &user(2), 20).await));
        assert!(not_found(room.poll(&sale, &second, &user(1), 20).await));
        assert_eq!(room.poll(&sale, &first, &user(1), 20).await.expect("own").ticket, first);
    }

    /// Every pre-start ticket is placed before every later one, each place handed out once, and
    /// the pre-start order is uncorrelated with the join order (Spearman's rho over 200).
    #[tokio::test]
    async fn pre_start_tickets_come_first_each_place_once() {
        let (room, sale) = (MemoryWaitingRoom::new(), sale(QueueMode::RandomAtStart, 1, 1_000));
        let early: Vec<usize> = (0..200).collect();
        for &n in &early {
            let place = join(&room, &sale, n, 500).await;
            assert!(matches!(place.standing, Standing::Waiting { ahead: None, .. }));
        }
        let late: Vec<usize> = (200..210).collect();
        futures::future::join_all(late.iter().map(|&n| join(&room, &sale, n, 1_000))).await;
        let r = room.room(sale.id);
        let place = |n: &usize| r.by_user.get(&user(*n)).map(|t| t.place.load(Relaxed)).expect("ticket");
        let mut places: Vec<u64> = early.iter().chain(&late).map(place).collect();
        assert!(early.iter().map(place).max() < late.iter().map(place).min());
        places.sort_unstable();
        assert_eq!(places, (1..=210).collect::<Vec<u64>>());
        let n = early.len() as f64;
        let d2: f64 = early
            .iter()
            .enumerate()
            .map(|(joined, n)| (place(n) as f64 - 1.0 - joined as f64).powi(2))
            .sum();
        let rho = 1.0 - 6.0 * d2 / (n * (n * n - 1.0));
        assert!(rho.abs() < 0.3, "Spearman rho {rho}");
    }

    /// A finished sale's queue stays for a ticket time to live (tickets polled then still get an
    /// answer), then its memory is dropped.
    #[tokio::test]
    async fn a_finished_sales_queue_is_dropped_a_time_to_live_later() {
        let (room, sale) = (MemoryWaitingRoom::new(), sale(QueueMode::Fifo, 1, 0));
        join(&room, &sale, 1, 0).await;
        assert!(!room.retire(&sale, 5_000, 14_999).await.expect("retire"));
        assert!(room.stats(sale.id).await.expect("stats").is_some());
        assert!(room.retire(&sale, 5_000, 15_000).await.expect("retire"));
        assert!(room.stats(sale.id).await.expect("stats").is_none());
        assert!(room.rooms.is_empty());
    }

    /// A sweep looks at the tickets whose time to live may have run out, not at every ticket:
    /// with 1,000 waiting, the sweeps within their time to live look at none, the first one a
    /// time to live after a sweep that saw them all taken looks at each once, and a ticket
    /// polled meanwhile is looked at again only a time to live after that poll.
    #[tokio::test]
    async fn a_sweep_looks_only_at_tickets_due() {
        let (room, sale) = (MemoryWaitingRoom::new(), sale(QueueMode::Fifo, 1, 0));
        let spec = sale.spec.waiting_room.expect("room");
        let tickets: Vec<Place> = futures::future::join_all((0..1_000).map(|n| join(&room, &sale, n, 0))).await;
        let r = room.room(sale.id);
        room.poll(&sale, &tickets[7].ticket, &user(7), 5_000)
            .await
            .expect("poll");
        // The first sweep, at 1 s, saw the 1,000 taken: they are due once 11 s have passed.
        for second in 1..=11 {
            let looked_at = MemoryWaitingRoom::sweep_room(&r, &spec, second * 1_000);
            assert_eq!(looked_at, 0, "at {second} s");
        }
        assert_eq!(MemoryWaitingRoom::sweep_room(&r, &spec, 12_000), 1_000);
        let stats = room.stats(sale.id).await.expect("stats").expect("room");
        assert_eq!(stats.expired + stats.admitted, 999, "all but the polled one expired");
        assert_eq!(MemoryWaitingRoom::sweep_room(&r, &spec, 15_000), 0);
        assert_eq!(MemoryWaitingRoom::sweep_room(&r, &spec, 16_000), 1);
        assert_eq!(
            room.poll(&sale, &tickets[7].ticket, &user(7), 16_000)
                .await
                .expect("poll")
                .standing,
            Standing::Expired
        );
    }

    #[tokio::test]
    async fn admission_follows_the_rate_and_expired_slots_go_to_the_next() {
        let (room, sale) = (MemoryWaitingRoom::new(), sale(QueueMode::Fifo, 1, 0));
        let tickets: Vec<Place> = futures::future::join_all((0..5).map(|n| join(&room, &sale, n, 0))).await;
        let by_arrival = |i: usize| tickets[i].ticket.clone();
        let poll = |i: usize, now| {
            let (room, sale, t) = (&room, &sale, by_arrival(i));
            async move { room.poll(sale, &t, &user(i), now).await.expect("poll").standing }
        };
        // Arrival order is place order here; at 0 the burst of 1 is admitted.
        let mut places: Vec<(u64, usize)> = (0..5)
            .map(|i| {
                let r = room.room(sale.id);
                let p = r.by_user.get(&user(i)).map(|t| t.place.load(Relaxed)).unwrap_or(0);
                (p, i)
            })
            .collect();
        places.sort_unstable();
        let nth = |k: usize| places[k].1;
        assert_eq!(poll(nth(0), 0).await, Standing::Admitted);
        assert!(matches!(
            poll(nth(1), 500).await,
            Standing::Waiting { ahead: Some(0), .. }
        ));
        assert_eq!(poll(nth(1), 1_000).await, Standing::Admitted);
        // The third stops polling; past its time to live the sweep expires it and the fourth is
        // admitted in its slot, at the time the third would have been.
        for k in [3, 4] {
            assert!(matches!(poll(nth(k), 1_500).await, Standing::Waiting { .. }));
        }
        room.sweep(&sale, 11_000).await.expect("sweep");
        assert_eq!(poll(nth(2), 11_001).await, Standing::Expired);
        assert_eq!(poll(nth(3), 2_000).await, Standing::Admitted);
        assert!(matches!(poll(nth(4), 2_000).await, Standing::Waiting { .. }));
        let stats = room.stats(sale.id).await.expect("stats").expect("room");
        assert_eq!((stats.admitted, stats.expired, stats.waiting), (3, 1, 1));
    }
}
