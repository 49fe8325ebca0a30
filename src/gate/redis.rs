//! The distributed stock gate: one Lua script in Redis decides each purchase atomically, so any
//! number of stateless engine instances sell one stock together.
//!
//! Keys of a sale share a hash tag (`{s<id>}`), so a Redis Cluster keeps them on one shard:
//! - `<p>:{s<id>}:meta`    hash: stock, starts_at, ends_at, limit, remaining (never below 0)
//! - `<p>:{s<id>}:holders` hash: user → units held (checked against the limit)
//! - `<p>:{s<id>}:seqs`    hash: user → last `seq` handed out; never lowered, so a released unit
//!   never makes the buyer's next order reuse a `seq` that another of their orders holds
//! - `<p>:{s<id>}:pending` sorted set of reservations not yet confirmed durable, scored by
//!   reservation time; the member `order_id:seq:user` is all the reconciler needs to re-publish
//! - `<p>:sales`           set of sale ids (what the reconciler scans)

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use tokio::sync::mpsc;

use super::{Reservation, ReserveError, StockGate};
use crate::backend::{BackendError, Check, Role};
use crate::domain::{Holding, Millis, Order, Refusal, Sale, SaleId, UserId};

/// Once a sale answers "sold out", this instance stops asking Redis for that long. Short, so a
/// unit returned by another instance or the reconciler is offered again promptly.
const SOLD_OUT_RECHECK_MS: Millis = 1_000;

const RESERVE: &str = r#"
local meta = redis.call('HMGET', KEYS[1], 'starts_at', 'ends_at', 'limit', 'remaining')
if not meta[3] then return {-1, 0} end
local now = tonumber(ARGV[2])
if meta[1] ~= '' and now < tonumber(meta[1]) then return {-2, 0} end
if meta[2] ~= '' and now >= tonumber(meta[2]) then return {-3, 0} end
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held >= tonumber(meta[3]) then return {-5, 0} end
local remaining = tonumber(meta[4])
if remaining <= 0 then return {-4, 0} end
redis.call('HINCRBY', KEYS[1], 'remaining', -1)
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local seq = redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
redis.call('ZADD', KEYS[3], now, ARGV[3] .. ':' .. seq .. ':' .. ARGV[1])
return {remaining - 1, seq}
"#;

/// Idempotent: only a reservation still pending is returned to stock. The buyer's `seqs` entry
/// stays as it is.
const RELEASE: &str = r#"
if redis.call('ZREM', KEYS[3], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'remaining', 1)
if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
return 1
"#;

/// First writer wins: a sale already in Redis is never reset by an instance starting later.
const LOAD: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'stock', ARGV[1], 'starts_at', ARGV[2], 'ends_at', ARGV[3], 'limit', ARGV[4],
           'remaining', ARGV[5])
for i = 6, #ARGV, 3 do
  if tonumber(ARGV[i + 1]) > 0 then redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 2])
end
return 1
"#;

/// The pending-set member of a reservation.
fn pending_member(order_id: uuid::Uuid, seq: u32, user: &UserId) -> String {
    format!("{}:{seq}:{user}", order_id.hyphenated())
}

struct SaleKeys {
    meta: String,
    holders: String,
    seqs: String,
    pending: String,
    sold_out_until: AtomicI64,
}

impl SaleKeys {
    fn new(prefix: &str, id: SaleId) -> Self {
        let base = format!("{prefix}:{{s{id}}}");
        SaleKeys {
            meta: format!("{base}:meta"),
            holders: format!("{base}:holders"),
            seqs: format!("{base}:seqs"),
            pending: format!("{base}:pending"),
            sold_out_until: AtomicI64::new(0),
        }
    }
}

pub struct RedisGate {
    conn: ConnectionManager,
    prefix: String,
    sales: DashMap<SaleId, Arc<SaleKeys>>,
    reserve: Script,
    release: Script,
    load: Script,
    confirmations: mpsc::Sender<(Arc<SaleKeys>, Reservation)>,
}

fn unavailable(e: redis::RedisError) -> BackendError {
    BackendError::unavailable(Role::Gate, e)
}

/// A reserve that failed before reaching Redis took nothing. One that timed out or lost its
/// connection may have run: its reservation is then pending in Redis, and the reconciler will
/// publish it, so the buyer is told the outcome is unknown rather than "failed".
fn reserve_failed(e: redis::RedisError) -> BackendError {
    if e.is_timeout() || e.is_connection_dropped() {
        BackendError::outcome_unknown(Role::Gate, e)
    } else {
        unavailable(e)
    }
}

impl RedisGate {
    /// Connects with bounded timeouts: a dead Redis costs a buyer at most `timeout`, then 503.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, BackendError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(timeout * 3, ConnectionManager::new_with_config(client, config))
            .await
            .map_err(|_| {
                let url = crate::config::redact_url(url);
                BackendError::unavailable(
                    Role::Gate,
                    format!("redis: no answer from {url} within {:?}", timeout * 3),
                )
            })?
            .map_err(unavailable)?;
        let (confirmations, pending) = mpsc::channel(65_536);
        let gate = RedisGate {
            conn,
            prefix: prefix.to_owned(),
            sales: DashMap::new(),
            reserve: Script::new(RESERVE),
            release: Script::new(RELEASE),
            load: Script::new(LOAD),
            confirmations,
        };
        tokio::spawn(confirm_in_batches(gate.conn.clone(), pending));
        Ok(gate)
    }

    fn keys(&self, id: SaleId) -> Arc<SaleKeys> {
        if let Some(keys) = self.sales.get(&id) {
            return Arc::clone(&keys);
        }
        Arc::clone(
            &self
                .sales
                .entry(id)
                .or_insert_with(|| Arc::new(SaleKeys::new(&self.prefix, id))),
        )
    }

    fn sales_key(&self) -> String {
        format!("{}:sales", self.prefix)
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

    /// Orders of the reservations of `sale` pending since before `older_than` (their instance has
    /// probably died with them); an order's `created_at` is its reservation time.
    pub async fn stale(&self, sale: SaleId, older_than: Millis) -> Result<Vec<Order>, BackendError> {
        let keys = self.keys(sale);
        let members: Vec<(String, i64)> = self
            .conn
            .clone()
            .zrangebyscore_limit_withscores(&keys.pending, "-inf", older_than, 0, 1000)
            .await
            .map_err(unavailable)?;
        let mut stale = Vec::with_capacity(members.len());
        for (member, reserved_at) in members {
            let mut parts = member.splitn(3, ':');
            let parsed = (|| {
                let order_id = uuid::Uuid::parse_str(parts.next()?).ok()?;
                let seq = parts.next()?.parse().ok()?;
                let user_id = UserId::parse(parts.next()?).ok()?;
                Some(Order {
                    order_id,
                    sale_id: sale,
                    user_id,
                    seq,
                    created_at: reserved_at,
                })
            })();
            match parsed {
                Some(order) => stale.push(order),
                None => tracing::error!(sale = %sale, %member, "unreadable pending reservation left in place"),
            }
        }
        Ok(stale)
    }

    /// Forgets a pending reservation at once (the reconciler, after re-publishing it).
    pub async fn forget(&self, order: &Order) -> Result<(), BackendError> {
        let keys = self.keys(order.sale_id);
        let member = pending_member(order.order_id, order.seq, &order.user_id);
        let _: i64 = self
            .conn
            .clone()
            .zrem(&keys.pending, member)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// Confirmations leave the buy path: they are batched into one pipeline per round trip.
async fn confirm_in_batches(mut conn: ConnectionManager, mut rx: mpsc::Receiver<(Arc<SaleKeys>, Reservation)>) {
    let mut batch = Vec::with_capacity(1024);
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let mut pipe = redis::pipe();
        for (keys, r) in batch.drain(..) {
            pipe.zrem(&keys.pending, pending_member(r.order_id, r.seq, &r.user_id))
                .ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            // Harmless: the reconciler re-publishes these (the store ignores the duplicates).
            tracing::warn!(error = %e, "could not clear confirmed reservations");
        }
    }
}

fn opt(ms: Option<Millis>) -> String {
    ms.map(|m| m.to_string()).unwrap_or_default()
}

impl StockGate for RedisGate {
    async fn load_sale(&self, sale: Arc<Sale>, holders: Vec<Holding>) -> Result<(), BackendError> {
        let (keys, rules) = (self.keys(sale.id), &sale.spec);
        let held: u64 = holders.iter().map(|h| u64::from(h.held)).sum();
        let mut invocation = self.load.prepare_invoke();
        invocation
            .key(&keys.meta)
            .key(&keys.holders)
            .key(&keys.seqs)
            .arg(rules.stock)
            .arg(opt(rules.starts_at))
            .arg(opt(rules.ends_at))
            .arg(rules.per_user_limit)
            .arg(rules.stock.saturating_sub(held));
        for h in &holders {
            invocation.arg(h.user.as_str()).arg(h.held).arg(h.last_seq.max(h.held));
        }
        let _: i64 = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
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

    async fn reserve(&self, sale: SaleId, user: &UserId, now: Millis) -> Result<Reservation, ReserveError> {
        let keys = self.keys(sale);
        if now < keys.sold_out_until.load(Ordering::Relaxed) {
            return Err(Refusal::SoldOut.into());
        }
        // Minted before the script because the pending reservation names it.
        let order_id = uuid::Uuid::now_v7();
        let mut id_buf = uuid::Uuid::encode_buffer();
        let (code, seq): (i64, u32) = self
            .reserve
            .key(&keys.meta)
            .key(&keys.holders)
            .key(&keys.pending)
            .key(&keys.seqs)
            .arg(user.as_str())
            .arg(now)
            .arg(&*order_id.hyphenated().encode_lower(&mut id_buf))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(reserve_failed)?;
        match code {
            remaining if remaining >= 0 => Ok(Reservation {
                order_id,
                sale_id: sale,
                user_id: user.clone(),
                seq,
                remaining: remaining as u64,
            }),
            -1 => {
                self.sales.remove(&sale);
                Err(Refusal::UnknownSale.into())
            }
            -2 => Err(Refusal::NotStarted.into()),
            -3 => Err(Refusal::Ended.into()),
            -4 => {
                keys.sold_out_until.store(now + SOLD_OUT_RECHECK_MS, Ordering::Relaxed);
                Err(Refusal::SoldOut.into())
            }
            _ => Err(Refusal::LimitReached.into()),
        }
    }

    async fn release(&self, r: &Reservation) -> Result<(), BackendError> {
        let keys = self.keys(r.sale_id);
        let _: i64 = self
            .release
            .key(&keys.meta)
            .key(&keys.holders)
            .key(&keys.pending)
            .arg(r.user_id.as_str())
            .arg(pending_member(r.order_id, r.seq, &r.user_id))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        keys.sold_out_until.store(0, Ordering::Relaxed);
        Ok(())
    }

    fn known_sold_out(&self, sale: SaleId, now: Millis) -> bool {
        self.sales
            .get(&sale)
            .is_some_and(|k| now < k.sold_out_until.load(Ordering::Relaxed))
    }

    fn confirm(&self, r: &Reservation) {
        // A full queue only delays the cleanup to the reconciler; never block the answer on it.
        let _ = self.confirmations.try_send((self.keys(r.sale_id), r.clone()));
    }

    async fn open_reservations(&self, sale: SaleId) -> Result<u64, BackendError> {
        let keys = self.keys(sale);
        self.conn.clone().zcard(&keys.pending).await.map_err(unavailable)
    }

    async fn ready(&self) -> Vec<Check> {
        let ping = redis::cmd("PING").query_async::<()>(&mut self.conn.clone()).await;
        vec![Check::required("redis", ping.map_err(unavailable))]
    }

    async fn remaining(&self, sale: SaleId) -> Result<Option<u64>, BackendError> {
        let keys = self.keys(sale);
        let n: Option<i64> = self
            .conn
            .clone()
            .hget(&keys.meta, "remaining")
            .await
            .map_err(unavailable)?;
        Ok(n.map(|n| n.max(0) as u64))
    }
}
