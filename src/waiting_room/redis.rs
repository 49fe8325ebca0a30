//! The distributed waiting room: each sale's queue in Redis, so every instance serves one queue.
//! An instance sends a sale's concurrent joins and polls as one Lua script call (see
//! `run_groups`), which decides each in order; the sweep of abandoned tickets is another script,
//! run by every instance (it is idempotent). A join before a `random_at_start` queue's start,
//! the stampede's request, is cheaper still: such a ticket has no place yet and is derived from
//! the buyer, so the join is answered at once and its buyer written afterwards, with the group's
//! (`PREJOIN`). A restart of an instance loses nothing: the queue is in Redis, every other join
//! is written before it is answered, and a graceful shutdown writes the quick joins answered
//! (one lost with a killed instance is written again by its buyer's next poll before the
//! start). Most polls never reach Redis: an instance answers a ticket's polls from what Redis
//! said of it within the last third of its time to live (see `Known`).
//!
//! Keys of a sale share the gate's hash tag (`{s<id>}`), so Redis Cluster keeps them on one shard:
//! - `<p>:{s<id>}:q:meta`    hash: arrivals, placed (tickets placed at the start; absent until
//!   then), seed (of the shuffle at the start), after (joiners since the start), admitted,
//!   expired (before admission)
//! - `<p>:{s<id>}:q:users`   hash: user → their ticket, `place|arrival|at|expired|joined|ticket`
//!   (place 0: taken before the start and not yet polled since: its place is its arrival
//!   (`fifo`) or where a keyed permutation of the arrivals puts it (`random_at_start`, see
//!   `shuffled`), written back at its first poll after the start; at: when the front reached it,
//!   0 until it was admitted; joined: when it was taken)
//! - `<p>:{s<id>}:q:seen`    sorted set: buyers by their ticket's last poll, what the sweep reads
//! - `<p>:{s<id>}:q:joined`  list: the buyers who took a ticket, oldest first, each script call's
//!   after its time (`#<ms>`): where the sweep finds the tickets never polled. A join writes
//!   one record and appends to this list; a ticket enters `seen` at its first poll.
//! - `<p>:{s<id>}:q:early`   set: the buyers of a keyed `random_at_start` queue who joined
//!   before its start (see `PREJOIN`) and have made no request since it: no record yet. The
//!   start counts them; each is numbered at their first request after it, and the shuffle places
//!   them as it places every ticket taken before the start.
//!   Their ticket is no secret Redis keeps: it is derived from the buyer and the queue's `key`
//!   (in `meta`, see `TicketKey`).
//! - only in queues an older version left: `tickets` (hash: ticket → `place|arrival|admitted|
//!   expired|user`, `users` then naming the buyer's ticket), `at` (hash: admitted ticket → when)
//!   and `seen` by ticket id, each moved into the buyer's record when first read; `pre` (sorted
//!   set: the pre-start tickets' places in a queue an older version started)

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use futures::future::BoxFuture;
use redis::Script;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use hmac::Hmac;
use sha2::Sha256;

use super::{
    before_start, burst, front, hmac_key, keyed_prefix, opens_at, retire_at, standing, ticket_id, ticket_text, Place,
    QueueStats, Standing,
};
use super::{WaitingRoom, WaitingRoomError};
use crate::backend::{BackendError, Role};
use crate::domain::{Millis, QueueMode, Sale, SaleId, UserId, WaitingRoomSpec};
use crate::gate::redis::Connection;
use crate::metrics::{RedisCall, METRICS};

/// Shared by both scripts: the buyer's record, reading an older version's tickets, and expiry.
/// ARGV[1..=7], the header: now, opens, rate, burst, ttl, mode, and a fresh random seed for the
/// shuffle at the start (kept by the call that starts the queue, unknown to every client:
/// nobody can predict or influence the order). KEYS: meta, users, tickets, pre, seen, at, joined,
/// early.
/// Increments go to `redis.call` as strings, as in the gate's scripts (no `printf` per call).
const COMMON: &str = r#"
local now, opens = tonumber(ARGV[1]), tonumber(ARGV[2])
local rate, burst, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local mode = ARGV[6]
-- A buyer's record: `place|arrival|at|expired|joined|ticket` (place 0 until placed, at 0 until
-- admitted, joined: the time of the join that took the ticket).
local function decode(raw)
  local place, arrival, at, expired, joined, ticket = string.match(raw, '^(%d+)|(%d+)|(%d+)|(%d)|(%d+)|(.*)$')
  if not place then return nil end
  return {tonumber(place), tonumber(arrival), tonumber(at), expired, joined, ticket}
end
-- A whole number as a decimal string: `%d` (a number concatenated into a string is formatted
-- with `%.14g`, which costs Redis more), and 0, a new ticket's usual place and admission time,
-- as a constant (each string made costs Redis as much as a `redis.call`).
local function dec(n)
  if n == 0 then return '0' end
  return string.format('%d', n)
end
local function encode(d)
  return dec(d[1]) .. '|' .. dec(d[2]) .. '|' .. dec(d[3]) .. '|' .. d[4] .. '|' .. d[5] .. '|' .. d[6]
end
-- A ticket as an older version kept it (the buyer's entry in `users` naming it, its record in
-- `tickets`, its last poll in `seen` under its id, its admission time in `at`), moved into the
-- buyer's record the first time it is read; nil when that ticket is gone.
local function upgrade(user, id)
  local raw = redis.call('HGET', KEYS[3], id)
  if not raw then return nil end
  local place, arrival, admitted, expired = string.match(raw, '^(%d+)|(%d+)|(%d)|(%d)|')
  if not place then return nil end
  local at = 0
  if admitted == '1' then at = tonumber(redis.call('HGET', KEYS[6], id) or opens) end
  local seen = redis.call('ZSCORE', KEYS[5], id)
  local d = {tonumber(place), tonumber(arrival), at, expired, seen or '0', id}
  redis.call('HSET', KEYS[2], user, encode(d))
  if seen then
    redis.call('ZREM', KEYS[5], id)
    if expired == '0' then redis.call('ZADD', KEYS[5], seen, user) end
  end
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[6], id)
  return d
end
-- The buyer's record, or nil.
local function record(user)
  local raw = redis.call('HGET', KEYS[2], user)
  if not raw then return nil end
  if string.find(raw, '|', 1, true) then return decode(raw) end
  return upgrade(user, raw)
end
-- Expires a ticket neither taken nor polled within the time to live; one never admitted gives
-- its slot to the next ticket.
local function expire_if_stale(user, d)
  if d[4] == '1' then return true end
  if now - tonumber(d[5]) <= ttl then return false end
  if now - tonumber(redis.call('ZSCORE', KEYS[5], user) or '0') <= ttl then return false end
  d[4] = '1'
  redis.call('HSET', KEYS[2], user, encode(d))
  redis.call('ZREM', KEYS[5], user)
  if d[3] == 0 then redis.call('HINCRBY', KEYS[1], 'expired', '1') end
  return true
end
-- Expires a buyer of `early` (see `PREJOIN`) who joined at `joined` and has neither joined
-- again nor polled within the time to live (either puts them in `seen`). Once the queue has
-- started they were counted in it: their slot is handed on.
local function early_stale(user, joined)
  if now - joined <= ttl then return false end
  if now - tonumber(redis.call('ZSCORE', KEYS[5], user) or '0') <= ttl then return false end
  redis.call('SREM', KEYS[8], user)
  redis.call('ZREM', KEYS[5], user)
  if redis.call('HEXISTS', KEYS[1], 'placed') == 1 then redis.call('HINCRBY', KEYS[1], 'expired', '1') end
  return true
end
"#;

/// Decides a group of joins and polls of one sale in one call, in order, each exactly as if it
/// ran alone (a buyer joining twice in one group meets their own first ticket). After the
/// header, 3 ARGV per request: `join` or `poll`, user, ticket (a join's new one, handed out if
/// the buyer holds none; a poll's, the one asked about).
/// Answers per request its kind, then the values that kind has: 0 waiting (place, the expired
/// tickets' slots handed on), 1 not placed yet (arrival), 2 admitted (place, when the front
/// reached it), 3 expired and 4 no such ticket for this buyer (none). A kind plus 8 is followed
/// first by the buyer's ticket, when it is not the one the request named (a join that met the
/// ticket the buyer holds). Only what a request needs: each value costs Redis and the engine's
/// parser their share of the call (a join before the start, the stampede's request, is two).
/// Each new ticket's buyer is appended to `joined`, after the call's time.
const QUEUE: &str = r#"
-- The queue's counters, read once per call and written once at its end: arrivals (tickets
-- taken) and after (tickets taken since the start).
local arrivals, after, counted = 0, 0, false
local function count()
  if counted then return end
  local c = redis.call('HMGET', KEYS[1], 'arrivals', 'after')
  arrivals, after, counted = tonumber(c[1] or '0'), tonumber(c[2] or '0'), true
end
-- The number of tickets placed at the start, or nil before it; the first call past the start
-- freezes the pre-start arrivals and picks the shuffle's seed. Asked once per script call:
-- with one `now`, the answer stays.
local start_known, start_placed = false, nil
local function started()
  if start_known then return start_placed end
  local placed = redis.call('HGET', KEYS[1], 'placed')
  if placed then
    placed = tonumber(placed)
  elseif now >= opens then
    count()
    -- The buyers of `early` are numbered after the arrivals with a record, as each first asks.
    placed = arrivals + redis.call('SCARD', KEYS[8])
    redis.call('HSET', KEYS[1], 'placed', dec(placed), 'seed', ARGV[7], 'numbered', dec(arrivals),
               'arrivals', dec(placed))
    arrivals = placed
  end
  start_known, start_placed = true, placed
  return placed
end
-- A keyed permutation of 1..n: a four-round Feistel network (addition modulo the half's size,
-- SHA-1 of the seed, round and half as the round function) on the smallest even number of bits
-- covering n, applied again until the value falls in 1..n (cycle walking keeps it a
-- permutation of 1..n).
local function shuffled(arrival, n, seed)
  local bits = 2
  while 2 ^ bits < n do bits = bits + 2 end
  local half = 2 ^ (bits / 2)
  local x = arrival - 1
  repeat
    local l, r = math.floor(x / half), x % half
    for round = 1, 4 do
      local f = tonumber(string.sub(redis.sha1hex(seed .. ':' .. round .. ':' .. r), 1, 12), 16) % half
      l, r = r, (l + f) % half
    end
    x = l * half + r
  until x < n
  return x + 1
end
-- Whether the buyer is in `early` (asked only while it has anyone: once per call otherwise).
local early_n
local function in_early(user)
  if early_n == nil then early_n = redis.call('SCARD', KEYS[8]) end
  return early_n > 0 and redis.call('SISMEMBER', KEYS[8], user) == 1
end
-- A buyer of `early` asking: nil if they are not there, false before the start (they stay,
-- kept alive by the request), else their record, made now: the next number, placed by the
-- shuffle like any ticket taken before the start. `ticket` is theirs (the engine checks). Their
-- request shows they are there: only the sweep expires them.
local function early(user, ticket)
  if not in_early(user) then return nil end
  if not started() then
    redis.call('ZADD', KEYS[5], ARGV[1], user)
    return false
  end
  local arrival = redis.call('HINCRBY', KEYS[1], 'numbered', '1')
  redis.call('SREM', KEYS[8], user)
  local d = {0, arrival, 0, '0', ARGV[1], ticket}
  redis.call('HSET', KEYS[2], user, encode(d))
  return d
end
-- The buyers who took a ticket in this call, after the call's time: appended to `joined` at
-- the end, where the sweep finds the tickets never polled.
local joined, j = {'#' .. ARGV[1]}, 1
-- A new ticket for the buyer, at the back: its place (0 before the start) and arrival, or nil
-- when `first` (only if the buyer has no record) meets a record, which saves a read for the
-- buyer never seen, most joins in a stampede. No table: each allocation in Lua costs Redis its
-- own and the garbage collector's work.
local function new_ticket(id, user, first)
  -- Asked first: a queue started by this join counts only the arrivals before it.
  local placed = started()
  count()
  local place, arrival = 0, arrivals + 1
  if placed then place = placed + after + 1 end
  -- Its record, taken now: one string made.
  local raw = dec(place) .. '|' .. dec(arrival) .. '|0|0|' .. ARGV[1] .. '|' .. id
  if first then
    if in_early(user) then return nil end
    if redis.call('HSETNX', KEYS[2], user, raw) == 0 then return nil end
  else
    redis.call('HSET', KEYS[2], user, raw)
  end
  arrivals = arrival
  if placed then after = after + 1 end
  j = j + 1
  joined[j] = user
  return place, arrival
end
-- The place of a ticket taken before the start.
local function pre_start_place(id, arrival, placed)
  if mode ~= 'random_at_start' then return arrival end
  local seed = redis.call('HGET', KEYS[1], 'seed')
  if seed then return shuffled(arrival, placed, seed) end
  -- Started by an older version: ranked in its sorted set.
  local rank = redis.call('ZRANK', KEYS[4], id)
  if rank then return rank + 1 end
  return arrival
end
-- A join comes with what `new_ticket` said of it for a buyer never seen: its place and
-- arrival, or nil when the buyer holds a record.
local function decide(op, user, ticket, place, arrival)
  local d
  if op == 'join' then
    if not place then
      d = record(user)
      if d and expire_if_stale(user, d) then d = nil end
      if not d then
        d = early(user, ticket)
        if d == false then return ticket, 1, 0, 0 end
      end
      if d then
        -- Joining again counts as a poll.
        redis.call('ZADD', KEYS[5], ARGV[1], user)
      else
        place, arrival = new_ticket(ticket, user, false)
      end
    end
    if not d then
      if not started() then return ticket, 1, arrival, 0 end
      d = {place, arrival, 0, '0', ARGV[1], ticket}
    end
  else
    d = record(user)
    if not d and op == 'pollk' then
      -- The buyer's own ticket of a keyed queue (see `PREJOIN`): handed out, so gone means expired.
      d = early(user, ticket)
      if d == false then return ticket, 1, 0, 0 end
      if not d then
        if started() then return ticket, 3, 0, 0 end
        -- Before the start, a ticket handed out and not written (its instance killed before it
        -- wrote the join, Redis unreachable then) or expired since is written again: no place
        -- is at stake yet, and its buyer is still there.
        redis.call('SADD', KEYS[8], user)
        redis.call('ZADD', KEYS[5], ARGV[1], user)
        early_n = (early_n or 0) + 1
        return ticket, 1, 0, 0
      end
    end
    if not d or d[6] ~= ticket then return ticket, 4, 0, 0 end
    if expire_if_stale(user, d) then return ticket, 3, 0, 0 end
    redis.call('ZADD', KEYS[5], ARGV[1], user)
  end
  local id = d[6]
  local placed = started()
  if not placed then return id, 1, d[2], 0 end
  local place, changed = d[1], false
  if place == 0 then
    place = pre_start_place(id, d[2], placed)
    d[1], changed = place, true
  end
  local front = 0
  if now >= opens then front = math.floor(rate * (now - opens) / 1000) + burst end
  local expired = tonumber(redis.call('HGET', KEYS[1], 'expired') or '0')
  front = front + expired
  local kind, b = 0, expired
  if place <= front then
    kind = 2
    if d[3] == 0 then
      -- When the front reached the place (`waiting_room::reached_at`), kept for every later poll.
      local at = opens
      local by_rate = place - burst - expired
      if by_rate > 0 then at = opens + math.ceil(by_rate * 1000 / rate) end
      d[3], changed = at, true
      redis.call('HINCRBY', KEYS[1], 'admitted', '1')
    end
    b = d[3]
  end
  if changed then redis.call('HSET', KEYS[2], user, encode(d)) end
  return id, kind, place, b
end
local out, n = {}, 0
for i = 8, #ARGV, 3 do
  local op, user, ticket = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local place, arrival
  if op == 'join' then place, arrival = new_ticket(ticket, user, true) end
  if place == 0 then
    -- A buyer never seen joining before the start, the stampede's request: not placed yet,
    -- answered without `decide`.
    out[n + 1], out[n + 2] = 1, arrival
    n = n + 2
  else
    local id, kind, a, b = decide(op, user, ticket, place, arrival)
    n = n + 1
    if id ~= ticket then
      out[n], out[n + 1] = kind + 8, id
      n = n + 1
    else
      out[n] = kind
    end
    if kind <= 2 then
      n = n + 1
      out[n] = a
    end
    if kind == 0 or kind == 2 then
      n = n + 1
      out[n] = b
    end
  end
end
if j > 1 then
  redis.call('HSET', KEYS[1], 'arrivals', dec(arrivals), 'after', dec(after))
  redis.call('RPUSH', KEYS[7], unpack(joined))
end
return out
"#;

/// After the header, ARGV[8]: expires up to that many polled tickets not polled again within
/// the time to live, and looks at up to that many more of `joined`; answers how many it looked
/// at, and the expired tickets' slots handed on so far.
const SWEEP: &str = r#"
local limit = tonumber(ARGV[8])
-- Polled tickets, by their last poll. A member is a buyer, or the id of a ticket an older
-- version kept (its buyer's record is then upgraded, or it was not their ticket any more).
local stale = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - ttl - 1, 'LIMIT', 0, limit)
for _, member in ipairs(stale) do
  local d = record(member)
  if d then
    expire_if_stale(member, d)
  elseif redis.call('SISMEMBER', KEYS[8], member) == 1 then
    early_stale(member, 0)
  else
    local old = redis.call('HGET', KEYS[3], member)
    local user = old and string.match(old, '^%d+|%d+|%d|%d|(.*)$')
    d = user and record(user)
    if d then expire_if_stale(user, d) end
    redis.call('ZREM', KEYS[5], member)
  end
end
-- Tickets never polled since they were taken: `joined`, oldest first, each call's buyers after
-- its time (`#<ms>`). Read up to the first call within the time to live.
local list = redis.call('LRANGE', KEYS[7], 0, limit - 1)
local at, done = nil, 0
for i, entry in ipairs(list) do
  if string.byte(entry, 1) == 35 then
    if now - tonumber(string.sub(entry, 2)) <= ttl then break end
    at = string.sub(entry, 2)
  else
    local d = record(entry)
    -- Only the ticket taken then: a buyer who joined again since holds a newer one.
    if d and d[5] == at then
      expire_if_stale(entry, d)
    elseif not d and redis.call('SISMEMBER', KEYS[8], entry) == 1 then
      early_stale(entry, tonumber(at))
    end
  end
  done = i
end
if done > 0 then
  redis.call('LTRIM', KEYS[7], done, -1)
  -- The batch ended where more may follow: the time of the call being read goes back in front
  -- of the rest of its buyers.
  if done == limit and at then redis.call('LPUSH', KEYS[7], '#' .. at) end
end
return {#stale + done, tonumber(redis.call('HGET', KEYS[1], 'expired') or '0')}
"#;

/// The quick join before a `random_at_start` queue starts, the stampede's request: its answer
/// has no place (nobody has one before the start) and its ticket is the buyer's own, derived
/// from the queue's key (see [`TicketKey`]), so the group only has to be recorded. The buyers go
/// into the set `early` and onto `joined`, where the sweep finds those never polled; the start
/// counts them and each is numbered at their first request after it (see `early` in [`QUEUE`]).
/// A buyer there already (joining again) is kept alive as by a poll. Without records or answers
/// per buyer this costs Redis about a third of a join through [`QUEUE`] (`bench/queue_script.sh`).
/// ARGV: now, then the buyers. Answers 0, or -1 if the queue has started: the group then goes
/// through [`QUEUE`]. KEYS: meta, early, joined, seen.
const PREJOIN: &str = r#"
if redis.call('HEXISTS', KEYS[1], 'placed') == 1 then return -1 end
if redis.call('SADD', KEYS[2], unpack(ARGV, 2)) < #ARGV - 1 then
  -- Some joined before: all are alive now (which, the count does not say).
  for i = 2, #ARGV do redis.call('ZADD', KEYS[4], ARGV[1], ARGV[i]) end
end
redis.call('RPUSH', KEYS[3], '#' .. ARGV[1], unpack(ARGV, 2))
return 0
"#;

/// The key a `random_at_start` queue's tickets are derived from (see [`TicketKey`]): made by the
/// first instance that asks, while the queue holds no ticket taken otherwise (an older version's
/// queue stays unkeyed: its buyers hold random tickets). ARGV: a fresh key. Answers the key, or
/// nil for an unkeyed queue. KEYS: meta.
const KEY: &str = r#"
local key = redis.call('HGET', KEYS[1], 'key')
if key then return key end
if redis.call('HEXISTS', KEYS[1], 'arrivals') == 1 or redis.call('HEXISTS', KEYS[1], 'placed') == 1 then
  return false
end
redis.call('HSET', KEYS[1], 'key', ARGV[1])
return ARGV[1]
"#;

/// Tickets one sweep script looks at: bounded, so Redis is never held long.
const SWEEP_BATCH: usize = 500;

/// Most joins and polls of one sale sent in one script call: bounds the script's run time in
/// Redis, which serves nothing else meanwhile.
const MAX_GROUP: usize = 512;

pub struct RedisWaitingRoom {
    conn: Connection,
    prefix: String,
    /// The sales this instance serves a queue for; a retired sale's entry is forgotten.
    queues: DashMap<SaleId, Arc<SaleQueue>>,
    queue: Script,
    prejoin: Script,
    key: Script,
    sweep: Script,
    /// The sales' early group tasks (see [`run_early_groups`]), waited for at shutdown.
    early_tasks: TaskTracker,
    /// Keys the buyer hashes of [`Known`].
    buyers: RandomState,
}

/// The keys of a sale's queue, in the scripts' KEYS order: meta, users, tickets, pre, seen, at,
/// joined, early.
type QueueKeys = [String; 8];

fn queue_keys(prefix: &str, sale: SaleId) -> QueueKeys {
    let base = format!("{prefix}:{{s{sale}}}:q");
    ["meta", "users", "tickets", "pre", "seen", "at", "joined", "early"].map(|k| format!("{base}:{k}"))
}

/// Where [`PREJOIN`]'s keys are in [`QueueKeys`]: meta, early, joined, seen.
const PREJOIN_KEYS: [usize; 4] = [0, 7, 6, 4];

/// A keyed queue's tickets: each buyer's is the first 128 bits of an HMAC of their id under the
/// queue's key, kept in Redis (see [`KEY`]), so every instance hands a buyer the same ticket
/// without asking Redis which, and a ticket cannot be guessed without the key.
struct TicketKey(Hmac<Sha256>);

impl TicketKey {
    fn new(key: &str) -> Self {
        TicketKey(hmac_key(key.as_bytes()))
    }

    fn ticket(&self, user: &UserId) -> u128 {
        keyed_prefix(&self.0, user.as_str().as_bytes())
    }
}

/// Most tickets of one sale an instance remembers to answer their polls itself (see [`Known`]),
/// about 100 bytes each; past it, polls of tickets it does not know go to Redis.
const MAX_KNOWN: usize = 1 << 20;

/// One sale's queue on this instance: its keys, made once, its group task, and what it
/// remembers of the tickets it answered.
struct SaleQueue {
    keys: Arc<QueueKeys>,
    /// The sale's group task (see [`run_groups`]): every join and poll of the sale on this
    /// instance that Redis answers goes through it. Unbounded like the gate's: each request
    /// waits for its answer, so the requests in flight (bounded by the connection caps) bound it.
    asks: mpsc::UnboundedSender<Ask>,
    /// The sale's quick joins before its start (see [`run_early_groups`]), grouped the same way.
    early: mpsc::UnboundedSender<EarlyJoin>,
    /// The queue's ticket key once Redis said it (`None`: an unkeyed queue); asked once, for
    /// `random_at_start` queues only.
    key: tokio::sync::OnceCell<Option<TicketKey>>,
    /// Tickets by id, as Redis last answered them here.
    known: DashMap<u128, Known>,
    /// The expired tickets' slots handed on, as Redis last said (it only grows).
    expired: AtomicU64,
}

/// What Redis last said of a ticket, kept so that the polls that follow are answered without it.
/// A poll is answered here only within a third of the ticket time to live of one that reached
/// Redis (`refreshed`): the ticket's `seen` there is no older, so no sweep can have expired it
/// meanwhile (instances' clocks may differ by the other two thirds), and what a poll changes in
/// Redis, an admission, is never decided here. Polls keep a ticket alive all the same: every
/// third of the time to live, one of them goes to Redis.
#[derive(Clone, Copy)]
struct Known {
    /// A keyed hash of the ticket's buyer: answered here only to them, as Redis would.
    buyer: u64,
    said: Said,
    refreshed: Millis,
}

/// A script answer for a ticket that exists (kinds 0 to 3 of [`QUEUE`]).
#[derive(Clone, Copy)]
enum Said {
    NotPlaced { arrival: u64 },
    Waiting { place: u64 },
    Admitted { place: u64, at: Millis },
    Expired,
}

impl Said {
    /// The place at `now`: `None` when only Redis can say (the front reached it, or the queue
    /// started since).
    fn place(
        self,
        room: &WaitingRoomSpec,
        opens: Millis,
        expired: u64,
        now: Millis,
    ) -> Option<(Standing, Option<u64>, Option<Millis>)> {
        match self {
            Said::NotPlaced { arrival } if now < opens => Some((before_start(room, arrival, opens, now), None, None)),
            Said::NotPlaced { .. } => None,
            Said::Waiting { place } => match standing(room, place, front(room, opens, now) + expired, opens, now) {
                Standing::Admitted => None,
                waiting => Some((waiting, Some(place), None)),
            },
            Said::Admitted { place, at } => Some((Standing::Admitted, Some(place), Some(at))),
            Said::Expired => Some((Standing::Expired, None, None)),
        }
    }
}

/// How long after Redis last saw a ticket this instance may answer its polls itself.
fn refresh_window(room: &WaitingRoomSpec) -> Millis {
    Millis::from(room.ticket_ttl_secs) * 1000 / 3
}

/// What the scripts' header says of a sale's room (ARGV[2..=6]; ARGV[1] is now, ARGV[7] the
/// shuffle's seed).
#[derive(Clone, Copy)]
struct Rules {
    opens: Millis,
    rate: u32,
    burst: u64,
    ttl_ms: i64,
    mode: &'static str,
}

impl Rules {
    fn of(sale: &Sale, room: &WaitingRoomSpec) -> Self {
        Rules {
            opens: opens_at(sale),
            rate: room.admit_per_sec,
            burst: burst(room),
            ttl_ms: i64::from(room.ticket_ttl_secs) * 1000,
            mode: room.mode.as_str(),
        }
    }

    /// A call of `script` on a sale's queue: its keys, then the header both scripts start with.
    fn invocation<'a>(self, script: &'a Script, keys: &QueueKeys, now: Millis) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation
            .arg(now)
            .arg(self.opens)
            .arg(self.rate)
            .arg(self.burst)
            .arg(self.ttl_ms)
            .arg(self.mode)
            // The seed: 122 random bits, as in a ticket id. Only a call past the start can start
            // the queue and keep it.
            .arg(if now >= self.opens {
                super::new_ticket()
            } else {
                String::new()
            });
        invocation
    }
}

/// A quick join (see [`PREJOIN`]) on its way to the sale's early group task, already answered.
/// If the queue has started by the time it is written, it goes through [`QUEUE`] instead, with
/// the buyer's ticket (`id`) and the queue's rules.
struct EarlyJoin {
    user: UserId,
    id: u128,
    now: Millis,
    rules: Rules,
}

/// What a request asks [`QUEUE`]: `join`, `poll`, or `pollk` (a poll of a keyed queue with the
/// buyer's own ticket, checked here: one that has no trace in Redis was handed out and expired).
#[derive(Clone, Copy)]
enum Op {
    Join,
    Poll,
    PollOwn,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Join => "join",
            Op::Poll => "poll",
            Op::PollOwn => "pollk",
        }
    }
}

/// A join or a poll, on its way to the sale's group task.
struct Ask {
    op: Op,
    user: UserId,
    /// Join: the ticket to hand out if the buyer holds none; poll: the ticket asked about.
    ticket: String,
    now: Millis,
    rules: Rules,
    answer: oneshot::Sender<Result<Answered, BackendError>>,
}

/// The script's answer for one request: `kind, a, b` as [`QUEUE`] says.
struct Answered {
    /// The request's own ticket unless the script named another.
    ticket: String,
    kind: i64,
    a: i64,
    b: i64,
}

/// One request's answer as the script gave it: the ticket it named instead of the request's, if
/// any, then `kind, a, b` (0 where the kind has no such value).
type Decided = (Option<String>, i64, i64, i64);

fn unavailable(e: redis::RedisError) -> BackendError {
    BackendError::unavailable(Role::WaitingRoom, e)
}

/// One sale's joins and polls, grouped: whatever queued while the previous call was in flight
/// goes to Redis as one script call, so a stampede on one sale costs Redis one round trip per
/// group instead of one per request. An idle sale's first request goes out at once: nothing
/// waits on a timer. The call runs whatever happens to the requests that asked.
async fn run_groups(conn: Connection, script: Script, queue: Weak<SaleQueue>, mut asks: mpsc::UnboundedReceiver<Ask>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while asks.recv_many(&mut group, MAX_GROUP).await > 0 {
        // The askers hold the queue while they wait; none left means nobody waits for an answer.
        let Some(queue) = queue.upgrade() else { break };
        match decide_group(&conn, &script, &queue.keys, &group).await {
            Ok(answers) => {
                for (ask, answered) in group.drain(..).zip(answers) {
                    // The request's ticket goes back to it, moved, unless the script named another.
                    let (other, kind, a, b) = answered;
                    let _ = ask.answer.send(Ok(Answered {
                        ticket: other.unwrap_or(ask.ticket),
                        kind,
                        a,
                        b,
                    }));
                }
            }
            Err(e) => {
                // Shared, so every request of the group logs the same cause.
                let cause = Arc::new(e);
                for ask in group.drain(..) {
                    let error = BackendError::unavailable(Role::WaitingRoom, Arc::clone(&cause));
                    let _ = ask.answer.send(Err(error));
                }
            }
        }
        // Without an answer (never: the length is checked), an asker hears the task dropped it.
        group.clear();
    }
}

/// One sale's quick joins, written as [`run_groups`] groups the rest: one [`PREJOIN`] call for
/// whatever queued while the previous one was in flight. The buyers were answered already (a
/// ticket with no place yet, theirs whatever happens), so each waits for nothing but the join
/// itself: their answer costs the engine no wake-up per buyer. A join left unwritten (Redis
/// unreachable, or the instance killed meanwhile) is written by the buyer's next poll before the
/// start (see `pollk` in [`QUEUE`]).
/// It ends once the sale's queue is dropped here (retired, or the instance shutting down) and
/// every join sent before is written.
async fn run_early_groups(
    conn: Connection,
    script: Script,
    keys: Arc<QueueKeys>,
    asks: mpsc::UnboundedSender<Ask>,
    mut joins: mpsc::UnboundedReceiver<EarlyJoin>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while joins.recv_many(&mut group, MAX_GROUP).await > 0 {
        write_early(&conn, &script, &keys, &asks, &mut group).await;
        group.clear();
    }
}

/// One [`PREJOIN`] call for `group`; if the queue has started since, each join goes through the
/// queue's group task instead, and is waited for.
async fn write_early(
    conn: &Connection,
    script: &Script,
    keys: &QueueKeys,
    asks: &mpsc::UnboundedSender<Ask>,
    group: &mut Vec<EarlyJoin>,
) {
    let now = group.iter().map(|join| join.now).max().unwrap_or_default();
    let mut invocation = script.prepare_invoke();
    for k in PREJOIN_KEYS {
        invocation.key(&keys[k]);
    }
    invocation.arg(now);
    for join in group.iter() {
        invocation.arg(join.user.as_str());
    }
    METRICS.observe_redis_call(RedisCall::Queue, group.len());
    match invocation.invoke_async::<i64>(&mut conn.clone()).await {
        Ok(0) => {}
        Ok(_) => {
            let answers = group.drain(..).filter_map(|join| {
                let (answer, answered) = oneshot::channel();
                let ask = Ask {
                    op: Op::Join,
                    user: join.user,
                    ticket: ticket_text(join.id),
                    now: join.now,
                    rules: join.rules,
                    answer,
                };
                asks.send(ask).ok().map(|()| answered)
            });
            futures::future::join_all(answers.collect::<Vec<_>>()).await;
        }
        Err(e) => tracing::warn!(
            error = %e,
            joins = group.len(),
            "quick joins not written: each buyer's next poll before the start writes theirs"
        ),
    }
}

/// One call deciding `group` in arrival order; an answer per request, in the same order: the
/// ticket the script named instead of the request's, if any, and `kind, a, b`. The
/// group shares one `now`, the latest of its requests': each is decided no earlier than it was
/// asked, as if it had been sent alone a moment later.
async fn decide_group(
    conn: &Connection,
    script: &Script,
    keys: &QueueKeys,
    group: &[Ask],
) -> Result<Vec<Decided>, redis::RedisError> {
    let Some(last) = group.last() else {
        return Ok(Vec::new());
    };
    let now = group.iter().map(|ask| ask.now).max().unwrap_or(last.now);
    let mut invocation = last.rules.invocation(script, keys, now);
    for ask in group {
        invocation.arg(ask.op.as_str()).arg(ask.user.as_str()).arg(&ask.ticket);
    }
    METRICS.observe_redis_call(RedisCall::Queue, group.len());
    let flat: Vec<redis::Value> = invocation.invoke_async(&mut conn.clone()).await?;
    parse_answers(flat, group.len())
}

/// The script's answers (see [`QUEUE`]), one per request: the ticket it named instead of the
/// request's, if any, then `kind, a, b` (0 where the kind has no such value). Anything else,
/// fewer or more values than `requests` answers, fails the whole call.
fn parse_answers(flat: Vec<redis::Value>, requests: usize) -> Result<Vec<Decided>, redis::RedisError> {
    fn malformed() -> redis::RedisError {
        redis::RedisError::from((redis::ErrorKind::TypeError, "queue: malformed answer"))
    }
    fn next<T: redis::FromRedisValue>(values: &mut std::vec::IntoIter<redis::Value>) -> Result<T, redis::RedisError> {
        redis::from_owned_redis_value(values.next().ok_or_else(malformed)?)
    }
    let mut values = flat.into_iter();
    let mut answers = Vec::with_capacity(requests);
    for _ in 0..requests {
        let mut kind: i64 = next(&mut values)?;
        let mut other = None;
        if kind >= 8 {
            kind -= 8;
            other = Some(next(&mut values)?);
        }
        let a = if (0..=2).contains(&kind) { next(&mut values)? } else { 0 };
        let b = if kind == 0 || kind == 2 { next(&mut values)? } else { 0 };
        answers.push((other, kind, a, b));
    }
    match values.next() {
        None => Ok(answers),
        Some(_) => Err(malformed()),
    }
}

impl RedisWaitingRoom {
    /// On the gate's connection: the same Redis node or cluster, with the same bounded timeouts
    /// (a dead Redis costs a buyer at most the backend timeout). Every key of a sale's queue
    /// shares the sale's hash tag, so a cluster keeps them on one shard.
    pub(crate) fn new(conn: Connection, prefix: &str) -> Self {
        RedisWaitingRoom {
            conn,
            prefix: prefix.to_owned(),
            queues: DashMap::new(),
            queue: Script::new(&format!("{COMMON}{QUEUE}")),
            prejoin: Script::new(PREJOIN),
            key: Script::new(KEY),
            sweep: Script::new(&format!("{COMMON}{SWEEP}")),
            early_tasks: TaskTracker::new(),
            buyers: RandomState::new(),
        }
    }

    /// The sale's queue, with its group task started the first time.
    fn sale_queue(&self, sale: SaleId) -> Arc<SaleQueue> {
        if let Some(queue) = self.queues.get(&sale) {
            return Arc::clone(&queue);
        }
        Arc::clone(&self.queues.entry(sale).or_insert_with(|| {
            let (asks, queued) = mpsc::unbounded_channel();
            let (early, early_queued) = mpsc::unbounded_channel();
            let queue = Arc::new(SaleQueue {
                keys: Arc::new(queue_keys(&self.prefix, sale)),
                asks,
                early,
                key: tokio::sync::OnceCell::new(),
                known: DashMap::new(),
                expired: AtomicU64::new(0),
            });
            self.early_tasks.spawn(run_early_groups(
                self.conn.clone(),
                self.prejoin.clone(),
                Arc::clone(&queue.keys),
                queue.asks.clone(),
                early_queued,
            ));
            // Ends once the queue is forgotten (retired) and the last asker is gone.
            tokio::spawn(run_groups(
                self.conn.clone(),
                self.queue.clone(),
                Arc::downgrade(&queue),
                queued,
            ));
            queue
        }))
    }

    /// The keys of the sale's queue, without starting a group task for it: background work
    /// (sweep, stats, retire) also runs for sales nobody queues for on this instance.
    fn keys(&self, sale: SaleId) -> Arc<QueueKeys> {
        match self.queues.get(&sale) {
            Some(queue) => Arc::clone(&queue.keys),
            None => Arc::new(queue_keys(&self.prefix, sale)),
        }
    }

    /// The queue's ticket key, asked of Redis (and made there if need be) the first time.
    async fn ticket_key<'q>(&self, queue: &'q SaleQueue) -> Result<Option<&'q TicketKey>, BackendError> {
        let key = queue
            .key
            .get_or_try_init(|| async {
                let fresh: String = crate::domain::random_key().iter().map(|b| format!("{b:02x}")).collect();
                let key: Option<String> = self
                    .key
                    .key(&queue.keys[0])
                    .arg(fresh)
                    .invoke_async(&mut self.conn.clone())
                    .await
                    .map_err(unavailable)?;
                Ok::<_, BackendError>(key.map(|key| TicketKey::new(&key)))
            })
            .await?;
        Ok(key.as_ref())
    }

    /// A quick join before the start (see [`PREJOIN`]), handed to the sale's early group task.
    fn join_early(&self, queue: &SaleQueue, join: EarlyJoin) -> Result<(), BackendError> {
        queue
            .early
            .send(join)
            .map_err(|_| BackendError::fault(Role::WaitingRoom, "the sale's early join task has stopped"))
    }

    async fn ask(
        &self,
        sale: &Sale,
        join: bool,
        user: &UserId,
        ticket: &str,
        now: Millis,
    ) -> Result<Place, WaitingRoomError> {
        let Some(room) = sale.spec.waiting_room else {
            return Err(WaitingRoomError::TicketNotFound);
        };
        let queue = self.sale_queue(sale.id);
        // Polls only are remembered: a join stampede of buyers who never poll would fill
        // `known` for nothing.
        let buyer = (!join).then(|| self.buyers.hash_one(user.as_str()));
        if let Some(buyer) = buyer {
            if let Some(place) = answer_locally(&queue, sale, &room, ticket, buyer, now) {
                return Ok(place);
            }
        }
        // A `random_at_start` queue's tickets are its buyers' own (see `TicketKey`), unless an
        // older version's queue holds random ones.
        let key = match room.mode {
            QueueMode::RandomAtStart => self.ticket_key(&queue).await?,
            QueueMode::Fifo => None,
        };
        let opens = opens_at(sale);
        let (op, ticket) = match (join, key) {
            (true, Some(key)) => {
                let id = key.ticket(user);
                let ticket = ticket_text(id);
                // What this instance said of the ticket before (expired, say) no longer holds.
                queue.known.remove(&id);
                if now < opens {
                    let rules = Rules::of(sale, &room);
                    self.join_early(
                        &queue,
                        EarlyJoin {
                            user: user.clone(),
                            id,
                            now,
                            rules,
                        },
                    )?;
                    return Ok(Place {
                        ticket,
                        standing: before_start(&room, 0, opens, now),
                        place: None,
                        admitted_at: None,
                    });
                }
                (Op::Join, ticket)
            }
            (true, None) => (Op::Join, super::new_ticket()),
            // Another ticket was never this buyer's: no need to ask Redis.
            (false, Some(key)) if ticket_id(ticket) != Some(key.ticket(user)) => {
                return Err(WaitingRoomError::TicketNotFound)
            }
            (false, Some(_)) => (Op::PollOwn, ticket.to_owned()),
            (false, None) => (Op::Poll, ticket.to_owned()),
        };
        let (answer, answered) = oneshot::channel();
        let asked = queue.asks.send(Ask {
            op,
            user: user.clone(),
            ticket,
            now,
            rules: Rules::of(sale, &room),
            answer,
        });
        if asked.is_err() {
            return Err(BackendError::fault(Role::WaitingRoom, "the sale's queue task has stopped").into());
        }
        let Answered { ticket, kind, a, b } = answered
            .await
            .map_err(|_| BackendError::unavailable(Role::WaitingRoom, "the sale's queue task dropped a request"))??;
        let (a, b) = (u64::try_from(a).unwrap_or(0), u64::try_from(b).unwrap_or(0));
        let (said, expired) = match kind {
            0 => (Said::Waiting { place: a }, b),
            1 => (Said::NotPlaced { arrival: a }, 0),
            2 => (
                Said::Admitted {
                    place: a,
                    at: Millis::try_from(b).unwrap_or(Millis::MAX),
                },
                0,
            ),
            3 => (Said::Expired, 0),
            _ => return Err(WaitingRoomError::TicketNotFound),
        };
        queue.expired.fetch_max(expired, Ordering::Relaxed);
        // Redis decided at the group's time, no earlier than `now`, so `place` agrees with it;
        // were a clock to disagree, the ticket waits at the front until Redis admits it.
        let (standing, place, admitted_at) = said.place(&room, opens, expired, now).unwrap_or_else(|| match said {
            Said::Waiting { place } => {
                let waiting = Standing::Waiting {
                    ahead: Some(0),
                    eta_ms: 0,
                };
                (waiting, Some(place), None)
            }
            _ => (before_start(&room, a, opens, now), None, None),
        });
        // A join has no buyer here: its ticket is not parsed, nor remembered.
        if let Some((buyer, id)) = buyer.and_then(|buyer| Some((buyer, ticket_id(&ticket)?))) {
            if queue.known.len() < MAX_KNOWN || queue.known.contains_key(&id) {
                queue.known.insert(
                    id,
                    Known {
                        buyer,
                        said,
                        refreshed: now,
                    },
                );
            }
        }
        Ok(Place {
            ticket,
            standing,
            place,
            admitted_at,
        })
    }
}

/// A poll answered from what Redis said of the ticket a moment ago (see [`Known`]); `None` when
/// only Redis can answer it.
fn answer_locally(
    queue: &SaleQueue,
    sale: &Sale,
    room: &WaitingRoomSpec,
    ticket: &str,
    buyer: u64,
    now: Millis,
) -> Option<Place> {
    let known = *queue.known.get(&ticket_id(ticket)?)?;
    let fresh = (0..refresh_window(room)).contains(&(now - known.refreshed));
    if known.buyer != buyer || !fresh {
        return None;
    }
    let expired = queue.expired.load(Ordering::Relaxed);
    let (standing, place, admitted_at) = known.said.place(room, opens_at(sale), expired, now)?;
    Some(Place {
        ticket: ticket.to_owned(),
        standing,
        place,
        admitted_at,
    })
}

impl WaitingRoom for RedisWaitingRoom {
    fn join<'a>(
        &'a self,
        sale: &'a Sale,
        user: &'a UserId,
        now: Millis,
    ) -> BoxFuture<'a, Result<Place, WaitingRoomError>> {
        Box::pin(self.ask(sale, true, user, "", now))
    }

    fn poll<'a>(
        &'a self,
        sale: &'a Sale,
        ticket: &'a str,
        user: &'a UserId,
        now: Millis,
    ) -> BoxFuture<'a, Result<Place, WaitingRoomError>> {
        Box::pin(self.ask(sale, false, user, ticket, now))
    }

    fn sweep<'a>(&'a self, sale: &'a Sale, now: Millis) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let Some(room) = sale.spec.waiting_room else {
                return Ok(());
            };
            let rules = Rules::of(sale, &room);
            let keys = self.keys(sale.id);
            let queue = self.queues.get(&sale.id).map(|queue| Arc::clone(&queue));
            // A bounded number of batches per sweep; the next sweep goes on where this one stopped.
            for _ in 0..20 {
                let (looked_at, expired): (usize, u64) = rules
                    .invocation(&self.sweep, &keys, now)
                    .arg(SWEEP_BATCH)
                    .invoke_async(&mut self.conn.clone())
                    .await
                    .map_err(unavailable)?;
                METRICS.observe_redis_call(RedisCall::QueueSweep, looked_at);
                if let Some(queue) = &queue {
                    // The slots of tickets expired anywhere reach the polls answered here.
                    queue.expired.fetch_max(expired, Ordering::Relaxed);
                }
                if looked_at < SWEEP_BATCH {
                    break;
                }
            }
            if let Some(queue) = &queue {
                let window = refresh_window(&room);
                queue
                    .known
                    .retain(|_, known| (0..window).contains(&(now - known.refreshed)));
            }
            Ok(())
        })
    }

    fn stats(&self, sale: SaleId) -> BoxFuture<'_, Result<Option<QueueStats>, BackendError>> {
        Box::pin(async move {
            let keys = self.keys(sale);
            type Counters = (Option<u64>, Option<u64>, Option<u64>, Option<u64>);
            let ((arrivals, admitted, expired, placed), early): (Counters, u64) = redis::pipe()
                .cmd("HMGET")
                .arg(&keys[0])
                .arg("arrivals")
                .arg("admitted")
                .arg("expired")
                .arg("placed")
                .cmd("SCARD")
                .arg(&keys[7])
                .query_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
            // The buyers of `early` are counted in `arrivals` from the start on.
            let early = if placed.is_none() { early } else { 0 };
            let arrivals = match (arrivals, early) {
                (None, 0) => None,
                (arrivals, early) => Some(arrivals.unwrap_or(0) + early),
            };
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

    fn flush(&self, within: std::time::Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // No request is served any more: the queues dropped, each early task writes what it
            // was sent and ends.
            self.queues.clear();
            self.early_tasks.close();
            if tokio::time::timeout(within, self.early_tasks.wait()).await.is_err() {
                tracing::warn!(
                    sales = self.early_tasks.len(),
                    "quick joins still unwritten at shutdown"
                );
            }
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
            for key in self.keys(sale.id).iter() {
                pipe.cmd("PEXPIREAT").arg(key).arg(at).ignore();
            }
            pipe.query_async::<()>(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
            // Its group task ends once the requests still in flight have their answers.
            self.queues.remove(&sale.id);
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::QueueMode;

    /// Each kind carries only its values, and a ticket other than the request's comes first:
    /// read back request by request; a value too few, too many or of the wrong type fails the
    /// whole call.
    #[test]
    fn answers_are_read_back_kind_by_kind() {
        use redis::Value::{BulkString, Int};
        let held = || BulkString(b"held".to_vec());
        let flat = vec![
            Int(1),
            Int(7),
            Int(0),
            Int(3),
            Int(2),
            Int(4),
            Int(2),
            Int(5),
            Int(1_000),
            Int(9),
            held(),
            Int(6),
            Int(3),
        ];
        let answers = parse_answers(flat.clone(), 6).expect("well formed");
        assert_eq!(
            answers,
            vec![
                (None, 1, 7, 0),
                (None, 0, 3, 2),
                (None, 4, 0, 0),
                (None, 2, 5, 1_000),
                (Some("held".to_owned()), 1, 6, 0),
                (None, 3, 0, 0),
            ]
        );
        assert!(parse_answers(flat.clone(), 7).is_err(), "a request without an answer");
        assert!(parse_answers(flat, 5).is_err(), "values left over");
        assert!(
            parse_answers(vec![held(), Int(1)], 1).is_err(),
            "a ticket where a kind belongs"
        );
    }

    #[test]
    fn a_remembered_place_is_answered_only_while_the_front_is_behind_it() {
        let room = WaitingRoomSpec {
            admit_per_sec: 10,
            mode: QueueMode::Fifo,
            ticket_ttl_secs: 30,
        };
        let waiting = Said::Waiting { place: 50 };
        // From the start at 0: front 10 at once, then one more each 100 ms.
        assert!(matches!(
            waiting.place(&room, 0, 0, 3_000),
            Some((Standing::Waiting { ahead: Some(9), .. }, Some(50), None))
        ));
        assert!(
            waiting.place(&room, 0, 0, 4_000).is_none(),
            "the front reached it: Redis admits"
        );
        assert!(
            waiting.place(&room, 0, 20, 2_000).is_none(),
            "expired slots moved the front"
        );
        let unplaced = Said::NotPlaced { arrival: 3 };
        assert!(unplaced.place(&room, 1_000, 0, 999).is_some());
        assert!(
            unplaced.place(&room, 1_000, 0, 1_000).is_none(),
            "started: only Redis places it"
        );
        assert_eq!(refresh_window(&room), 10_000);
    }
}
