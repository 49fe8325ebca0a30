//! The distributed stock gate: one Lua script in Redis decides purchases atomically, so any
//! number of stateless engine instances sell one stock together. An instance sends a sale's
//! concurrent purchases as one call (see `run_groups`); the script decides each in order.
//!
//! Keys of a sale share a hash tag (`{s<id>}`), so a Redis Cluster keeps them on one shard:
//! - `<p>:{s<id>}:meta`    hash: stock, starts_at, ends_at, limit, remaining (never below 0),
//!   window (the payment window in ms, 0 = none), awaiting and paid (hold counts)
//! - `<p>:{s<id>}:buyers`  hash: user → `seq × 2^20 + held`, one field per buyer so that a
//!   purchase counts its buyer with one `HINCRBY`: `held` is the units they hold (checked
//!   against the limit, at most 1,000), `seq` the last one handed out to them, never lowered, so
//!   a released unit never makes the buyer's next order reuse a `seq` that another of their
//!   orders holds. (Older versions kept the two in hashes `holders` and `seqs`: loading a sale
//!   merges them, see `LOAD`.)
//! - `<p>:{s<id>}:pending` sorted set of reservations not yet confirmed durable, one member per
//!   script call's winners (`order_id seq user order_id seq user ...`, all the reconciler needs
//!   to re-publish them; older versions wrote one `order_id:seq:user` per reservation), scored
//!   by reservation time. A member goes when all of its reservations are durable or released.
//! - `<p>:{s<id>}:released` set of the order ids of reservations given back while their
//!   pending member stays (for the others in it); it goes with the member
//! - `<p>:{s<id>}:holds`   hash: order id → the hold of an order with a payment step
//!   (`state|seq|created_at|pay_by|paid_at|user|payment_id`), kept after it closes so a retried
//!   payment or a read finds it
//! - `<p>:{s<id>}:deadlines` sorted set: holds awaiting payment, scored by `pay_by`
//! - `<p>:{s<id>}:settled` sorted set: holds whose transition was decided here but not yet
//!   confirmed durable, scored by when (any instance records them again)
//! - `<p>:{s<id>}:outbox`  hash: move id → `to|units|at`, units taken off this shard for another
//!   not yet given (see `shards`)
//! - `<p>:{s<id>}:inbox`   set of the move ids given to this shard (so a move is given once)
//! - `<p>:sales`           set of sale ids (what the reconciler scans)
//! - `<p>:stock_shards`    hash: sale id → its shard count, for sales of more than one
//!
//! A sale of `stock_shards: K` > 1 has K copies of the per-sale keys, one per hash tag
//! (`{s<id>.<n>}`, see `shards::tags`), each with a share of the units; a buyer's units live on
//! their home shard.
//!
//! Every command, pipeline and script names keys of one sale only, so the gate runs the same on
//! one Redis node and on a Redis Cluster (see `Connection`).
//!
//! Redis is the authority of the stock: an expiry or a cancellation gives its unit back in the
//! same script that decides it, and exactly one of pay, expire and cancel wins per hold.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Script};
use tokio::sync::{mpsc, oneshot};

use super::{shards, HoldCounts, PendingShare, Reservation, ReserveError, StockGate};
use crate::backend::{next_group, BackendError, Check, Role};
use crate::domain::{
    new_order_id, now_millis, GateState, Holding, Millis, Order, OrderState, Payment, Refusal, Sale, SaleId, UserId,
};
use crate::metrics::{RedisCall, METRICS};
use crate::payment::{Settlement, Transition};

/// What the scripts that count buyers share: how a `buyers` field packs a buyer's last `seq`
/// and the units they hold (2^20 > the largest limit plus the one unit a purchase over the
/// limit adds before taking it back; `seq` < 2^32 keeps the field exact in Lua's doubles).
const BUYERS: &str = r#"
local UNIT = 1048576
-- One unit held and one seq more, and that taken back, as strings (see `RESERVE`).
local ONE_MORE, ONE_LESS = '1048577', '-1048577'
local function held_of(field) return field % UNIT end
-- A unit back from its buyer: their held count goes down, their last seq stays.
local function unhold(key, user)
  if held_of(tonumber(redis.call('HGET', key, user) or '0')) > 0 then
    redis.call('HINCRBY', key, user, '-1')
  end
end
"#;

/// Once a sale answers "sold out", this instance stops asking Redis for that long. Short, so a
/// unit returned by another instance or the reconciler is offered again promptly.
const SOLD_OUT_RECHECK_MS: Millis = 1_000;

/// Decides a group of purchases of one sale in one call, in order, each exactly as if it ran
/// alone. ARGV: the group's time, then `user, order id` per buyer. Answers the units left
/// before the group, the sale's payment window, then per buyer their `seq` if they won, else
/// -2 not started, -3 ended, -4 sold out, -5 at the limit; or `{-1}` alone for a sale Redis
/// does not have. A buyer twice in one group meets their own first unit at the limit check,
/// because the buyers hash is updated as it goes. The group's winners are pending as one
/// member (see [`PendingGroup`]). KEYS: meta, buyers, pending, holds, deadlines.
/// Shaped by its cost in Redis instructions (`bench/reserve_script.sh`): numbers become strings
/// as rarely as possible (Lua and Redis both format them with `printf`: a `seq` once per value,
/// increments passed as strings), and tables grow by counters, not `#` (a search in Lua 5.1).
const RESERVE: &str = r#"
local meta = redis.call('HMGET', KEYS[1], 'starts_at', 'ends_at', 'limit', 'remaining', 'window')
if not meta[3] then return {-1} end
local starts, ends = tonumber(meta[1]), tonumber(meta[2])
local limit, remaining = tonumber(meta[3]), tonumber(meta[4])
local window = tonumber(meta[5] or '0')
local now = ARGV[1]
-- The time is read as a number only where a rule needs it.
local t = (starts or ends or window > 0) and tonumber(now)
local closed = (starts and t < starts and -2) or (ends and t >= ends and -3)
local out, n = {remaining, window}, 2
local pending, p, seqs, sold, held = {}, 0, {}, 0, 0
for i = 2, #ARGV, 2 do
  local user = ARGV[i]
  local r = closed or -5
  if closed then
    -- Refused before the buyer is looked at.
  elseif remaining <= 0 then
    -- A buyer at the limit hears so, sold out or not.
    if held_of(tonumber(redis.call('HGET', KEYS[2], user) or '0')) < limit then r = -4 end
  else
    -- One unit held and one seq more, counted first and taken back when over the limit: one
    -- call for each buyer under it.
    local field = redis.call('HINCRBY', KEYS[2], user, ONE_MORE)
    if held_of(field) > limit then
      redis.call('HINCRBY', KEYS[2], user, ONE_LESS)
    else
      remaining = remaining - 1
      sold = sold + 1
      r = math.floor(field / UNIT)
      local seq = seqs[r]
      if not seq then
        seq = string.format('%d', r)
        seqs[r] = seq
      end
      local id = ARGV[i + 1]
      pending[p + 1] = id
      pending[p + 2] = seq
      pending[p + 3] = user
      p = p + 3
      if window > 0 then
        local pay_by = t + window
        redis.call('HSET', KEYS[4], id,
                   'awaiting_payment|' .. seq .. '|' .. now .. '|' .. pay_by .. '||' .. user .. '|')
        redis.call('ZADD', KEYS[5], pay_by, id)
        held = held + 1
      end
    end
  end
  n = n + 1
  out[n] = r
end
if sold > 0 then
  redis.call('HINCRBY', KEYS[1], 'remaining', -sold)
  redis.call('ZADD', KEYS[3], now, table.concat(pending, ' '))
end
if held > 0 then redis.call('HINCRBY', KEYS[1], 'awaiting', held) end
return out
"#;

/// Gives a group of reservations back; ARGV holds `user, pending member, order id` per
/// reservation. Idempotent: only a reservation still pending and not yet released is returned
/// to stock. The buyer's last `seq` stays as it is. Its hold (if any) goes with it, and gives no
/// second unit back if a transition already gave one. Answers how many were still pending.
/// KEYS: meta, buyers, pending, holds, deadlines, released.
const RELEASE: &str = r#"
local released = 0
for i = 1, #ARGV, 3 do
  local user, member, id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('ZSCORE', KEYS[3], member) and redis.call('SADD', KEYS[6], id) == 1 then
    released = released + 1
    local back = true
    local h = redis.call('HGET', KEYS[4], id)
    if h then
      redis.call('HDEL', KEYS[4], id)
      redis.call('ZREM', KEYS[5], id)
      local state = string.match(h, '^([^|]*)|')
      if state == 'awaiting_payment' then redis.call('HINCRBY', KEYS[1], 'awaiting', '-1')
      elseif state == 'paid' then redis.call('HINCRBY', KEYS[1], 'paid', '-1')
      else back = false end
    end
    if back then
      redis.call('HINCRBY', KEYS[1], 'remaining', '1')
      unhold(KEYS[2], user)
    end
  end
end
return released
"#;

/// Forgets a pending member (ARGV[1]) and the releases of its reservations, together, so the
/// released set only ever names reservations of members still pending. KEYS: pending, released.
const FORGET: &str = r#"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local ids, n, k = {}, 0, 0
for token in string.gmatch(ARGV[1], '%S+') do
  if k % 3 == 0 then
    n = n + 1
    ids[n] = token
  end
  k = k + 1
end
-- A member of older versions is one reservation, never released in part.
if n > 1 then redis.call('SREM', KEYS[2], unpack(ids)) end
return 1
"#;

/// Reservations pending and not released, for the auditor: a member names one reservation per
/// three words (one, as older versions wrote it). KEYS: pending, released.
const OPEN: &str = r#"
local open = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local words = 0
  for _ in string.gmatch(member, '%S+') do words = words + 1 end
  open = open + math.max(1, math.floor(words / 3))
end
return open - redis.call('SCARD', KEYS[2])
"#;

/// First writer wins: a sale already in Redis is never reset by an instance starting later.
/// KEYS: meta, buyers, holds, deadlines, and the older layout's holders and seqs. ARGV: the
/// sale's fields, the number of buyers, then `user, field` per buyer and `order id, hold,
/// pay_by` per open hold.
const LOAD: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  -- Written by an older version, which counted buyers in two hashes: merged here, once (every
  -- instance loads every sale as it starts, before it sells).
  local merged = {}
  local seqs = redis.call('HGETALL', KEYS[6])
  for j = 1, #seqs, 2 do merged[seqs[j]] = tonumber(seqs[j + 1]) * UNIT end
  local holders = redis.call('HGETALL', KEYS[5])
  for j = 1, #holders, 2 do
    local user, units = holders[j], tonumber(holders[j + 1])
    if units > 0 then merged[user] = (merged[user] or units * UNIT) + units end
  end
  for user, field in pairs(merged) do
    redis.call('HSET', KEYS[2], user, string.format('%.0f', field))
  end
  -- Freed in the background: the script blocks Redis for long enough as it is.
  if #seqs + #holders > 0 then redis.call('UNLINK', KEYS[5], KEYS[6]) end
  return 0
end
redis.call('HSET', KEYS[1], 'stock', ARGV[1], 'starts_at', ARGV[2], 'ends_at', ARGV[3], 'limit', ARGV[4],
           'remaining', ARGV[5], 'window', ARGV[6], 'awaiting', ARGV[7], 'paid', ARGV[8])
local i = 10
for _ = 1, tonumber(ARGV[9]) do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[4], ARGV[i + 2], ARGV[i])
  i = i + 3
end
return 1
"#;

/// Closes an open hold (shared by the two scripts below): `next` is paid, expired or
/// cancelled; a unit not paid for goes back to the sale in the same step.
/// KEYS: meta, buyers, holds, deadlines, settled.
const CLOSE_HOLD: &str = r#"
local function parse(h)
  return string.match(h, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
end
local function close(id, h, next, now, paid_at, pid)
  local _, seq, created, pay_by, old_paid_at, user, old_pid = parse(h)
  redis.call('HINCRBY', KEYS[1], 'awaiting', '-1')
  if next == 'paid' then
    redis.call('HINCRBY', KEYS[1], 'paid', '1')
  else
    paid_at, pid = old_paid_at, old_pid
    redis.call('HINCRBY', KEYS[1], 'remaining', '1')
    unhold(KEYS[2], user)
  end
  local closed = next .. '|' .. seq .. '|' .. created .. '|' .. pay_by .. '|' .. paid_at .. '|' .. user .. '|' .. pid
  redis.call('HSET', KEYS[3], id, closed)
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZADD', KEYS[5], now, id)
  return closed
end
"#;

/// One transition of one hold. ARGV: order id, pay|expire|cancel, now, payment id or buyer,
/// paid at.
const SETTLE: &str = r#"
local id, kind, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local h = redis.call('HGET', KEYS[3], id)
if not h then return {'unknown'} end
local state, _, _, pay_by, _, user, pid = parse(h)
if kind == 'cancel' and user ~= ARGV[4] then return {'unknown'} end
if kind == 'pay' and state == 'paid' and pid == ARGV[4] then
  if redis.call('ZSCORE', KEYS[5], id) then return {'done_unconfirmed', h} end
  return {'done', h}
end
if state ~= 'awaiting_payment' then return {'lost', h} end
if kind == 'pay' then
  if tonumber(pay_by) < now then return {'lost', h} end
  return {'won', close(id, h, 'paid', now, ARGV[5], ARGV[4])}
end
if kind == 'expire' then
  if tonumber(pay_by) > now then return {'lost', h} end
  return {'won', close(id, h, 'expired', now)}
end
return {'won', close(id, h, 'cancelled', now)}
"#;

/// Expires up to ARGV[2] holds due at ARGV[1]. KEYS[6] is the pending set: a hold whose order
/// is not yet durable is looked at again a second later instead (its order is still being
/// published, or the reconciler will publish it). Its pending member is among those scored at
/// the hold's creation, the time of the script call that made both.
const EXPIRE_DUE: &str = r#"
local now = tonumber(ARGV[1])
local function unconfirmed(id, seq, user, created)
  local older, entry = id .. ':' .. seq .. ':' .. user, ' ' .. id .. ' ' .. seq .. ' ' .. user .. ' '
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], created, created)) do
    if member == older or string.find(' ' .. member .. ' ', entry, 1, true) then return true end
  end
  return false
end
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))) do
  local h = redis.call('HGET', KEYS[3], id)
  if not h then
    redis.call('ZREM', KEYS[4], id)
  else
    local state, seq, created, _, _, user = parse(h)
    if state ~= 'awaiting_payment' then
      redis.call('ZREM', KEYS[4], id)
    elseif unconfirmed(id, seq, user, created) then
      redis.call('ZADD', KEYS[4], now + 1000, id)
    else
      table.insert(out, id)
      table.insert(out, close(id, h, 'expired', now))
    end
  end
end
return out
"#;

/// A hold as the `holds` hash keeps it.
fn encode_hold(order: &Order) -> String {
    let (paid_at, payment_id) = match &order.payment {
        Some(p) => (p.at.to_string(), p.id.as_str()),
        None => (String::new(), ""),
    };
    format!(
        "{}|{}|{}|{}|{paid_at}|{}|{payment_id}",
        order.state.as_str(),
        order.seq,
        order.created_at,
        order.pay_by.unwrap_or_default(),
        order.user_id,
    )
}

/// Reads a hold back; `None` (logged by the caller) if it is not one.
fn decode_hold(sale: SaleId, order_id: uuid::Uuid, raw: &str) -> Option<Order> {
    let mut f = raw.splitn(7, '|');
    let state = OrderState::parse(f.next()?)?;
    let seq = f.next()?.parse().ok()?;
    let created_at = f.next()?.parse().ok()?;
    let pay_by = f.next()?.parse().ok()?;
    let paid_at = f.next()?;
    let user_id = UserId::parse(f.next()?).ok()?;
    let payment_id = f.next()?;
    let payment = if payment_id.is_empty() {
        None
    } else {
        Some(Payment {
            id: payment_id.to_owned(),
            at: paid_at.parse().ok()?,
        })
    };
    Some(Order {
        order_id,
        sale_id: sale,
        user_id,
        seq,
        created_at,
        state,
        pay_by: Some(pay_by),
        payment,
    })
}

fn decode_logged(sale: SaleId, order_id: uuid::Uuid, raw: &str) -> Option<Order> {
    let order = decode_hold(sale, order_id, raw);
    if order.is_none() {
        tracing::error!(sale = %sale, order = %order_id, hold = raw, "unreadable hold left in place");
    }
    order
}

/// A script call's winners as Redis keeps them pending: one member for all of them (see
/// `RESERVE`), forgotten once each is confirmed durable or released. A stampede's
/// confirmations then cost Redis one `ZREM` member per call instead of one per purchase.
pub struct PendingGroup {
    keys: Arc<SaleKeys>,
    member: String,
    /// Reservations of the group neither confirmed nor released yet.
    open: AtomicUsize,
    /// One of them was released: the member then goes together with its releases (`FORGET`).
    released: AtomicBool,
}

impl std::fmt::Debug for PendingGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.keys.pending, self.member)
    }
}

/// Two reservations share a group when they share the very same one.
impl PartialEq for PendingGroup {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for PendingGroup {}

impl PendingGroup {
    /// The group of `winners` (order id, seq, buyer, in the call's order), as [`RESERVE`] writes
    /// its member; `None` for a call nobody won.
    fn of<'a>(
        keys: &Arc<SaleKeys>,
        winners: impl Iterator<Item = (uuid::Uuid, u32, &'a UserId)>,
    ) -> Option<Arc<PendingGroup>> {
        let mut member = String::new();
        let mut open = 0;
        for (order_id, seq, user) in winners {
            use std::fmt::Write;
            if open > 0 {
                member.push(' ');
            }
            let _ = write!(member, "{} {seq} {user}", order_id.hyphenated());
            open += 1;
        }
        (open > 0).then(|| {
            Arc::new(PendingGroup {
                keys: Arc::clone(keys),
                member,
                open: AtomicUsize::new(open),
                released: AtomicBool::new(false),
            })
        })
    }

    /// One reservation of the group is confirmed or released; after the last one, the group
    /// is queued to be forgotten (a full queue leaves it to the reconciler, which re-publishes
    /// orders already stored: the store ignores them).
    fn settle_one(self: &Arc<Self>, confirmations: &mpsc::Sender<Confirmed>) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = confirmations.try_send(Confirmed::Group(Arc::clone(self)));
        }
    }
}

/// The reservations a pending member names: `order_id seq user` each, or `order_id:seq:user`
/// alone as older versions wrote it. `None` for a member that is neither.
fn pending_entries(member: &str) -> Option<Vec<(uuid::Uuid, u32, UserId)>> {
    let entry = |id: &str, seq: &str, user: &str| {
        Some((
            uuid::Uuid::parse_str(id).ok()?,
            seq.parse().ok()?,
            UserId::parse(user).ok()?,
        ))
    };
    if !member.contains(' ') {
        let mut parts = member.splitn(3, ':');
        return Some(vec![entry(parts.next()?, parts.next()?, parts.next()?)?]);
    }
    let tokens: Vec<&str> = member.split(' ').collect();
    if !tokens.len().is_multiple_of(3) {
        return None;
    }
    tokens.chunks_exact(3).map(|e| entry(e[0], e[1], e[2])).collect()
}

/// What a buyer's last `seq` counts for in their `buyers` field: `UNIT` in [`BUYERS`].
const SEQ_UNIT: u64 = 1 << 20;

/// A buyer's `buyers` field (see [`BUYERS`]).
fn buyers_field(holding: &Holding) -> u64 {
    u64::from(holding.last_seq.max(holding.held)) * SEQ_UNIT + u64::from(holding.held)
}

/// The keys of one shard of a sale (the only one, for most sales) and its group task.
struct SaleKeys {
    /// Which of the sale's shards this is.
    index: usize,
    meta: String,
    buyers: String,
    pending: String,
    released: String,
    holds: String,
    deadlines: String,
    settled: String,
    outbox: String,
    inbox: String,
    /// Until when this shard (and so far as this instance saw, every shard of the sale) has no
    /// units: a unit coming back here clears it.
    sold_out_until: AtomicI64,
    /// Moves of units into this shard so far, and the turn to make one: a dry shard's buyers
    /// wait for one move instead of each making their own.
    refills: AtomicU64,
    refilling: tokio::sync::Mutex<()>,
    /// The sale's group task (see [`run_groups`]): every purchase and release of the sale on
    /// this instance goes through it. Unbounded because the engine's limit on purchases in
    /// flight already bounds it; a bounded queue would add a second place to shed load.
    asks: mpsc::UnboundedSender<Ask>,
}

impl SaleKeys {
    /// A key of this shard that only older versions wrote (see [`LOAD`]).
    fn older_layout(&self, name: &str) -> String {
        format!("{}{name}", self.meta.strip_suffix("meta").unwrap_or(&self.meta))
    }

    fn new(prefix: &str, tag: &str, index: usize, asks: mpsc::UnboundedSender<Ask>) -> Self {
        let base = format!("{prefix}:{{{tag}}}");
        SaleKeys {
            index,
            meta: format!("{base}:meta"),
            buyers: format!("{base}:buyers"),
            pending: format!("{base}:pending"),
            released: format!("{base}:released"),
            holds: format!("{base}:holds"),
            deadlines: format!("{base}:deadlines"),
            settled: format!("{base}:settled"),
            outbox: format!("{base}:outbox"),
            inbox: format!("{base}:inbox"),
            sold_out_until: AtomicI64::new(0),
            refills: AtomicU64::new(0),
            refilling: tokio::sync::Mutex::new(()),
            asks,
        }
    }
}

/// A sale's shards as this instance knows them.
struct SaleShards {
    shards: Vec<Arc<SaleKeys>>,
}

impl SaleShards {
    /// Where `user`'s units and per-user count live.
    fn home(&self, user: &UserId) -> &Arc<SaleKeys> {
        match self.shards.as_slice() {
            [only] => only,
            shards => &shards[shards::home_shard(user.as_str(), shards.len() as u16)],
        }
    }

    /// The sale was found without units on any shard, recently.
    fn sold_out(&self, now: Millis) -> bool {
        self.shards
            .iter()
            .all(|s| now < s.sold_out_until.load(Ordering::Relaxed))
    }

    fn mark_sold_out(&self, until: Millis) {
        for shard in &self.shards {
            shard.sold_out_until.store(until, Ordering::Relaxed);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<SaleKeys>> {
        self.shards.iter()
    }
}

/// Most times one purchase is sent again to its home shard after units moved there and others
/// took them first; past that it hears "sold out" (only a sale whose last units are contended
/// by far more buyers than units gets here).
const MAX_REFILLED_TRIES: usize = 64;

/// Most purchases (or releases) of one sale sent in one script call: bounds the script's
/// run time in Redis, which serves nothing else meanwhile.
const MAX_GROUP: usize = 512;

/// What a purchase or a release asks of its sale's group task.
enum Ask {
    Reserve {
        user: UserId,
        now: Millis,
        order_id: uuid::Uuid,
        /// The buyer comes back with the answer (moved in and out, so a purchase clones its id
        /// once).
        answer: Answer,
    },
    Release {
        user: UserId,
        order_id: uuid::Uuid,
        group: Arc<PendingGroup>,
        answer: Option<oneshot::Sender<Result<(), BackendError>>>,
    },
    /// A read of the units left (`None`: Redis does not have the sale).
    Remaining {
        answer: oneshot::Sender<Result<Option<i64>, BackendError>>,
    },
}

/// Where a purchase hears its answer: its buyer back and the script's answer for them.
type Answer = oneshot::Sender<(UserId, Result<Granted, BackendError>)>;

/// A purchase in the group being sent: buyer, time, order id, where to answer.
type PendingReserve = (UserId, Millis, uuid::Uuid, Answer);

/// The script's answer for one buyer.
struct Granted {
    /// Units left after this buyer's, or the refusal's code as [`RESERVE`] says (negative).
    code: i64,
    seq: u32,
    pay_by: Millis,
    /// The group's time, which Redis decided and recorded the purchase at.
    at: Millis,
    /// The winners' pending group (`None` for a refusal).
    group: Option<Arc<PendingGroup>>,
}

/// One sale's purchases and releases, grouped: whatever queued while the previous call was in
/// flight, or was asked within one scheduler turn of the first, goes to Redis as one script
/// call (one for the purchases, one for the releases), so a stampede on one sale costs Redis
/// one round trip per group instead of one per buyer. Reads of the units left (every
/// waiting-room join and poll asks) are grouped the same way: one read sent after each of them
/// was asked answers them all. An idle sale's first purchase goes out at once: nothing waits on
/// a timer. The task runs the call whatever happens to the buyers' requests; a reservation whose
/// buyer went away before hearing of it is released (its order was never published).
async fn run_groups(
    conn: Connection,
    reserve: Script,
    release: Script,
    replication: Replication,
    confirmations: mpsc::Sender<Confirmed>,
    keys: std::sync::Weak<SaleKeys>,
    mut asks: mpsc::UnboundedReceiver<Ask>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut buyers = Vec::with_capacity(MAX_GROUP);
    let mut releases = Vec::new();
    let mut reads = Vec::new();
    while next_group(&mut asks, &mut group, MAX_GROUP).await > 0 {
        // The askers hold the keys while they wait; none left means nobody waits for an answer.
        let Some(keys) = keys.upgrade() else { break };
        for ask in group.drain(..) {
            match ask {
                Ask::Reserve {
                    user,
                    now,
                    order_id,
                    answer,
                } => buyers.push((user, now, order_id, answer)),
                Ask::Release {
                    user,
                    order_id,
                    group,
                    answer,
                } => releases.push((user, order_id, group, answer)),
                Ask::Remaining { answer } => reads.push(answer),
            }
        }
        let (granted, released, left) = futures::future::join3(
            reserve_group(&conn, &reserve, &keys, &buyers),
            release_group(&conn, &release, &keys, &releases),
            read_remaining(&conn, &keys, reads.len()),
        )
        .await;
        answer_releases(&keys, &mut releases, released, &confirmations);
        for answer in reads.drain(..) {
            let _ = answer.send(match &left {
                Ok(left) => Ok(*left),
                Err(e) => Err(BackendError::unavailable(Role::Gate, e.to_string())),
            });
        }
        let mut granted = match granted {
            Ok(granted) => granted,
            Err(e) => {
                fail_group(&mut buyers, &e);
                continue;
            }
        };
        let winners = buyers.iter().zip(&granted).filter(|(_, g)| g.code >= 0);
        if let Some(group) = PendingGroup::of(&keys, winners.map(|((user, _, id, _), g)| (*id, g.seq, user))) {
            for g in granted.iter_mut().filter(|g| g.code >= 0) {
                g.group = Some(Arc::clone(&group));
            }
        }
        // With replicas asked for, a win is answered once they have it; if they do not, it
        // stays pending on the master, the buyer hears the outcome is unknown, and the
        // reconciler decides it (publishes it if it survived).
        let replicated = if granted.iter().any(|g| g.code >= 0) {
            match replication.reached(&conn).await {
                Ok(true) => None,
                Ok(false) => Some(not_replicated(replication.replicas)),
                Err(e) => Some(e.to_string()),
            }
        } else {
            None
        };
        for ((user, _, order_id, answer), granted) in buyers.drain(..).zip(granted) {
            let won = granted.code >= 0;
            if let (true, Some(cause)) = (won, &replicated) {
                let _ = answer.send((user, Err(BackendError::outcome_unknown(Role::Gate, cause.clone()))));
                continue;
            }
            if let Err((user, Ok(Granted { group: Some(group), .. }))) = answer.send((user, Ok(granted))) {
                // Queued for the next group, which this very ask makes non-empty.
                let _ = keys.asks.send(Ask::Release {
                    user,
                    order_id,
                    group,
                    answer: None,
                });
            }
        }
    }
}

/// A call that failed before reaching Redis took nothing. One that timed out or lost its
/// connection may have run: its reservations are then pending in Redis and the reconciler will
/// publish them, so the buyers are told the outcome is unknown.
fn fail_group(buyers: &mut Vec<PendingReserve>, e: &redis::RedisError) {
    let unknown = e.is_timeout() || e.is_connection_dropped();
    let cause = e.to_string();
    for (user, _, _, answer) in buyers.drain(..) {
        let error = if unknown {
            BackendError::outcome_unknown(Role::Gate, cause.clone())
        } else {
            BackendError::unavailable(Role::Gate, cause.clone())
        };
        let _ = answer.send((user, Err(error)));
    }
}

/// One call deciding `buyers` in order; their answers in the same order.
async fn reserve_group(
    conn: &Connection,
    script: &Script,
    keys: &SaleKeys,
    buyers: &[PendingReserve],
) -> Result<Vec<Granted>, redis::RedisError> {
    if buyers.is_empty() {
        return Ok(Vec::new());
    }
    let mut invocation = script.prepare_invoke();
    invocation
        .key(&keys.meta)
        .key(&keys.buyers)
        .key(&keys.pending)
        .key(&keys.holds)
        .key(&keys.deadlines);
    // The latest of the buyers' times: no purchase is decided before it arrived.
    let at = buyers.iter().map(|(_, now, _, _)| *now).max().unwrap_or_default();
    invocation.arg(at);
    let mut id_buf = uuid::Uuid::encode_buffer();
    for (user, _, order_id, _) in buyers {
        invocation
            .arg(user.as_str())
            .arg(&*order_id.hyphenated().encode_lower(&mut id_buf));
    }
    METRICS.observe_redis_call(RedisCall::Reserve, buyers.len());
    let flat: Vec<i64> = invocation.invoke_async(&mut conn.clone()).await?;
    granted_from(&flat, buyers.len(), at)
        .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::TypeError, "reserve: an answer per buyer expected")))
}

/// Each buyer's outcome from [`RESERVE`]'s answer for `buyers` decided at `at`.
fn granted_from(flat: &[i64], buyers: usize, at: Millis) -> Option<Vec<Granted>> {
    let granted = |code, seq, pay_by| Granted {
        code,
        seq,
        pay_by,
        at,
        group: None,
    };
    if let [-1] = flat {
        return Some((0..buyers).map(|_| granted(-1, 0, 0)).collect());
    }
    let [remaining, window, outcomes @ ..] = flat else {
        return None;
    };
    if outcomes.len() != buyers {
        return None;
    }
    let (mut remaining, pay_by) = (*remaining, if *window > 0 { at + window } else { 0 });
    outcomes
        .iter()
        .map(|&outcome| match outcome {
            ..=-1 => Some(granted(outcome, 0, 0)),
            0 => None,
            seq => {
                remaining -= 1;
                Some(granted(remaining, u32::try_from(seq).ok()?, pay_by))
            }
        })
        .collect()
}

/// One read of the units left, for `readers` asking at once (none: no call).
async fn read_remaining(conn: &Connection, keys: &SaleKeys, readers: usize) -> Result<Option<i64>, redis::RedisError> {
    if readers == 0 {
        return Ok(None);
    }
    METRICS.observe_redis_call(RedisCall::Remaining, readers);
    conn.clone().hget(&keys.meta, "remaining").await
}

type PendingRelease = (
    UserId,
    uuid::Uuid,
    Arc<PendingGroup>,
    Option<oneshot::Sender<Result<(), BackendError>>>,
);

/// One call giving `releases` back.
async fn release_group(
    conn: &Connection,
    script: &Script,
    keys: &SaleKeys,
    releases: &[PendingRelease],
) -> Result<(), redis::RedisError> {
    if releases.is_empty() {
        return Ok(());
    }
    let mut invocation = script.prepare_invoke();
    invocation
        .key(&keys.meta)
        .key(&keys.buyers)
        .key(&keys.pending)
        .key(&keys.holds)
        .key(&keys.deadlines)
        .key(&keys.released);
    for (user, order_id, group, _) in releases {
        invocation
            .arg(user.as_str())
            .arg(&group.member)
            .arg(order_id.hyphenated().to_string());
    }
    METRICS.observe_redis_call(RedisCall::Release, releases.len());
    let _: i64 = invocation.invoke_async(&mut conn.clone()).await?;
    Ok(())
}

fn answer_releases(
    keys: &SaleKeys,
    releases: &mut Vec<PendingRelease>,
    result: Result<(), redis::RedisError>,
    confirmations: &mpsc::Sender<Confirmed>,
) {
    if releases.is_empty() {
        return;
    }
    match &result {
        // A unit came back: another buyer may have it at once.
        Ok(()) => keys.sold_out_until.store(0, Ordering::Relaxed),
        Err(e) => {
            tracing::warn!(error = %e, releases = releases.len(), "could not release reservations; the reconciler publishes them")
        }
    }
    for (_, _, group, answer) in releases.drain(..) {
        // Only a release Redis made settles its share: one that failed stays pending for the
        // reconciler.
        if result.is_ok() {
            group.released.store(true, Ordering::Relaxed);
            group.settle_one(confirmations);
        }
        if let Some(answer) = answer {
            let _ = answer.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(BackendError::unavailable(Role::Gate, e.to_string())),
            });
        }
    }
}

/// One Redis node or a Redis Cluster. The cluster client routes each command and script by the
/// slot of its keys, so the gate's code is the same for both.
#[derive(Clone)]
pub(crate) enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Node(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Node(c) => c.req_packed_commands(pipe, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipe, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the gate's Redis is: one node, or the nodes a cluster client starts from (it learns
/// the rest of the cluster from them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Node(String),
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// `--redis-url` as `--redis-cluster` reads it: one URL, or with the switch, one or more
    /// URLs of cluster nodes separated by commas.
    pub fn parse(urls: &str, cluster: bool) -> Result<Self, String> {
        let mut nodes: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if nodes.is_empty() {
            return Err("--redis-url names no Redis".into());
        }
        if cluster {
            return Ok(RedisTarget::Cluster(nodes));
        }
        match nodes.pop() {
            Some(url) if nodes.is_empty() => Ok(RedisTarget::Node(url)),
            _ => Err("--redis-url names several nodes: a Redis Cluster needs --redis-cluster".into()),
        }
    }

    /// For logs and errors: the URLs without their passwords.
    pub fn redacted(&self) -> String {
        match self {
            RedisTarget::Node(url) => crate::config::redact_url(url),
            RedisTarget::Cluster(nodes) => {
                let nodes: Vec<String> = nodes.iter().map(|u| crate::config::redact_url(u)).collect();
                format!("cluster {}", nodes.join(","))
            }
        }
    }
}

pub struct RedisGate {
    conn: Connection,
    prefix: String,
    sales: DashMap<SaleId, Arc<SaleShards>>,
    reserve: Script,
    release: Script,
    forget: Script,
    open: Script,
    load: Script,
    settle: Script,
    expire_due: Script,
    take: Script,
    give: Script,
    confirmations: mpsc::Sender<Confirmed>,
    replication: Replication,
}

/// How many replicas must have a decision before it is answered, and how long to wait for them.
#[derive(Clone, Copy)]
struct Replication {
    replicas: u32,
    wait_ms: u64,
}

impl Replication {
    /// Whether the writes made on `conn` so far reached the replicas asked for (`WAIT`; on a
    /// cluster it goes to every master, which answers for what this connection wrote to it).
    /// `Ok(true)` at once when none are asked for.
    async fn reached(self, conn: &Connection) -> Result<bool, redis::RedisError> {
        if self.replicas == 0 {
            return Ok(true);
        }
        METRICS.observe_redis_call(RedisCall::Wait, 1);
        let acked: i64 = redis::cmd("WAIT")
            .arg(self.replicas)
            .arg(self.wait_ms)
            .query_async(&mut conn.clone())
            .await?;
        Ok(acked >= i64::from(self.replicas))
    }
}

/// Why a decision is answered as an unknown outcome: the master has it, its replicas may not.
fn not_replicated(replicas: u32) -> String {
    format!("redis: the master has it, but not {replicas} replica(s) within the wait")
}

/// What [`confirm_in_batches`] clears: a reservation now durable, or a transition now durable.
enum Confirmed {
    /// Every reservation of the group is confirmed or released.
    Group(Arc<PendingGroup>),
    Transition(Arc<SaleKeys>, uuid::Uuid),
}

fn unavailable(e: redis::RedisError) -> BackendError {
    BackendError::unavailable(Role::Gate, e)
}

impl RedisGate {
    /// The gate's connection (a cheap clone of a multiplexed one), for what shares its Redis:
    /// the waiting room talks to the same node or cluster.
    pub(crate) fn connection(&self) -> Connection {
        self.conn.clone()
    }

    /// Connects with bounded timeouts: a dead Redis (or cluster node) costs a buyer at most
    /// `timeout`, then 503.
    pub async fn connect(target: &RedisTarget, prefix: &str, timeout: Duration) -> Result<Self, BackendError> {
        let connecting = async {
            Ok::<_, redis::RedisError>(match target {
                RedisTarget::Node(url) => {
                    let client = redis::Client::open(url.as_str())?;
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(timeout)
                        .set_response_timeout(timeout)
                        .set_number_of_retries(1);
                    Connection::Node(ConnectionManager::new_with_config(client, config).await?)
                }
                RedisTarget::Cluster(nodes) => {
                    let client = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                        .connection_timeout(timeout)
                        .response_timeout(timeout)
                        .retries(1)
                        .build()?;
                    Connection::Cluster(client.get_async_connection().await?)
                }
            })
        };
        let conn = tokio::time::timeout(timeout * 3, connecting)
            .await
            .map_err(|_| {
                BackendError::unavailable(
                    Role::Gate,
                    format!("redis: no answer from {} within {:?}", target.redacted(), timeout * 3),
                )
            })?
            .map_err(unavailable)?;
        let (confirmations, pending) = mpsc::channel(65_536);
        let gate = RedisGate {
            conn,
            prefix: prefix.to_owned(),
            sales: DashMap::new(),
            reserve: Script::new(&format!("{BUYERS}{RESERVE}")),
            release: Script::new(&format!("{BUYERS}{RELEASE}")),
            forget: Script::new(FORGET),
            open: Script::new(OPEN),
            load: Script::new(&format!("{BUYERS}{LOAD}")),
            settle: Script::new(&format!("{BUYERS}{CLOSE_HOLD}{SETTLE}")),
            expire_due: Script::new(&format!("{BUYERS}{CLOSE_HOLD}{EXPIRE_DUE}")),
            take: Script::new(shards::TAKE),
            give: Script::new(shards::GIVE),
            confirmations,
            replication: Replication {
                replicas: 0,
                // Inside the call's own timeout, so the answer is WAIT's, not a dropped call.
                wait_ms: (timeout.as_millis() / 2) as u64,
            },
        };
        tokio::spawn(confirm_in_batches(gate.conn.clone(), gate.forget.clone(), pending));
        Ok(gate)
    }

    /// Every reservation and transition is answered only once `replicas` replicas have it.
    pub fn with_replica_acks(mut self, replicas: u32) -> Self {
        self.replication.replicas = replicas;
        self
    }

    /// The shards of `id`: known here, or their count read from Redis (a sale another instance
    /// created; absent there: one shard).
    async fn sale(&self, id: SaleId) -> Result<Arc<SaleShards>, BackendError> {
        if let Some(sale) = self.sales.get(&id) {
            return Ok(Arc::clone(&sale));
        }
        let count: Option<u16> = self
            .conn
            .clone()
            .hget(self.shard_counts_key(), id.0)
            .await
            .map_err(unavailable)?;
        Ok(self.sale_with(id, count.unwrap_or(1)))
    }

    /// The shards of `id`, split `count` ways, each with its group task, set up here once.
    fn sale_with(&self, id: SaleId, count: u16) -> Arc<SaleShards> {
        let count = count.max(1);
        let set_up = || {
            let shards = shards::tags(id, count)
                .iter()
                .enumerate()
                .map(|(index, tag)| {
                    let (asks, queued) = mpsc::unbounded_channel();
                    let keys = Arc::new(SaleKeys::new(&self.prefix, tag, index, asks));
                    // Ends once the keys are forgotten (the sale left Redis) and the last asker
                    // is gone.
                    tokio::spawn(run_groups(
                        self.conn.clone(),
                        self.reserve.clone(),
                        self.release.clone(),
                        self.replication,
                        self.confirmations.clone(),
                        Arc::downgrade(&keys),
                        queued,
                    ));
                    keys
                })
                .collect();
            Arc::new(SaleShards { shards })
        };
        let mut sale = self.sales.entry(id).or_insert_with(set_up);
        if sale.shards.len() != usize::from(count) {
            *sale = set_up();
        }
        Arc::clone(&sale)
    }

    /// The shards of `id` if this instance has met the sale (what the sync calls can use).
    fn known(&self, id: SaleId) -> Option<Arc<SaleShards>> {
        self.sales.get(&id).map(|sale| Arc::clone(&sale))
    }

    fn sales_key(&self) -> String {
        format!("{}:sales", self.prefix)
    }

    fn shard_counts_key(&self) -> String {
        format!("{}:stock_shards", self.prefix)
    }

    /// Every sale the gate knows in Redis (created by any instance).
    pub async fn sale_ids(&self) -> Result<Vec<SaleId>, BackendError> {
        let ids: Vec<i64> = self
            .conn
            .clone()
            .smembers(self.sales_key())
            .await
            .map_err(unavailable)?;
        Ok(ids.into_iter().map(SaleId).collect())
    }

    /// The reservations of `sale` pending since before `older_than` (their instance has probably
    /// died with them), by pending member, without those released; an order's `created_at` is
    /// its reservation time.
    pub async fn stale(&self, sale: SaleId, older_than: Millis) -> Result<Vec<Stale>, BackendError> {
        let mut stale = Vec::new();
        for keys in self.sale(sale).await?.iter() {
            stale.extend(self.stale_on(keys, sale, older_than).await?);
        }
        Ok(stale)
    }

    async fn stale_on(
        &self,
        keys: &Arc<SaleKeys>,
        sale: SaleId,
        older_than: Millis,
    ) -> Result<Vec<Stale>, BackendError> {
        let members: Vec<(String, i64)> = self
            .conn
            .clone()
            .zrangebyscore_limit_withscores(&keys.pending, "-inf", older_than, 0, 1000)
            .await
            .map_err(unavailable)?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let released: Vec<String> = self.conn.clone().smembers(&keys.released).await.map_err(unavailable)?;
        let released: std::collections::HashSet<uuid::Uuid> = released
            .iter()
            .filter_map(|id| uuid::Uuid::parse_str(id).ok())
            .collect();
        let mut stale = Vec::with_capacity(members.len());
        for (member, reserved_at) in members {
            let Some(entries) = pending_entries(&member) else {
                tracing::error!(sale = %sale, %member, "unreadable pending reservation left in place");
                continue;
            };
            let orders = entries
                .into_iter()
                .filter(|(order_id, _, _)| !released.contains(order_id))
                .map(|(order_id, seq, user_id)| Order {
                    order_id,
                    sale_id: sale,
                    user_id,
                    seq,
                    created_at: reserved_at,
                    state: OrderState::Confirmed,
                    pay_by: None,
                    payment: None,
                })
                .collect();
            stale.push(Stale {
                orders,
                keys: Arc::clone(keys),
                member,
            });
        }
        // An order with a payment step is published as the hold it is.
        let ids: Vec<String> = stale
            .iter()
            .flat_map(|s| &s.orders)
            .map(|o| o.order_id.hyphenated().to_string())
            .collect();
        if !ids.is_empty() {
            let mut holds = self.read_holds(keys, &ids).await?.into_iter();
            for order in stale.iter_mut().flat_map(|s| &mut s.orders) {
                if let Some(held) = holds
                    .next()
                    .flatten()
                    .and_then(|h| decode_logged(sale, order.order_id, &h))
                {
                    *order = held;
                }
            }
        }
        Ok(stale)
    }

    /// The holds of `ids` as the `holds` hash keeps them (`None` where it has none).
    async fn read_holds(&self, keys: &SaleKeys, ids: &[String]) -> Result<Vec<Option<String>>, BackendError> {
        redis::cmd("HMGET")
            .arg(&keys.holds)
            .arg(ids)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Forgets stale pending reservations at once (the reconciler, after re-publishing them).
    pub async fn forget(&self, stale: &Stale) -> Result<(), BackendError> {
        forget_group(&mut self.conn.clone(), &self.forget, &stale.keys, &stale.member)
            .await
            .map_err(unavailable)
    }

    /// Gives the units of every move of `sale` between its shards that was cut off (taken from
    /// one shard before `older_than`, never given to the other) to the shard they were for.
    /// Returns how many moves it finished.
    pub async fn finish_moves(&self, sale: SaleId, older_than: Millis) -> Result<usize, BackendError> {
        let sale = self.sale(sale).await?;
        if sale.shards.len() == 1 {
            return Ok(0);
        }
        let mut finished = 0;
        for from in sale.iter() {
            let moves: Vec<(String, String)> = self.conn.clone().hgetall(&from.outbox).await.map_err(unavailable)?;
            for (id, entry) in moves {
                let Some((to, units, at)) = shards::parse_move(&entry) else {
                    tracing::error!(outbox = %from.outbox, %id, %entry, "unreadable move left in place");
                    continue;
                };
                let Some(to) = sale.shards.get(to).filter(|_| at < older_than) else {
                    continue;
                };
                self.give(from, to, &id, units).await?;
                finished += 1;
            }
        }
        Ok(finished)
    }

    /// One transition of a hold on one shard ([`Settlement::Unknown`]: not there).
    async fn settle_on(
        &self,
        keys: &SaleKeys,
        sale: SaleId,
        order_id: uuid::Uuid,
        transition: &Transition,
        now: Millis,
    ) -> Result<Settlement, BackendError> {
        let mut invocation = self.settle.prepare_invoke();
        invocation
            .key(&keys.meta)
            .key(&keys.buyers)
            .key(&keys.holds)
            .key(&keys.deadlines)
            .key(&keys.settled)
            .arg(order_id.hyphenated().to_string());
        match transition {
            Transition::Pay(payment) => invocation.arg("pay").arg(now).arg(&payment.id).arg(payment.at),
            Transition::Expire => invocation.arg("expire").arg(now).arg("").arg(""),
            Transition::Cancel { by } => invocation.arg("cancel").arg(now).arg(by.as_str()).arg(""),
        };
        METRICS.observe_redis_call(RedisCall::Settle, 1);
        let answer: Vec<String> = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let (outcome, hold) = match answer.as_slice() {
            [outcome] => (outcome.as_str(), None),
            [outcome, hold] => (outcome.as_str(), Some(hold.as_str())),
            _ => {
                return Err(BackendError::fault(
                    Role::Gate,
                    "redis: unexpected answer to a settlement",
                ))
            }
        };
        let order = match hold {
            None => return Ok(Settlement::Unknown),
            Some(raw) => decode_hold(sale, order_id, raw).ok_or_else(|| {
                BackendError::fault(Role::Gate, format!("redis: unreadable hold of order {order_id}"))
            })?,
        };
        if outcome == "won" && order.state != OrderState::Paid {
            keys.sold_out_until.store(0, Ordering::Relaxed);
        }
        // A payment a failover could undo would let its unit expire and sell again.
        if outcome == "won" && !self.replication.reached(&self.conn).await.map_err(unavailable)? {
            return Err(BackendError::outcome_unknown(
                Role::Gate,
                not_replicated(self.replication.replicas),
            ));
        }
        Ok(match outcome {
            "won" => Settlement::Won(order),
            "done" => Settlement::AlreadyDone {
                order,
                unconfirmed: false,
            },
            "done_unconfirmed" => Settlement::AlreadyDone {
                order,
                unconfirmed: true,
            },
            _ => Settlement::Lost(order),
        })
    }

    /// Moves units into `sale`'s shard `dry`, whose buyer just heard it has none, from the
    /// shard with the most. Returns whether `dry` may have units now (moved by this call or by
    /// a concurrent one); `false`: no shard has any.
    async fn refill(&self, sale: &SaleShards, dry: &SaleKeys) -> Result<bool, BackendError> {
        let seen = dry.refills.load(Ordering::Acquire);
        let _turn = dry.refilling.lock().await;
        if dry.refills.load(Ordering::Acquire) != seen {
            return Ok(true);
        }
        loop {
            let left = futures::future::try_join_all(sale.iter().map(|keys| shard_remaining(keys))).await?;
            let left: Vec<i64> = left.into_iter().map(|n| n.unwrap_or(0)).collect();
            if left[dry.index] > 0 {
                // A unit came back to it meanwhile.
                return Ok(true);
            }
            let Some((donor, most)) = left
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != dry.index)
                .max_by_key(|(_, n)| **n)
                .map(|(k, n)| (k, *n))
            else {
                return Ok(false);
            };
            if most <= 0 {
                return Ok(false);
            }
            // Half, so shards that run dry one after another do not pass the same units along.
            if self.move_units(&sale.shards[donor], dry, (most + 1) / 2).await? > 0 {
                dry.refills.fetch_add(1, Ordering::AcqRel);
                return Ok(true);
            }
        }
    }

    /// Moves up to `units` from `from` to `to`; returns how many moved.
    async fn move_units(&self, from: &SaleKeys, to: &SaleKeys, units: i64) -> Result<i64, BackendError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let taken: i64 = self
            .take
            .key(&from.meta)
            .key(&from.outbox)
            .arg(&id)
            .arg(units)
            .arg(to.index)
            .arg(now_millis())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        METRICS.observe_redis_call(RedisCall::Transfer, taken.max(0) as usize);
        if taken > 0 {
            self.give(from, to, &id, taken).await?;
        }
        Ok(taken)
    }

    /// The second half of a move: gives its units to `to` (once, whoever calls), then clears it
    /// from `from`'s outbox.
    async fn give(&self, from: &SaleKeys, to: &SaleKeys, id: &str, units: i64) -> Result<(), BackendError> {
        let given: i64 = self
            .give
            .key(&to.meta)
            .key(&to.inbox)
            .arg(id)
            .arg(units)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        METRICS.observe_redis_call(RedisCall::Transfer, units.max(0) as usize);
        if given < 0 {
            // The shard is gone from Redis: the move waits in the outbox for it to be loaded.
            return Err(BackendError::unavailable(
                Role::Gate,
                format!("redis: {} is missing; the move of {units} unit(s) waits", to.meta),
            ));
        }
        to.sold_out_until.store(0, Ordering::Relaxed);
        let _: i64 = self.conn.clone().hdel(&from.outbox, id).await.map_err(unavailable)?;
        Ok(())
    }
}

/// The units left on one shard, read through its group task (so concurrent readers share one
/// read); `None`: Redis does not have the shard.
async fn shard_remaining(keys: &SaleKeys) -> Result<Option<i64>, BackendError> {
    let (answer, answered) = oneshot::channel();
    keys.asks
        .send(Ask::Remaining { answer })
        .map_err(|_| BackendError::fault(Role::Gate, "the sale's group task has stopped"))?;
    answered
        .await
        .map_err(|_| BackendError::unavailable(Role::Gate, "the sale's group task dropped a read"))?
}

/// The least time between two rounds of confirmations.
const CONFIRM_EVERY: Duration = Duration::from_millis(5);

/// Most confirmations one round sends.
const CONFIRM_BATCH: usize = 8192;

/// Reservations pending since before the reconciler's cut-off under one member, to re-publish
/// and then forget together ([`RedisGate::forget`]).
pub struct Stale {
    /// Their orders, without those released.
    pub orders: Vec<Order>,
    keys: Arc<SaleKeys>,
    member: String,
}

/// What one sale's confirmations clear in a round: its keys, its pending groups and its
/// settled ids.
type ToClear = (Arc<SaleKeys>, Vec<Arc<PendingGroup>>, Vec<String>);

/// Confirmations leave the buy path: whatever queued goes out as one `ZREM` of many members
/// per sale and set, in one pipeline and round trip per sale. Per sale because a cluster
/// refuses a pipeline whose keys span hash slots; the pipelines of a batch go out together.
/// A group with a release goes with its releases, in a call of its own (releases are rare).
async fn confirm_in_batches(conn: Connection, forget: Script, mut rx: mpsc::Receiver<Confirmed>) {
    let mut batch = Vec::with_capacity(CONFIRM_BATCH);
    let mut sales: Vec<ToClear> = Vec::new();
    let mut with_releases = Vec::new();
    while rx.recv_many(&mut batch, CONFIRM_BATCH).await > 0 {
        for confirmed in batch.drain(..) {
            let keys = match &confirmed {
                Confirmed::Group(group) if group.released.load(Ordering::Relaxed) => {
                    with_releases.push(Arc::clone(group));
                    continue;
                }
                Confirmed::Group(group) => &group.keys,
                Confirmed::Transition(keys, _) => keys,
            };
            // A batch holds few sales: a linear search beats a map.
            let at = match sales.iter().position(|(k, _, _)| Arc::ptr_eq(k, keys)) {
                Some(at) => at,
                None => {
                    sales.push((Arc::clone(keys), Vec::new(), Vec::new()));
                    sales.len() - 1
                }
            };
            match confirmed {
                Confirmed::Group(group) => sales[at].1.push(group),
                Confirmed::Transition(_, order_id) => sales[at].2.push(order_id.hyphenated().to_string()),
            }
        }
        let pipes: Vec<redis::Pipeline> = sales
            .drain(..)
            .map(|(keys, pending, settled)| {
                METRICS.observe_redis_call(RedisCall::Confirm, pending.len() + settled.len());
                let mut pipe = redis::pipe();
                if !pending.is_empty() {
                    let members: Vec<&str> = pending.iter().map(|g| g.member.as_str()).collect();
                    pipe.zrem(&keys.pending, members).ignore();
                }
                if !settled.is_empty() {
                    pipe.zrem(&keys.settled, settled).ignore();
                }
                pipe
            })
            .collect();
        let sent = pipes.iter().map(|pipe| {
            let mut conn = conn.clone();
            async move { pipe.query_async::<()>(&mut conn).await }
        });
        let forgotten = with_releases.drain(..).map(|group| {
            let mut conn = conn.clone();
            let forget = &forget;
            async move { forget_group(&mut conn, forget, &group.keys, &group.member).await }
        });
        let (sent, forgotten) =
            futures::future::join(futures::future::join_all(sent), futures::future::join_all(forgotten)).await;
        for result in sent.into_iter().chain(forgotten) {
            if let Err(e) = result {
                // Harmless: the reconciler re-publishes these (the store ignores the duplicates).
                tracing::warn!(error = %e, "could not clear confirmed reservations");
            }
        }
        // Confirmations are cleanup, not an answer: letting them gather for a moment turns
        // thousands of small pipelines a second into a few hundred (7 % less Redis CPU per
        // purchase in bench/ratio.sh's load).
        tokio::time::sleep(CONFIRM_EVERY).await;
    }
}

/// Forgets one pending member and its releases ([`FORGET`]).
async fn forget_group(
    conn: &mut Connection,
    forget: &Script,
    keys: &SaleKeys,
    member: &str,
) -> Result<(), redis::RedisError> {
    METRICS.observe_redis_call(RedisCall::Confirm, 1);
    let _: i64 = forget
        .key(&keys.pending)
        .key(&keys.released)
        .arg(member)
        .invoke_async(conn)
        .await?;
    Ok(())
}

fn opt(ms: Option<Millis>) -> String {
    ms.map(|m| m.to_string()).unwrap_or_default()
}

impl StockGate for RedisGate {
    async fn load_sale(&self, sale: Arc<Sale>, state: GateState) -> Result<(), BackendError> {
        let rules = &sale.spec;
        let count = rules.stock_shards.max(1);
        // Written first: an instance that finds any shard finds how many there are.
        if count > 1 {
            let _: i64 = self
                .conn
                .clone()
                .hset(self.shard_counts_key(), sale.id.0, count)
                .await
                .map_err(unavailable)?;
        }
        let shards = self.sale_with(sale.id, count);
        let GateState {
            holders,
            open_holds,
            paid,
        } = state;
        let held: u64 = holders.iter().map(|h| u64::from(h.held)).sum();
        let home = |user: &UserId| shards.home(user).index;
        // The units left, spread over the shards. If some shards are still in Redis (a partial
        // loss), they keep what they have and the lost ones come back empty: their share may
        // have moved to the others, and giving it again could sell a unit twice.
        let mut shares = shards::split(rules.stock.saturating_sub(held), shards.shards.len());
        if count > 1 {
            let present = futures::future::try_join_all(shards.iter().map(|keys| {
                let mut conn = self.conn.clone();
                async move { conn.exists::<_, bool>(&keys.meta).await }
            }))
            .await
            .map_err(unavailable)?;
            if present.iter().any(|p| *p) && !present.iter().all(|p| *p) {
                tracing::error!(sale = %sale.id, ?present, "some of the sale's shards are missing from Redis; they come back without units");
                shares.iter_mut().for_each(|share| *share = 0);
            }
        }
        for (keys, share) in shards.iter().zip(shares) {
            let holders: Vec<_> = holders.iter().filter(|h| home(&h.user) == keys.index).collect();
            let open: Vec<&Order> = open_holds
                .iter()
                .filter(|o| o.state == OrderState::AwaitingPayment && o.pay_by.is_some())
                .filter(|o| home(&o.user_id) == keys.index)
                .collect();
            let held: u64 = holders.iter().map(|h| u64::from(h.held)).sum();
            let mut invocation = self.load.prepare_invoke();
            invocation
                .key(&keys.meta)
                .key(&keys.buyers)
                .key(&keys.holds)
                .key(&keys.deadlines)
                .key(keys.older_layout("holders"))
                .key(keys.older_layout("seqs"))
                .arg(held + share)
                .arg(opt(rules.starts_at))
                .arg(opt(rules.ends_at))
                .arg(rules.per_user_limit)
                .arg(share)
                .arg(u64::from(rules.payment_window_secs) * 1000)
                .arg(open.len())
                // The paid count is the sale's; it lives on the first shard (the counts add up).
                .arg(if keys.index == 0 { paid } else { 0 })
                .arg(holders.len());
            for h in &holders {
                invocation.arg(h.user.as_str()).arg(buyers_field(h));
            }
            for o in open {
                invocation
                    .arg(o.order_id.hyphenated().to_string())
                    .arg(encode_hold(o))
                    .arg(o.pay_by.unwrap_or_default());
            }
            METRICS.observe_redis_call(RedisCall::Load, 1);
            let _: i64 = invocation
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
        }
        // The set of sales lives in no sale's hash slot, so (for Redis Cluster) it is written
        // outside the script, whose keys must share one slot.
        let _: i64 = self
            .conn
            .clone()
            .sadd(self.sales_key(), sale.id.0)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn reserve(&self, sale_id: SaleId, user: &UserId, now: Millis) -> Result<Reservation, ReserveError> {
        let sale = self.sale(sale_id).await?;
        if sale.sold_out(now) {
            return Err(Refusal::SoldOut.into());
        }
        let keys = sale.home(user);
        // Minted before the script because the pending reservation names it.
        let order_id = new_order_id(sale_id);
        let mut user = user.clone();
        for _ in 0..MAX_REFILLED_TRIES {
            let (answer, answered) = oneshot::channel();
            let asked = keys.asks.send(Ask::Reserve {
                user,
                now,
                order_id,
                answer,
            });
            if asked.is_err() {
                return Err(BackendError::fault(Role::Gate, "the sale's group task has stopped").into());
            }
            let (back, granted) = answered
                .await
                .map_err(|_| BackendError::outcome_unknown(Role::Gate, "the sale's group task dropped a purchase"))?;
            user = back;
            let Granted {
                code,
                seq,
                pay_by,
                at,
                group,
            } = granted?;
            return match code {
                remaining if remaining >= 0 => Ok(Reservation {
                    order_id,
                    sale_id,
                    user_id: user,
                    seq,
                    remaining: remaining as u64,
                    reserved_at: at,
                    pay_by: (pay_by > 0).then_some(pay_by),
                    pending: PendingShare(group),
                }),
                -1 => {
                    self.sales.remove(&sale_id);
                    Err(Refusal::UnknownSale.into())
                }
                -2 => Err(Refusal::NotStarted.into()),
                -3 => Err(Refusal::Ended.into()),
                -4 => {
                    // The home shard is dry; another may not be.
                    if sale.shards.len() > 1 && self.refill(&sale, keys).await? {
                        continue;
                    }
                    sale.mark_sold_out(now + SOLD_OUT_RECHECK_MS);
                    Err(Refusal::SoldOut.into())
                }
                _ => Err(Refusal::LimitReached.into()),
            };
        }
        Err(Refusal::SoldOut.into())
    }

    async fn release(&self, r: &Reservation) -> Result<(), BackendError> {
        let Some(group) = &r.pending.0 else {
            return Err(BackendError::fault(Role::Gate, "a reservation this gate did not make"));
        };
        let (answer, answered) = oneshot::channel();
        group
            .keys
            .asks
            .send(Ask::Release {
                user: r.user_id.clone(),
                order_id: r.order_id,
                group: Arc::clone(group),
                answer: Some(answer),
            })
            .map_err(|_| BackendError::fault(Role::Gate, "the sale's group task has stopped"))?;
        answered
            .await
            .map_err(|_| BackendError::unavailable(Role::Gate, "the sale's group task dropped a release"))?
    }

    async fn settle(
        &self,
        sale_id: SaleId,
        order_id: uuid::Uuid,
        transition: &Transition,
        now: Millis,
    ) -> Result<Settlement, BackendError> {
        // The hold is on its buyer's home shard, which the order id does not tell: a buyer's
        // cancellation goes there, a payment or an expiry asks the shards in turn until one
        // has it (one call for a sale of one shard).
        let sale = self.sale(sale_id).await?;
        if let Transition::Cancel { by } = transition {
            return self.settle_on(sale.home(by), sale_id, order_id, transition, now).await;
        }
        for keys in sale.iter() {
            let settled = self.settle_on(keys, sale_id, order_id, transition, now).await?;
            if !matches!(settled, Settlement::Unknown) {
                return Ok(settled);
            }
        }
        Ok(Settlement::Unknown)
    }

    async fn expire_due(&self, sale_id: SaleId, now: Millis, limit: usize) -> Result<Vec<Order>, BackendError> {
        let mut expired = Vec::new();
        for keys in self.sale(sale_id).await?.iter() {
            let flat: Vec<String> = self
                .expire_due
                .key(&keys.meta)
                .key(&keys.buyers)
                .key(&keys.holds)
                .key(&keys.deadlines)
                .key(&keys.settled)
                .key(&keys.pending)
                .arg(now)
                .arg(limit)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
            METRICS.observe_redis_call(RedisCall::ExpireDue, flat.len() / 2);
            if !flat.is_empty() {
                keys.sold_out_until.store(0, Ordering::Relaxed);
            }
            expired.extend(flat.chunks_exact(2).filter_map(|pair| {
                let order_id = uuid::Uuid::parse_str(&pair[0]).ok()?;
                decode_logged(sale_id, order_id, &pair[1])
            }));
        }
        Ok(expired)
    }

    async fn unconfirmed(&self, sale_id: SaleId, older_than: Millis) -> Result<Vec<Order>, BackendError> {
        let mut unconfirmed = Vec::new();
        for keys in self.sale(sale_id).await?.iter() {
            let ids: Vec<String> = self
                .conn
                .clone()
                .zrangebyscore_limit(&keys.settled, "-inf", older_than, 0, 1000)
                .await
                .map_err(unavailable)?;
            if ids.is_empty() {
                continue;
            }
            let holds = self.read_holds(keys, &ids).await?;
            unconfirmed.extend(ids.iter().zip(holds).filter_map(|(id, hold)| {
                let order_id = uuid::Uuid::parse_str(id).ok()?;
                decode_logged(sale_id, order_id, &hold?)
            }));
        }
        Ok(unconfirmed)
    }

    fn recorded(&self, orders: &[Order]) {
        for order in orders {
            // A sale this instance has not met, or a full queue, only leaves the transition to be
            // recorded again (a no-op in the store).
            if let Some(sale) = self.known(order.sale_id) {
                let _ = self.confirmations.try_send(Confirmed::Transition(
                    Arc::clone(sale.home(&order.user_id)),
                    order.order_id,
                ));
            }
        }
    }

    async fn hold(&self, sale_id: SaleId, order_id: uuid::Uuid) -> Result<Option<Order>, BackendError> {
        let field = order_id.hyphenated().to_string();
        for keys in self.sale(sale_id).await?.iter() {
            let raw: Option<String> = self.conn.clone().hget(&keys.holds, &field).await.map_err(unavailable)?;
            if let Some(raw) = raw {
                return Ok(decode_logged(sale_id, order_id, &raw));
            }
        }
        Ok(None)
    }

    async fn hold_counts(&self, sale_id: SaleId) -> Result<HoldCounts, BackendError> {
        // Summed before clamping: a shard's count may dip below zero when a hold counted on
        // another shard closes on it (the paid count of a reloaded sale lives on the first).
        let (mut awaiting, mut paid) = (0i64, 0i64);
        for keys in self.sale(sale_id).await?.iter() {
            let (a, p): (Option<i64>, Option<i64>) = self
                .conn
                .clone()
                .hget(&keys.meta, &["awaiting", "paid"])
                .await
                .map_err(unavailable)?;
            awaiting += a.unwrap_or(0);
            paid += p.unwrap_or(0);
        }
        Ok(HoldCounts {
            awaiting_payment: awaiting.max(0) as u64,
            paid: paid.max(0) as u64,
        })
    }

    fn known_sold_out(&self, sale: SaleId, now: Millis) -> bool {
        self.sales.get(&sale).is_some_and(|s| s.sold_out(now))
    }

    fn confirm(&self, r: &Reservation) {
        // A full queue only delays the cleanup to the reconciler; never block the answer on it.
        if let Some(group) = &r.pending.0 {
            group.settle_one(&self.confirmations);
        }
    }

    async fn open_reservations(&self, sale_id: SaleId) -> Result<u64, BackendError> {
        let mut open = 0;
        for keys in self.sale(sale_id).await?.iter() {
            let on_shard: i64 = self
                .open
                .key(&keys.pending)
                .key(&keys.released)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
            open += on_shard.max(0) as u64;
        }
        Ok(open)
    }

    async fn ready(&self) -> Vec<Check> {
        // On a cluster, PING goes to every node; a cluster missing slots answers PING but not
        // every sale's commands, hence its own state too.
        let mut conn = self.conn.clone();
        let mut up = redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable);
        if up.is_ok() && matches!(conn, Connection::Cluster(_)) {
            up = match redis::cmd("CLUSTER").arg("INFO").query_async::<String>(&mut conn).await {
                Ok(info) if info.lines().any(|l| l.trim() == "cluster_state:ok") => Ok(()),
                Ok(info) => {
                    let state = info
                        .lines()
                        .find(|l| l.starts_with("cluster_state:"))
                        .unwrap_or("no cluster_state");
                    Err(BackendError::unavailable(
                        Role::Gate,
                        format!("redis cluster: {}", state.trim()),
                    ))
                }
                Err(e) => Err(unavailable(e)),
            };
        }
        vec![Check::required("redis", up)]
    }

    async fn remaining(&self, sale_id: SaleId) -> Result<Option<u64>, BackendError> {
        // Every waiting-room join and poll asks: one grouped read per shard, nothing collected.
        // Units on their way between two shards are in neither for a moment; the first shard
        // missing means Redis does not have the sale.
        let mut total = 0;
        for keys in self.sale(sale_id).await?.iter() {
            match shard_remaining(keys).await? {
                None if keys.index == 0 => return Ok(None),
                left => total += left.unwrap_or(0).max(0) as u64,
            }
        }
        Ok(Some(total))
    }
}

#[cfg(test)]
mod tests {
    use super::{buyers_field, granted_from, pending_entries, RedisTarget, BUYERS, SEQ_UNIT};
    use crate::domain::{Holding, UserId};

    #[test]
    fn a_pending_member_names_its_reservations_in_either_layout() {
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let user = |u: &str| UserId::parse(u).unwrap();
        // One script call's winners, as RESERVE joins them (buyer ids may hold ':').
        let member = format!("{} 3 alice {} 1 bob:2@x", a.hyphenated(), b.hyphenated());
        assert_eq!(
            pending_entries(&member),
            Some(vec![(a, 3, user("alice")), (b, 1, user("bob:2@x"))])
        );
        // One reservation, as older versions wrote it.
        let older = format!("{}:7:carol:9", a.hyphenated());
        assert_eq!(pending_entries(&older), Some(vec![(a, 7, user("carol:9"))]));
        for broken in [
            format!("{} 3", a.hyphenated()),
            format!("{} x alice", a.hyphenated()),
            "not-an-id 1 alice".to_owned(),
            String::new(),
        ] {
            assert_eq!(pending_entries(&broken), None, "{broken:?}");
        }
    }

    #[test]
    fn the_buyers_field_is_packed_alike_in_rust_and_in_the_scripts() {
        assert!(BUYERS.contains(&format!("local UNIT = {SEQ_UNIT}\n")), "{BUYERS}");
        let (more, less) = (SEQ_UNIT + 1, -(SEQ_UNIT as i64 + 1));
        assert!(BUYERS.contains(&format!("'{more}', '{less}'")), "{BUYERS}");
        let holding = |held, last_seq| Holding {
            user: UserId::trusted("b".into()),
            held,
            last_seq,
        };
        assert_eq!(buyers_field(&holding(2, 5)), 5 * SEQ_UNIT + 2);
        // A store that knows units but no seq yet: the seq is at least the units held.
        assert_eq!(buyers_field(&holding(3, 0)), 3 * SEQ_UNIT + 3);
    }

    #[test]
    fn the_reserve_answer_gives_each_winner_the_units_left_after_them_and_a_pay_by() {
        // 4 units left, a 60 s window; winners with seq 1 and 2, one at the limit, one sold out.
        let granted = granted_from(&[4, 60_000, 1, -5, 2, -4], 4, 1_000).expect("well formed");
        let seen: Vec<_> = granted.iter().map(|g| (g.code, g.seq, g.pay_by, g.at)).collect();
        assert_eq!(
            seen,
            [
                (3, 1, 61_000, 1_000),
                (-5, 0, 0, 1_000),
                (2, 2, 61_000, 1_000),
                (-4, 0, 0, 1_000)
            ]
        );
        let unknown = granted_from(&[-1], 2, 5).expect("unknown sale");
        assert!(unknown.iter().all(|g| g.code == -1));
        // No window: no pay_by. An answer of the wrong length, or a seq of 0, is malformed.
        assert_eq!(granted_from(&[1, 0, 1], 1, 5).expect("one")[0].pay_by, 0);
        assert!(granted_from(&[4, 0, 1], 2, 5).is_none());
        assert!(granted_from(&[4, 0, 0], 1, 5).is_none());
        assert!(granted_from(&[], 0, 5).is_none());
    }

    #[test]
    fn one_url_is_a_node_and_the_switch_makes_a_list_of_cluster_nodes() {
        assert_eq!(
            RedisTarget::parse("redis://r:6379/0", false),
            Ok(RedisTarget::Node("redis://r:6379/0".into()))
        );
        assert_eq!(
            RedisTarget::parse("redis://a:7000, redis://b:7000", true),
            Ok(RedisTarget::Cluster(vec![
                "redis://a:7000".into(),
                "redis://b:7000".into()
            ]))
        );
        assert_eq!(
            RedisTarget::parse("redis://a:7000", true),
            Ok(RedisTarget::Cluster(vec!["redis://a:7000".into()]))
        );
        // Several nodes without the switch are refused rather than half used.
        assert!(RedisTarget::parse("redis://a:7000,redis://b:7000", false).is_err());
        assert!(RedisTarget::parse(" , ", true).is_err());
    }

    #[test]
    fn a_cluster_is_logged_without_passwords() {
        let target = RedisTarget::parse("redis://:pw@a:7000,redis://u:pw@b:7000", true).expect("cluster");
        assert_eq!(target.redacted(), "cluster redis://:***@a:7000,redis://u:***@b:7000");
        assert!(crate::config::url_has_password("redis://a:7000,redis://:pw@b:7000"));
        assert!(!crate::config::url_has_password("redis://a:7000,redis://b:7000"));
    }
}
