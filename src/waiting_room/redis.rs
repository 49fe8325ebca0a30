//! The distributed waiting room: each sale's queue in Redis, so every instance serves one queue.
//! A join or a poll is one Lua script; the sweep of abandoned tickets is another, run by every
//! instance (it is idempotent). A restart of an instance loses nothing: the queue is in Redis.
//!
//! Keys of a sale share the gate's hash tag (`{s<id>}`), so Redis Cluster keeps them on one shard:
//! - `<p>:{s<id>}:q:meta`    hash: arrivals, placed (tickets placed at the start; absent until
//!   then), after (joiners since the start), admitted, expired (before admission)
//! - `<p>:{s<id>}:q:users`   hash: user → ticket
//! - `<p>:{s<id>}:q:tickets` hash: ticket → `place|arrival|admitted|expired|user` (place 0: taken
//!   before the start, placed by its rank in `q:pre`)
//! - `<p>:{s<id>}:q:pre`     sorted set: tickets taken before the start, scored by their rank
//!   (`random_at_start`: the HMAC rank; `fifo`: arrival), frozen at the start
//! - `<p>:{s<id>}:q:seen`    sorted set: live tickets by last poll, what the sweep reads
//! - `<p>:{s<id>}:q:at`      hash: admitted ticket → when the front reached it (unix ms)

use crate::gate::redis::Connection;
use futures::future::BoxFuture;
use redis::Script;

use super::{before_start, burst, opens_at, retire_at, standing, Place, QueueStats, ShuffleKey, Standing};
use super::{WaitingRoom, WaitingRoomError};
use crate::backend::{BackendError, Role};
use crate::domain::{Millis, Sale, SaleId, UserId};

/// Shared by both scripts: the ticket codec, the start, and expiry.
const COMMON: &str = r#"
local now, opens = tonumber(ARGV[2]), tonumber(ARGV[3])
local rate, burst, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local function decode(raw)
  local place, arrival, admitted, expired, user = string.match(raw, '^(%d+)|(%d+)|(%d)|(%d)|(.*)$')
  return {tonumber(place), tonumber(arrival), admitted, expired, user}
end
local function encode(d) return d[1] .. '|' .. d[2] .. '|' .. d[3] .. '|' .. d[4] .. '|' .. d[5] end
-- The number of tickets placed at the start, or nil before it; the first call past the start
-- freezes the pre-start set.
local function started()
  local placed = redis.call('HGET', KEYS[1], 'placed')
  if placed then return tonumber(placed) end
  if now < opens then return nil end
  placed = redis.call('ZCARD', KEYS[4])
  redis.call('HSET', KEYS[1], 'placed', placed)
  return placed
end
-- Expires a ticket not polled in time; one never admitted gives its slot to the next ticket.
local function expire_if_stale(id, d)
  if d[4] == '1' then return true end
  local seen = tonumber(redis.call('ZSCORE', KEYS[5], id) or '0')
  if now - seen <= ttl then return false end
  d[4] = '1'
  redis.call('HSET', KEYS[3], id, encode(d))
  redis.call('ZREM', KEYS[5], id)
  if d[3] == '0' then redis.call('HINCRBY', KEYS[1], 'expired', 1) end
  return true
end
"#;

/// ARGV[1] `join` or `poll`; [7] user; [8] new ticket id; [9] its rank; [10] mode; [11] ticket.
/// Answers `{ticket, kind, a, b}`: kind 0 waiting (a place, b front), 1 not placed yet (a
/// arrival), 2 admitted (a place, b when the front reached it), 3 expired, 4 no such ticket for
/// this buyer.
const QUEUE: &str = r#"
local function new_ticket(id, user)
  local arrival = redis.call('HINCRBY', KEYS[1], 'arrivals', 1)
  local place = 0
  local placed = started()
  if placed then
    place = placed + redis.call('HINCRBY', KEYS[1], 'after', 1)
  else
    local score = arrival
    if ARGV[10] == 'random_at_start' then score = tonumber(ARGV[9]) end
    redis.call('ZADD', KEYS[4], score, id)
  end
  local d = {place, arrival, '0', '0', user}
  redis.call('HSET', KEYS[3], id, encode(d))
  redis.call('HSET', KEYS[2], user, id)
  return d
end
local id, d
if ARGV[1] == 'join' then
  id = redis.call('HGET', KEYS[2], ARGV[7])
  if id then
    d = decode(redis.call('HGET', KEYS[3], id))
    if expire_if_stale(id, d) then id = nil end
  end
  if not id then
    id = ARGV[8]
    d = new_ticket(id, ARGV[7])
  end
else
  id = ARGV[11]
  local raw = redis.call('HGET', KEYS[3], id)
  if not raw then return {id, 4, 0, 0} end
  d = decode(raw)
  if d[5] ~= ARGV[7] then return {id, 4, 0, 0} end
  if expire_if_stale(id, d) then return {id, 3, 0, 0} end
end
redis.call('ZADD', KEYS[5], now, id)
local placed = started()
if not placed then return {id, 1, d[2], 0} end
local place = d[1]
if place == 0 then place = redis.call('ZRANK', KEYS[4], id) + 1 end
local front = 0
if now >= opens then front = math.floor(rate * (now - opens) / 1000) + burst end
local expired = tonumber(redis.call('HGET', KEYS[1], 'expired') or '0')
front = front + expired
if place <= front then
  local at
  if d[3] == '0' then
    d[3] = '1'
    redis.call('HSET', KEYS[3], id, encode(d))
    redis.call('HINCRBY', KEYS[1], 'admitted', 1)
    -- When the front reached the place (`waiting_room::reached_at`), kept for every later poll.
    at = opens
    local by_rate = place - burst - expired
    if by_rate > 0 then at = opens + math.ceil(by_rate * 1000 / rate) end
    redis.call('HSET', KEYS[6], id, at)
  else
    at = tonumber(redis.call('HGET', KEYS[6], id) or now)
  end
  return {id, 2, place, at}
end
return {id, 0, place, front}
"#;

/// Expires up to ARGV[7] tickets not polled within the time to live; answers how many it looked at.
const SWEEP: &str = r#"
local stale = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - ttl - 1, 'LIMIT', 0, tonumber(ARGV[7]))
for _, id in ipairs(stale) do
  local raw = redis.call('HGET', KEYS[3], id)
  if raw then expire_if_stale(id, decode(raw)) else redis.call('ZREM', KEYS[5], id) end
end
return #stale
"#;

/// Tickets one sweep script looks at: bounded, so Redis is never held long.
const SWEEP_BATCH: usize = 500;

pub struct RedisWaitingRoom {
    conn: Connection,
    prefix: String,
    queue: Script,
    sweep: Script,
    key: ShuffleKey,
}

fn unavailable(e: redis::RedisError) -> BackendError {
    BackendError::unavailable(Role::WaitingRoom, e)
}

impl RedisWaitingRoom {
    /// On the gate's connection: the same Redis node or cluster, with the same bounded timeouts
    /// (a dead Redis costs a buyer at most the backend timeout). Every key of a sale's queue
    /// shares the sale's hash tag, so a cluster keeps them on one shard.
    pub(crate) fn new(conn: Connection, prefix: &str) -> Self {
        RedisWaitingRoom {
            conn,
            prefix: prefix.to_owned(),
            queue: Script::new(&format!("{COMMON}{QUEUE}")),
            sweep: Script::new(&format!("{COMMON}{SWEEP}")),
            key: ShuffleKey::random(),
        }
    }

    fn keys(&self, sale: SaleId) -> [String; 6] {
        let base = format!("{}:{{s{sale}}}:q", self.prefix);
        ["meta", "users", "tickets", "pre", "seen", "at"].map(|k| format!("{base}:{k}"))
    }

    /// The arguments both scripts start with (ARGV[1..=6]).
    fn invocation<'a>(
        &self,
        script: &'a Script,
        sale: &Sale,
        op: &str,
        now: Millis,
    ) -> Option<redis::ScriptInvocation<'a>> {
        let room = sale.spec.waiting_room?;
        let mut invocation = script.prepare_invoke();
        for key in self.keys(sale.id) {
            invocation.key(key);
        }
        invocation
            .arg(op)
            .arg(now)
            .arg(opens_at(sale))
            .arg(room.admit_per_sec)
            .arg(burst(&room))
            .arg(i64::from(room.ticket_ttl_secs) * 1000);
        Some(invocation)
    }

    async fn run(
        &self,
        sale: &Sale,
        op: &str,
        user: &UserId,
        ticket: &str,
        now: Millis,
    ) -> Result<Place, WaitingRoomError> {
        let Some(room) = sale.spec.waiting_room else {
            return Err(WaitingRoomError::TicketNotFound);
        };
        let Some(mut invocation) = self.invocation(&self.queue, sale, op, now) else {
            return Err(WaitingRoomError::TicketNotFound);
        };
        let new = super::new_ticket();
        invocation
            .arg(user.as_str())
            .arg(&new)
            .arg(self.key.rank(&new))
            .arg(room.mode.as_str())
            .arg(ticket);
        let (ticket, kind, a, b): (String, i64, i64, i64) = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let (a, b) = (u64::try_from(a).unwrap_or(0), u64::try_from(b).unwrap_or(0));
        let opens = opens_at(sale);
        let (standing, place, admitted_at) = match kind {
            0 => (standing(&room, a, b, opens, now), Some(a), None),
            1 => (before_start(&room, a, opens, now), None, None),
            2 => (Standing::Admitted, Some(a), Millis::try_from(b).ok()),
            3 => (Standing::Expired, None, None),
            _ => return Err(WaitingRoomError::TicketNotFound),
        };
        Ok(Place {
            ticket,
            standing,
            place,
            admitted_at,
        })
    }
}

impl WaitingRoom for RedisWaitingRoom {
    fn join<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        now: Millis,
    ) -> BoxFuture<'a, Result<Place, WaitingRoomError>> {
        Box::pin(self.run(sale, "join", user, "", now))
    }

    fn poll<'a>(
        &'a self,
        sale: &'a Sale,
        ticket: &'a str,
        user: &'a UserId,
        now: Millis,
    ) -> BoxFuture<'a, Result<Place, WaitingRoomError>> {
        Box::pin(self.run(sale, "poll", user, ticket, now))
    }

    fn sweep<'a>(&'a self, sale: &'a Sale, now: Millis) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            // A bounded number of batches per sweep; the next sweep goes on where this one stopped.
            for _ in 0..20 {
                let Some(mut invocation) = self.invocation(&self.sweep, sale, "sweep", now) else {
                    return Ok(());
                };
                invocation.arg(SWEEP_BATCH);
                let looked_at: usize = invocation
                    .invoke_async(&mut self.conn.clone())
                    .await
                    .map_err(unavailable)?;
                if looked_at < SWEEP_BATCH {
                    break;
                }
            }
            Ok(())
        })
    }

    fn stats(&self, sale: SaleId) -> BoxFuture<'_, Result<Option<QueueStats>, BackendError>> {
        Box::pin(async move {
            let [meta, ..] = self.keys(sale);
            let (arrivals, admitted, expired): (Option<u64>, Option<u64>, Option<u64>) = redis::cmd("HMGET")
                .arg(meta)
                .arg("arrivals")
                .arg("admitted")
                .arg("expired")
                .query_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
            Ok(arrivals.map(|joined| {
                let (admitted, expired) = (admitted.unwrap_or(0), expired.unwrap_or(0));
                QueueStats {
                    waiting: joined.saturating_sub(admitted).saturating_sub(expired),
                    admitted,
                    expired,
                }
            }))
        })
    }

    fn retire<'a>(
        &'a self,
        sale: &'a Sale,
        done_at: Millis,
        _now: Millis,
    ) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            // An absolute time: setting it again does not postpone it, and every instance sets
            // the same one for an ended sale (a sold-out one's is when this instance saw it).
            let at = retire_at(sale, done_at);
            let mut pipe = redis::pipe();
            for key in self.keys(sale.id) {
                pipe.cmd("PEXPIREAT").arg(key).arg(at).ignore();
            }
            pipe.query_async::<()>(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
            Ok(true)
        })
    }
}
