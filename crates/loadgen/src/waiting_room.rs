//! `seckill bench --waiting-room`: a sale behind a waiting room, judged from the server's own
//! answers. The bench creates a `random_at_start` sale that starts a few seconds later; buyers
//! join before the start (all at once) and after it (one after another, so their arrival order
//! is known); each polls as `poll_after_ms` says and, once admitted, buys with its admission
//! token. Every ticket answer carries the ticket's `place` and, once admitted, `admitted_at_ms`
//! (when the queue's front reached it): the checks read the queue's order and its rate from
//! those, not from when a buyer happened to poll.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hyper::{Method, StatusCode};
use seckill_api::{TicketState, TicketView};
use serde::Serialize;

use crate::bench::BenchConfig;
use crate::client::Target;
use crate::report::Check;

/// The fewest pre-start joiners the shuffle check judges: with fewer, a fair shuffle's
/// Spearman ρ strays past 0.1 too often (its spread is 1/√(n−1), 0.032 at 1,000).
pub const MIN_PRE_START: u64 = 1000;

/// How far a buyer's clock may read behind the server's when it sees an admission: the bench and
/// the engine share a machine's clock in the scripts; this only absorbs rounding to the
/// millisecond and the moment between the server's clock read and its answer.
const CLOCK_TOLERANCE_MS: i64 = 50;

/// What one buyer saw. Times ending in `_ms` are unix milliseconds; `admitted_at_ms` is the
/// server's, the others the bench's clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Buyer {
    pub pre_start: bool,
    /// Order of joining within its group (0 first): pre-start joiners in the order their join
    /// answers arrived, post-start joiners in the order they joined, one after another.
    pub joined: u64,
    pub joined_at_ms: i64,
    pub ticket: Option<String>,
    pub place: Option<u64>,
    /// When the queue's front reached the ticket, as the server told it.
    pub admitted_at_ms: Option<i64>,
    /// The request that first answered `admitted`: when it was sent, when its answer arrived.
    pub admission_sent_ms: Option<i64>,
    pub admission_seen_ms: Option<i64>,
    /// After buying, the ticket polled once more: when, if it answered `admitted` again.
    pub readmitted_sent_ms: Option<i64>,
    /// That poll told another place or admission time than the first admission.
    pub admission_changed: bool,
    /// The purchase's status.
    pub purchase: Option<u16>,
    /// The first `sold_out` answer this buyer saw (join, poll or purchase).
    pub sold_out_seen_ms: Option<i64>,
    pub expired: bool,
    pub errors: u64,
}

/// A waiting-room run: what was asked, what the buyers saw, and the checks.
#[derive(Debug, Serialize)]
pub struct RoomReport {
    pub url: String,
    pub sale: i64,
    pub admit_per_sec: u32,
    pub stock: u64,
    pub pre_start: u64,
    pub post_start: u64,
    pub elapsed_s: f64,
    pub joins: u64,
    pub polls: u64,
    pub purchases: u64,
    pub bought: u64,
    pub sold_out: u64,
    pub expired: u64,
    pub errors: u64,
    pub invariants: Vec<Check>,
    pub passed: bool,
}

impl fmt::Display for RoomReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seckill bench --waiting-room against {} (sale {}): {} pre-start + {} post-start joiners, stock {}, {} admitted/s",
            self.url, self.sale, self.pre_start, self.post_start, self.stock, self.admit_per_sec
        )?;
        writeln!(
            f,
            "  requests     joins {}  polls {}  purchases {} in {:.3} s",
            self.joins, self.polls, self.purchases, self.elapsed_s
        )?;
        writeln!(
            f,
            "  outcomes     bought {}  sold_out {}  expired {}  errors {}",
            self.bought, self.sold_out, self.expired, self.errors
        )?;
        for check in &self.invariants {
            writeln!(
                f,
                "  {} {}: {}",
                if check.passed { "PASS" } else { "FAIL" },
                check.name,
                check.detail
            )?;
        }
        write!(
            f,
            "{}",
            if self.passed {
                "PASSED"
            } else {
                "FAILED: an invariant is violated"
            }
        )
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The room's burst at the start, as the engine sets it: the rate, at most 10.
pub fn burst(admit_per_sec: u32) -> u64 {
    u64::from(admit_per_sec).clamp(1, 10)
}

/// Requests sent, for the summary.
#[derive(Default)]
struct Sent {
    joins: AtomicU64,
    polls: AtomicU64,
    purchases: AtomicU64,
}

/// One engine's waiting room as the buyers use it.
struct Room {
    target: Arc<Target>,
    sale: i64,
    sent: Sent,
}

/// An answer, or why there was none worth reading.
enum Answer {
    Ticket(TicketView),
    /// A refusal with its `error.code` (e.g. 410 `sold_out`).
    Refused(u16, String),
}

fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Room {
    async fn ticket(&self, method: Method, path: String, user: &str) -> anyhow::Result<Answer> {
        let (status, body) = self.target.send(method, &path, &[("x-user-id", user)]).await?;
        if status != StatusCode::OK {
            return Ok(Answer::Refused(status.as_u16(), error_code(&body)));
        }
        let view = serde_json::from_slice(&body).with_context(|| format!("{path}: not a ticket"))?;
        Ok(Answer::Ticket(view))
    }

    async fn join(&self, user: &str) -> anyhow::Result<Answer> {
        self.sent.joins.fetch_add(1, Relaxed);
        self.ticket(Method::POST, format!("/api/sales/{}/queue", self.sale), user)
            .await
    }

    async fn poll(&self, ticket: &str, user: &str) -> anyhow::Result<Answer> {
        self.sent.polls.fetch_add(1, Relaxed);
        self.ticket(Method::GET, format!("/api/sales/{}/queue/{ticket}", self.sale), user)
            .await
    }

    /// The purchase's status and error code.
    async fn buy(&self, user: &str, admission: Option<&str>) -> anyhow::Result<(u16, String)> {
        self.sent.purchases.fetch_add(1, Relaxed);
        let mut headers = vec![("x-user-id", user)];
        headers.extend(admission.map(|token| ("x-admission-token", token)));
        let path = format!("/api/sales/{}/purchase", self.sale);
        let (status, body) = self.target.send(Method::POST, &path, &headers).await?;
        Ok((status.as_u16(), error_code(&body)))
    }

    /// Follows one buyer's ticket from the answer to its join until it bought, was told sold
    /// out or expired, or `deadline` passed.
    async fn follow(&self, user: &str, mut buyer: Buyer, first: Answer, sent: i64, deadline: Instant) -> Buyer {
        let (mut answer, mut sent) = (first, sent);
        let mut failures = 0;
        loop {
            let seen = unix_ms();
            let view = match answer {
                Answer::Ticket(view) => view,
                Answer::Refused(410, code) if code == "sold_out" => {
                    buyer.sold_out_seen_ms.get_or_insert(seen);
                    return buyer;
                }
                Answer::Refused(..) => {
                    buyer.errors += 1;
                    return buyer;
                }
            };
            buyer.ticket.get_or_insert_with(|| view.ticket.clone());
            if view.place.is_some() {
                buyer.place = view.place;
            }
            match view.state {
                TicketState::Waiting => {}
                TicketState::SoldOut => {
                    buyer.sold_out_seen_ms.get_or_insert(seen);
                    return buyer;
                }
                TicketState::Expired => {
                    buyer.expired = true;
                    return buyer;
                }
                TicketState::Admitted => {
                    buyer.admitted_at_ms = view.admitted_at_ms;
                    buyer.admission_sent_ms = Some(sent);
                    buyer.admission_seen_ms = Some(seen);
                    self.bought(user, &mut buyer, view).await;
                    return buyer;
                }
            }
            if Instant::now() > deadline {
                return buyer;
            }
            tokio::time::sleep(Duration::from_millis(view.poll_after_ms)).await;
            loop {
                sent = unix_ms();
                match self.poll(&view.ticket, user).await {
                    Ok(next) => {
                        answer = next;
                        break;
                    }
                    // A failed request is retried a few times: one lost answer is not a verdict.
                    Err(_) if failures < 5 => {
                        failures += 1;
                        buyer.errors += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(_) => return buyer,
                }
            }
        }
    }

    /// Buys with the admission, then polls the ticket once more: an admitted ticket keeps its
    /// place and admission time.
    async fn bought(&self, user: &str, buyer: &mut Buyer, admitted: TicketView) {
        match self.buy(user, admitted.admission_token.as_deref()).await {
            Ok((status, code)) => {
                buyer.purchase = Some(status);
                if status == 410 && code == "sold_out" {
                    buyer.sold_out_seen_ms.get_or_insert(unix_ms());
                }
            }
            Err(_) => buyer.errors += 1,
        }
        let sent = unix_ms();
        match self.poll(&admitted.ticket, user).await {
            Ok(Answer::Ticket(again)) if again.state == TicketState::Admitted => {
                buyer.readmitted_sent_ms = Some(sent);
                buyer.admission_changed =
                    again.place != admitted.place || again.admitted_at_ms != admitted.admitted_at_ms;
            }
            Ok(Answer::Ticket(again)) if again.state == TicketState::SoldOut => {
                buyer.sold_out_seen_ms.get_or_insert(unix_ms());
            }
            Ok(_) => {}
            Err(_) => buyer.errors += 1,
        }
    }
}

/// The sale of the run: `stock` units, one per buyer, its room starting `start_delay` from now.
fn sale_request(config: &BenchConfig, stock: u64, starts_at: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    serde_json::json!({
        "name": format!("seckill bench, waiting room at {}/s", config.admit_per_sec),
        "stock": stock,
        "per_user_limit": 1,
        "starts_at": starts_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "waiting_room": {
            "admit_per_sec": config.admit_per_sec,
            "mode": "random_at_start",
            "ticket_ttl_secs": config.ticket_ttl,
        },
    })
}

/// The default stock: every pre-start joiner and half the post-start ones can buy, so the sale
/// sells out while post-start joiners still wait.
pub fn default_stock(pre_start: u64, post_start: u64) -> u64 {
    pre_start + post_start / 2
}

/// Runs the waiting-room bench and judges it.
pub async fn execute(config: &BenchConfig) -> anyhow::Result<RoomReport> {
    let (pre, post) = (config.pre_start, config.post_start);
    let stock = config.stock.unwrap_or_else(|| default_stock(pre, post));
    let target = Arc::new(Target::new(&config.url, (pre + post) as usize).with_admin(config.admin_token.as_deref()));
    let start_delay = crate::seconds(config.start_delay);
    let starts_at =
        chrono::Utc::now() + chrono::Duration::from_std(start_delay).context("--start-delay is too long")?;
    let created = target
        .create_sale(&sale_request(config, stock, starts_at))
        .await
        .context("creating the sale (is SECKILL_ADMIN_TOKEN the engine's?)")?;
    let room = Arc::new(Room {
        target: Arc::clone(&target),
        sale: created.id,
        sent: Sent::default(),
    });
    let started = Instant::now();
    let start = started + start_delay;
    // Long enough for every ticket to be admitted at the rate, and then some.
    let deadline = start
        + Duration::from_secs_f64((pre + post) as f64 / f64::from(config.admit_per_sec.max(1)))
        + Duration::from_secs(u64::from(config.ticket_ttl) + 60);

    // Pre-start joiners, `-c` at a time; each then follows its ticket on its own.
    let order = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency.clamp(1, 10_000) as usize));
    let mut buyers = tokio::task::JoinSet::new();
    for i in 0..pre {
        let (room, order, permits) = (Arc::clone(&room), Arc::clone(&order), Arc::clone(&permits));
        buyers.spawn(async move {
            let user = format!("room-early-{i}");
            let sent = unix_ms();
            let answer = {
                let _permit = permits.acquire().await;
                room.join(&user).await
            };
            let joined = order.fetch_add(1, Relaxed);
            let buyer = Buyer {
                pre_start: true,
                joined,
                joined_at_ms: sent,
                ..Buyer::default()
            };
            match answer {
                Ok(answer) => room.follow(&user, buyer, answer, sent, deadline).await,
                Err(_) => Buyer { errors: 1, ..buyer },
            }
        });
    }
    // Every pre-start joiner must have joined before the start: their places come from it.
    while order.load(Relaxed) < pre && Instant::now() < start {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::ensure!(
        order.load(Relaxed) >= pre,
        "only {} of {pre} pre-start joiners joined within the {:.1} s before the start: raise --start-delay",
        order.load(Relaxed),
        start_delay.as_secs_f64()
    );

    // The start, and a margin for the engine's clock; then one purchase without admission.
    tokio::time::sleep_until((start + Duration::from_millis(200)).into()).await;
    let probe = room
        .buy("room-probe-without-token", None)
        .await
        .context("the probe purchase")?;

    // Post-start joiners, one after another: their arrival order is the order they joined in.
    let interval = Duration::from_millis(config.post_start_interval_ms);
    for joined in 0..post {
        let user = format!("room-late-{joined}");
        let sent = unix_ms();
        let answer = room.join(&user).await;
        let buyer = Buyer {
            pre_start: false,
            joined,
            joined_at_ms: sent,
            ..Buyer::default()
        };
        let room = Arc::clone(&room);
        buyers.spawn(async move {
            match answer {
                Ok(answer) => room.follow(&user, buyer, answer, sent, deadline).await,
                Err(_) => Buyer { errors: 1, ..buyer },
            }
        });
        tokio::time::sleep(interval).await;
    }
    let mut seen = Vec::with_capacity((pre + post) as usize);
    while let Some(buyer) = buyers.join_next().await {
        seen.push(buyer.context("a buyer's task failed")?);
    }
    let elapsed = started.elapsed();

    let after = target
        .sale(created.id)
        .await
        .context("reading the sale after the run")?;
    let queue = queue_counters(&target, created.id).await?;
    let sold = after.stock.saturating_sub(after.remaining);
    let invariants = vec![
        only_admitted_bought(&seen, probe, sold),
        admission_rate(&seen, config.admit_per_sec, queue.map_or(0, |q| q.expired)),
        post_start_in_arrival_order(&seen),
        pre_start_shuffled(&seen),
        admitted_once(&seen, queue.map(|q| q.admitted)),
        none_after_sell_out(&seen),
    ];
    let count = |f: &dyn Fn(&Buyer) -> bool| seen.iter().filter(|b| f(b)).count() as u64;
    Ok(RoomReport {
        url: config.url.clone(),
        sale: created.id,
        admit_per_sec: config.admit_per_sec,
        stock,
        pre_start: pre,
        post_start: post,
        elapsed_s: elapsed.as_secs_f64(),
        joins: room.sent.joins.load(Relaxed),
        polls: room.sent.polls.load(Relaxed),
        purchases: room.sent.purchases.load(Relaxed),
        bought: count(&|b| b.purchase == Some(201)),
        sold_out: count(&|b| b.sold_out_seen_ms.is_some()),
        expired: count(&|b| b.expired),
        errors: seen.iter().map(|b| b.errors).sum(),
        passed: invariants.iter().all(|c| c.passed),
        invariants,
    })
}

/// The room's counters as the server keeps them.
#[derive(Clone, Copy, Debug)]
struct QueueCounters {
    admitted: u64,
    expired: u64,
}

/// From `GET /api/admin/stats`; `None` when the room is not listed.
async fn queue_counters(target: &Target, sale: i64) -> anyhow::Result<Option<QueueCounters>> {
    let admin: Vec<_> = target.admin_header().into_iter().collect();
    let stats: serde_json::Value = target
        .get_as("/api/admin/stats", &admin)
        .await
        .context("reading the queue's counters")?;
    let queue = stats["queues"]
        .as_array()
        .and_then(|queues| queues.iter().find(|q| q["sale"] == sale));
    Ok(queue.map(|q| QueueCounters {
        admitted: q["admitted"].as_u64().unwrap_or(0),
        expired: q["expired"].as_u64().unwrap_or(0),
    }))
}

/// Nobody bought without admission: a purchase without a token is refused 403
/// `admission_required`, and the units sold are exactly the purchases of admitted tickets.
pub fn only_admitted_bought(buyers: &[Buyer], probe: (u16, String), sold: u64) -> Check {
    let admitted_bought = buyers
        .iter()
        .filter(|b| b.purchase == Some(201) && b.admitted_at_ms.is_some())
        .count() as u64;
    let unadmitted_bought = buyers
        .iter()
        .filter(|b| b.purchase == Some(201) && b.admitted_at_ms.is_none())
        .count();
    let probe_refused = probe.0 == 403 && probe.1 == "admission_required";
    Check::new(
        "only admitted buyers bought",
        probe_refused && unadmitted_bought == 0 && sold == admitted_bought,
        format!(
            "purchase without a token: {} {}; {sold} sold, {admitted_bought} bought by admitted tickets",
            probe.0, probe.1
        ),
    )
}

/// Admissions per second stay within the rate: over any one-second window of the server's
/// admission times, at most `rate + burst` (plus one per expired ticket, whose slot the next
/// ticket takes); and no buyer was told it was admitted before the server's admission time.
pub fn admission_rate(buyers: &[Buyer], rate: u32, expired: u64) -> Check {
    let mut times: Vec<i64> = buyers.iter().filter_map(|b| b.admitted_at_ms).collect();
    times.sort_unstable();
    let mut most = 0;
    let mut first = 0;
    for (last, &t) in times.iter().enumerate() {
        while t - times[first] >= 1000 {
            first += 1;
        }
        most = most.max(last + 1 - first);
    }
    let allowed = u64::from(rate) + burst(rate) + expired;
    let early = buyers
        .iter()
        .filter(|b| match (b.admitted_at_ms, b.admission_seen_ms) {
            (Some(at), Some(seen)) => seen + CLOCK_TOLERANCE_MS < at,
            _ => false,
        })
        .count();
    Check::new(
        "admissions within the rate",
        most as u64 <= allowed && early == 0,
        format!(
            "most in any 1 s: {most} (≤ {rate}/s + burst {} + {expired} expired); {early} told before their admission time",
            burst(rate)
        ),
    )
}

/// Post-start joiners are admitted in the order they arrived, and after every pre-start joiner:
/// their places rise with their arrival and all come after the pre-start ones' places, and
/// their admission times do likewise.
pub fn post_start_in_arrival_order(buyers: &[Buyer]) -> Check {
    let mut late: Vec<&Buyer> = buyers.iter().filter(|b| !b.pre_start && b.place.is_some()).collect();
    late.sort_by_key(|b| b.joined);
    let places_rise = late.windows(2).all(|w| w[0].place < w[1].place);
    let admitted: Vec<i64> = late.iter().filter_map(|b| b.admitted_at_ms).collect();
    let times_rise = admitted.windows(2).all(|w| w[0] <= w[1]);
    let early_last_place = buyers.iter().filter(|b| b.pre_start).filter_map(|b| b.place).max();
    let early_last_admitted = buyers
        .iter()
        .filter(|b| b.pre_start)
        .filter_map(|b| b.admitted_at_ms)
        .max();
    let late_first_place = late.iter().filter_map(|b| b.place).min();
    let late_first_admitted = admitted.iter().copied().min();
    let behind = early_last_place.zip(late_first_place).is_none_or(|(e, l)| e < l)
        && early_last_admitted.zip(late_first_admitted).is_none_or(|(e, l)| e <= l);
    Check::new(
        "post-start joiners in arrival order, after every pre-start joiner",
        !late.is_empty() && places_rise && times_rise && behind,
        format!(
            "{} placed, {} admitted; places rise with arrival: {places_rise}, admission times: {times_rise}; last pre-start place {} < first post-start {}",
            late.len(),
            admitted.len(),
            early_last_place.map_or("-".into(), |p| p.to_string()),
            late_first_place.map_or("-".into(), |p| p.to_string()),
        ),
    )
}

/// Spearman's rank correlation between two equally long lists of distinct values.
pub fn spearman(x: &[u64], y: &[u64]) -> f64 {
    let ranks = |v: &[u64]| {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by_key(|&i| v[i]);
        let mut rank = vec![0f64; v.len()];
        for (r, i) in order.into_iter().enumerate() {
            rank[i] = r as f64;
        }
        rank
    };
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let d2: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - b).powi(2)).sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

/// The pre-start joiners' places are uncorrelated with the order they joined in: Spearman
/// |ρ| < 0.1 over at least [`MIN_PRE_START`] of them.
pub fn pre_start_shuffled(buyers: &[Buyer]) -> Check {
    let placed: Vec<&Buyer> = buyers.iter().filter(|b| b.pre_start && b.place.is_some()).collect();
    let joined: Vec<u64> = placed.iter().map(|b| b.joined).collect();
    let places: Vec<u64> = placed.iter().filter_map(|b| b.place).collect();
    let rho = spearman(&joined, &places);
    Check::new(
        "pre-start joiners shuffled",
        placed.len() as u64 >= MIN_PRE_START && rho.abs() < 0.1,
        format!(
            "Spearman ρ(join order, place) = {rho:.4} over {} pre-start joiners (|ρ| < 0.1 over ≥ {MIN_PRE_START})",
            placed.len()
        ),
    )
}

/// Nobody was admitted twice: one ticket per buyer, no two tickets at one place, an admitted
/// ticket polled again tells the same place and time, and the server counted each admission
/// the buyers saw once (`server_admitted`: its counter; `None` if it could not be read).
pub fn admitted_once(buyers: &[Buyer], server_admitted: Option<u64>) -> Check {
    let tickets: Vec<&String> = buyers.iter().filter_map(|b| b.ticket.as_ref()).collect();
    let distinct_tickets = tickets.iter().collect::<HashSet<_>>().len() == tickets.len();
    let places: Vec<u64> = buyers.iter().filter_map(|b| b.place).collect();
    let distinct_places = places.iter().collect::<HashSet<_>>().len() == places.len();
    let changed = buyers.iter().filter(|b| b.admission_changed).count();
    let seen = buyers.iter().filter(|b| b.admitted_at_ms.is_some()).count() as u64;
    Check::new(
        "nobody admitted twice",
        distinct_tickets && distinct_places && changed == 0 && server_admitted == Some(seen),
        format!(
            "{} tickets, distinct: {distinct_tickets}; places distinct: {distinct_places}; {changed} changed on a second poll; admitted: {seen} seen, {} counted by the server",
            tickets.len(),
            server_admitted.map_or("none".into(), |n| n.to_string())
        ),
    )
}

/// Nobody was admitted after the sale sold out: no request sent after the first `sold_out`
/// answer any buyer saw was answered `admitted`.
pub fn none_after_sell_out(buyers: &[Buyer]) -> Check {
    let sold_out = buyers.iter().filter_map(|b| b.sold_out_seen_ms).min();
    let late = sold_out.map_or(0, |at| {
        buyers
            .iter()
            .filter(|b| {
                b.admission_sent_ms
                    .into_iter()
                    .chain(b.readmitted_sent_ms)
                    .any(|sent| sent > at)
            })
            .count()
    });
    Check::new(
        "no admission after sell-out",
        late == 0,
        match sold_out {
            Some(_) => format!("{late} admitted by a request sent after the first sold_out answer"),
            None => "the sale did not sell out".into(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pre` pre-start joiners placed in a shuffled order and `post` after them, every one
    /// admitted at `rate` from time 0 and bought; a run that passes every check.
    fn clean_run(pre: u64, post: u64, rate: u32) -> Vec<Buyer> {
        // A fixed shuffle, uncorrelated with join order: multiply by a unit modulo `pre`.
        let shuffled = |i: u64| (i * 7919 + 13) % pre;
        let mut buyers: Vec<Buyer> = (0..pre)
            .map(|i| Buyer {
                pre_start: true,
                joined: i,
                place: Some(shuffled(i) + 1),
                ..Buyer::default()
            })
            .chain((0..post).map(|i| Buyer {
                joined: i,
                place: Some(pre + i + 1),
                ..Buyer::default()
            }))
            .collect();
        let burst = burst(rate);
        for b in &mut buyers {
            let place = b.place.unwrap_or(0);
            let at = (place.saturating_sub(burst) * 1000).div_ceil(u64::from(rate)) as i64;
            b.ticket = Some(format!("t{place}"));
            b.admitted_at_ms = Some(at);
            b.admission_sent_ms = Some(at);
            b.admission_seen_ms = Some(at + 1);
            b.purchase = Some(201);
        }
        buyers
    }

    fn passes(check: Check) -> bool {
        assert!(!check.detail.is_empty());
        check.passed
    }

    #[test]
    fn a_clean_run_passes_every_check() {
        let buyers = clean_run(1000, 200, 100);
        assert!(passes(only_admitted_bought(
            &buyers,
            (403, "admission_required".into()),
            1200
        )));
        assert!(passes(admission_rate(&buyers, 100, 0)));
        assert!(passes(post_start_in_arrival_order(&buyers)));
        assert!(passes(pre_start_shuffled(&buyers)));
        assert!(passes(admitted_once(&buyers, Some(1200))));
        assert!(passes(none_after_sell_out(&buyers)));
    }

    #[test]
    fn a_purchase_without_admission_fails() {
        let mut buyers = clean_run(1000, 10, 100);
        let ok = (403, "admission_required".to_owned());
        assert!(!passes(only_admitted_bought(&buyers, (201, String::new()), 1010)));
        assert!(!passes(only_admitted_bought(
            &buyers,
            (403, "invalid_admission".into()),
            1010
        )));
        assert!(
            !passes(only_admitted_bought(&buyers, ok.clone(), 1011)),
            "a unit sold to nobody admitted"
        );
        buyers[0].admitted_at_ms = None;
        assert!(!passes(only_admitted_bought(&buyers, ok, 1010)));
    }

    #[test]
    fn admissions_over_the_rate_fail() {
        let mut buyers = clean_run(1000, 0, 100);
        // 111 in the first second is the most allowed (100/s + a burst of 10 + one at 1 s).
        assert!(passes(admission_rate(&buyers, 100, 0)));
        for b in buyers.iter_mut().take(200) {
            b.admitted_at_ms = Some(0);
            b.admission_seen_ms = Some(1);
        }
        assert!(!passes(admission_rate(&buyers, 100, 0)));
        assert!(
            passes(admission_rate(&buyers, 100, 1000)),
            "expired slots are handed on"
        );
    }

    #[test]
    fn a_buyer_told_before_its_admission_time_fails() {
        let mut buyers = clean_run(1000, 0, 100);
        let last = buyers.iter_mut().max_by_key(|b| b.place).expect("a buyer");
        last.admission_seen_ms = last.admitted_at_ms.map(|at| at - 500);
        assert!(!passes(admission_rate(&buyers, 100, 0)));
    }

    #[test]
    fn post_start_joiners_out_of_order_or_before_pre_start_ones_fail() {
        let swapped = {
            let mut buyers = clean_run(1000, 20, 100);
            let (a, b) = (buyers[1005].place, buyers[1006].place);
            buyers[1005].place = b;
            buyers[1006].place = a;
            buyers
        };
        assert!(!passes(post_start_in_arrival_order(&swapped)));
        let ahead = {
            let mut buyers = clean_run(1000, 20, 100);
            // A post-start joiner placed among the pre-start ones.
            buyers[1000].place = Some(500);
            buyers[1000].admitted_at_ms = Some(0);
            buyers
        };
        assert!(!passes(post_start_in_arrival_order(&ahead)));
        let late_time = {
            let mut buyers = clean_run(1000, 20, 100);
            buyers[1010].admitted_at_ms = Some(0);
            buyers
        };
        assert!(!passes(post_start_in_arrival_order(&late_time)));
        assert!(
            !passes(post_start_in_arrival_order(&clean_run(1000, 0, 100))),
            "nobody to judge"
        );
    }

    #[test]
    fn pre_start_places_following_join_order_fail() {
        let mut buyers = clean_run(1000, 0, 100);
        for b in &mut buyers {
            b.place = Some(b.joined + 1);
        }
        assert!(!passes(pre_start_shuffled(&buyers)));
        assert!(!passes(pre_start_shuffled(&clean_run(999, 0, 100))), "too few to judge");
        assert!((spearman(&[1, 2, 3, 4], &[10, 20, 30, 40]) - 1.0).abs() < 1e-9);
        assert!((spearman(&[1, 2, 3, 4], &[40, 30, 20, 10]) + 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_second_admission_fails() {
        let shared_place = {
            let mut buyers = clean_run(1000, 10, 100);
            buyers[1].place = buyers[0].place;
            buyers
        };
        assert!(!passes(admitted_once(&shared_place, Some(1010))));
        let changed = {
            let mut buyers = clean_run(1000, 10, 100);
            buyers[3].admission_changed = true;
            buyers
        };
        assert!(!passes(admitted_once(&changed, Some(1010))));
        let clean = clean_run(1000, 10, 100);
        assert!(
            !passes(admitted_once(&clean, Some(1011))),
            "the server counted one more"
        );
        assert!(!passes(admitted_once(&clean, None)));
        let same_ticket = {
            let mut buyers = clean_run(1000, 10, 100);
            buyers[2].ticket = buyers[1].ticket.clone();
            buyers
        };
        assert!(!passes(admitted_once(&same_ticket, Some(1010))));
    }

    #[test]
    fn an_admission_after_sell_out_fails() {
        // Every admission of the clean run was sent by 10 s.
        let mut buyers = clean_run(1000, 10, 100);
        buyers[0].sold_out_seen_ms = Some(20_000);
        assert!(passes(none_after_sell_out(&buyers)));
        buyers[1].admission_sent_ms = Some(20_001);
        assert!(!passes(none_after_sell_out(&buyers)));
        let mut buyers = clean_run(1000, 10, 100);
        buyers[0].sold_out_seen_ms = Some(20_000);
        buyers[2].readmitted_sent_ms = Some(21_000);
        assert!(!passes(none_after_sell_out(&buyers)));
    }
}
