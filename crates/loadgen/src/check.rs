//! The invariants, checked through the API once the load is over: exactly the stock sold (or
//! at most, when some requests failed), no buyer over the limit, the gate's count moved by the
//! successes, and the store holding every unit the gate sold, once.
//!
//! With payments ([`check_paying`]) units come back and are sold again, so the count of
//! successes proves nothing; what must hold is that no order is both paid and returned, and
//! that at rest every unit is paid for or on sale again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use seckill_api::{Audit, OrderState, SaleView};

use crate::client::{ClientError, Target};
use crate::merge::Merged;
use crate::payment::{Hold, Ledger};
use crate::report::{Check, Counts};

/// The checks' verdicts, and how long the store took to hold every success.
pub(crate) struct Verdict {
    pub invariants: Vec<Check>,
    pub drain: Duration,
}

/// Checks the run against the sale as it was before the load (`before`). `users`: the number
/// of named buyers, `None` for the classic API's anonymous ones. The store is given up to
/// `drain_timeout` to hold every unit the gate sold.
pub(crate) async fn check(
    target: &Target,
    before: &SaleView,
    users: Option<u64>,
    run: &Merged,
    drain_timeout: Duration,
) -> Result<Verdict, ClientError> {
    let limit = u64::from(before.per_user_limit);
    let mut invariants = vec![
        successes(&run.counts, before.remaining, units_wanted(users, run.sent(), limit)),
        per_user_limit(&run.per_user, limit),
    ];
    let after = target.sale(before.id).await?;
    invariants.push(remaining(before.remaining, after.remaining, run.counts.success));
    let drain_started = Instant::now();
    let audit = drained(target, before.id, drain_timeout).await?;
    let drain = drain_started.elapsed();
    invariants.push(stored_equals_sold(&audit));
    invariants.push(no_duplicates(&audit));
    Ok(Verdict { invariants, drain })
}

/// The verdict of a run with payments, and the sale at rest.
pub(crate) struct PaidVerdict {
    pub invariants: Vec<Check>,
    /// The sale once nothing awaited payment (or when the wait gave up).
    pub at_rest: SaleView,
    pub audit: Audit,
    /// When the sale was seen at rest, in unix milliseconds.
    pub at_rest_unix_ms: i64,
}

/// Checks a run with payments, against the sale and its audit from before the load. Waits up
/// to `timeout` for every hold to close (paid or expired), then reads back every order the
/// provider was answered about, `concurrency` at a time.
pub(crate) async fn check_paying(
    target: &Arc<Target>,
    before: &SaleView,
    audit_before: &Audit,
    run: &Merged,
    ledger: &Ledger,
    timeout: Duration,
    concurrency: usize,
) -> Result<PaidVerdict, ClientError> {
    let (at_rest, at_rest_unix_ms) = at_rest(target, before.id, timeout).await?;
    let paid = states(target, &ledger.paid, concurrency).await;
    let too_late = states(target, &ledger.too_late, concurrency).await;
    let audit = settled(target, before.id, timeout).await?;
    let mut invariants = vec![per_user_limit(&run.per_user, u64::from(before.per_user_limit))];
    invariants.extend(payment_invariants(&Settled {
        stock: before.stock,
        at_rest: &at_rest,
        audit_before,
        audit: &audit,
        paid: &paid,
        too_late: &too_late,
        webhook_errors: ledger.errors,
    }));
    invariants.push(stored_equals_sold(&audit));
    invariants.push(no_duplicates(&audit));
    Ok(PaidVerdict {
        invariants,
        at_rest,
        audit,
        at_rest_unix_ms,
    })
}

/// The sale once nothing awaits payment, or as it is when `timeout` is up; and when it was read.
async fn at_rest(target: &Target, sale: i64, timeout: Duration) -> Result<(SaleView, i64), ClientError> {
    let started = Instant::now();
    loop {
        let view = target.sale(sale).await?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        if is_at_rest(&view) || started.elapsed() > timeout {
            return Ok((view, now.as_millis() as i64));
        }
        // Often enough to time an expiry sweep (every ~200 ms) to a few milliseconds.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Nothing awaits payment and every unit is paid for or back on sale. Both are needed: the
/// engine stops counting a hold as awaiting payment when it decides the expiry, and gives the
/// unit back only once the expiry is durable; in between the unit is in neither count.
pub(crate) fn is_at_rest(view: &SaleView) -> bool {
    view.awaiting_payment == 0 && view.remaining + view.paid == view.stock
}

/// Each hold's order as the engine has it now (`None`: it could not be read).
async fn states(target: &Arc<Target>, holds: &[Hold], concurrency: usize) -> OrderStates {
    let per_task = holds.len().div_ceil(concurrency.max(1)).max(1);
    let tasks: Vec<_> = holds
        .chunks(per_task)
        .map(|chunk| {
            let (target, chunk) = (Arc::clone(target), chunk.to_vec());
            tokio::spawn(async move {
                let mut read = Vec::with_capacity(chunk.len());
                for hold in chunk {
                    let state = target.order(&hold.order_id, &hold.buyer).await.ok().map(|o| o.state);
                    read.push((hold.order_id, state));
                }
                read
            })
        })
        .collect();
    let mut all = Vec::with_capacity(holds.len());
    for task in tasks {
        // A task that panicked read nothing: its orders count as unread, which fails the check.
        all.extend(task.await.unwrap_or_default());
    }
    all
}

/// Orders by id, each with its state (`None`: it could not be read).
pub(crate) type OrderStates = Vec<(String, Option<OrderState>)>;

/// What a run with payments is judged on, read once the sale is at rest.
pub(crate) struct Settled<'a> {
    pub stock: u64,
    pub at_rest: &'a SaleView,
    pub audit_before: &'a Audit,
    pub audit: &'a Audit,
    /// Orders the webhook answered paid, and their state at rest.
    pub paid: &'a [(String, Option<OrderState>)],
    /// Orders whose payment the webhook refused as too late, and their state at rest.
    pub too_late: &'a [(String, Option<OrderState>)],
    /// Payments answered neither 200 nor 409 (a wrong secret, a fault), or not at all.
    pub webhook_errors: u64,
}

/// The payment invariants: no order both paid and returned, paid within the stock, every unit
/// paid or back on sale at rest, every late payment refused and counted, the audit consistent.
pub(crate) fn payment_invariants(s: &Settled) -> Vec<Check> {
    let paid_now = s.audit.paid.saturating_sub(s.audit_before.paid);
    let late_now = s.audit.late_payments.saturating_sub(s.audit_before.late_payments);
    let view = s.at_rest;
    vec![
        // Without this a wrong secret (every payment 401) would pass as a run where nobody paid.
        Check::new(
            "every payment answered 200 or 409",
            s.webhook_errors == 0,
            format!("{} payments answered otherwise or not at all", s.webhook_errors),
        ),
        all_in(s.paid, OrderState::Paid, "every order answered paid is paid at rest"),
        all_in(
            s.too_late,
            OrderState::Expired,
            "every payment refused as too late is for an expired order",
        ),
        Check::new(
            "paid <= stock",
            view.paid <= s.stock,
            format!("paid {}, stock {}", view.paid, s.stock),
        ),
        Check::new(
            "paid == payments answered 200",
            paid_now == s.paid.len() as u64,
            format!("audit paid +{paid_now}, webhook answered 200 to {}", s.paid.len()),
        ),
        Check::new(
            "at rest: remaining + paid == stock, nothing awaiting payment",
            view.awaiting_payment == 0 && view.remaining + view.paid == s.stock,
            format!(
                "remaining {} + paid {} vs stock {}, awaiting payment {}",
                view.remaining, view.paid, s.stock, view.awaiting_payment
            ),
        ),
        Check::new(
            "late payments refused: 409 payment_window_closed == audit late_payments",
            late_now == s.too_late.len() as u64,
            format!("409s {}, audit late_payments +{late_now}", s.too_late.len()),
        ),
        Check::new(
            "audit consistent",
            s.audit.consistent,
            format!(
                "remaining {} stored {} open {} conflicts {} duplicates {} over_limit {}",
                s.audit.remaining,
                s.audit.stored,
                s.audit.open_reservations,
                s.audit.conflicts,
                s.audit.duplicates,
                s.audit.over_limit
            ),
        ),
    ]
}

/// Every order of `orders` is in `state`; the detail names the first that is not.
fn all_in(orders: &[(String, Option<OrderState>)], state: OrderState, name: &str) -> Check {
    let wrong: Vec<_> = orders.iter().filter(|(_, s)| *s != Some(state)).collect();
    let detail = match wrong.first() {
        None => format!("{} orders, all {}", orders.len(), state.as_str()),
        Some((id, found)) => format!(
            "{} of {} orders not {}, e.g. {id}: {}",
            wrong.len(),
            orders.len(),
            state.as_str(),
            found.map_or("unreadable", |s| s.as_str())
        ),
    };
    Check::new(name, wrong.is_empty(), detail)
}

/// The sale's audit once the store has caught up with the gate (a distributed store records
/// expiries a little after the gate decides them), or as it is when `timeout` is up.
async fn settled(target: &Target, sale: i64, timeout: Duration) -> Result<Audit, ClientError> {
    let started = Instant::now();
    loop {
        let audit = target.audit(sale).await?;
        if (audit.consistent && audit.stored == audit.sold) || started.elapsed() > timeout {
            return Ok(audit);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sale's audit once the store holds every unit the gate sold, or when `timeout` is up.
async fn drained(target: &Target, sale: i64, timeout: Duration) -> Result<Audit, ClientError> {
    let started = Instant::now();
    loop {
        let audit = target.audit(sale).await?;
        if audit.stored >= audit.sold || started.elapsed() > timeout {
            return Ok(audit);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The most units the load's buyers could take: each named buyer its limit, each anonymous
/// buyer one (the demo sale's limit).
fn units_wanted(users: Option<u64>, sent: u64, limit: u64) -> u64 {
    match users {
        Some(users) => users.min(sent).saturating_mul(limit),
        None => sent,
    }
}

fn successes(counts: &Counts, remaining_before: u64, wanted: u64) -> Check {
    let expected = remaining_before.min(wanted);
    // Buyers refused for a reason other than stock could have bought: with errors or shed
    // load the exact count cannot be predicted, only bounded.
    let clean = counts.errors == 0 && counts.overloaded == 0 && counts.not_started_or_ended == 0;
    if clean {
        Check::new(
            "successes == min(stock, buyers)",
            counts.success == expected,
            format!("{} successes, expected {expected}", counts.success),
        )
    } else {
        Check::new(
            "successes <= min(stock, buyers)",
            counts.success <= expected,
            format!("{} successes, bound {expected} (some requests failed)", counts.success),
        )
    }
}

fn per_user_limit(per_user: &HashMap<u64, u32>, limit: u64) -> Check {
    let worst = per_user.values().copied().max().unwrap_or(0);
    Check::new(
        "no buyer over the per-user limit",
        u64::from(worst) <= limit,
        format!("most units to one buyer: {worst}, limit {limit}"),
    )
}

/// Nobody but the load bought: the gate's count moved by exactly the load's successes.
fn remaining(before: u64, after: u64, successes: u64) -> Check {
    Check::new(
        "remaining == remaining_before − successes",
        after == before.saturating_sub(successes) && before >= successes,
        format!("remaining {before} → {after}, {successes} successes"),
    )
}

fn stored_equals_sold(audit: &Audit) -> Check {
    Check::new(
        "stored == sold (nothing lost, nothing extra)",
        audit.stored == audit.sold,
        format!("gate sold {}, store holds {}", audit.sold, audit.stored),
    )
}

fn no_duplicates(audit: &Audit) -> Check {
    Check::new(
        "store has no duplicate (sale, user, seq)",
        audit.duplicates == 0,
        format!("duplicates: {}", audit.duplicates),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(sold: u64, stored: u64, duplicates: u64) -> Audit {
        Audit {
            sale_id: 1,
            stock: 1000,
            remaining: 1000 - sold,
            sold,
            stored,
            open_reservations: 0,
            duplicates,
            conflicts: 0,
            over_limit: 0,
            awaiting_payment: 0,
            paid: 0,
            expired: 0,
            cancelled: 0,
            late_payments: 0,
            consistent: sold == stored && duplicates == 0,
        }
    }

    fn view(remaining: u64, paid: u64, awaiting_payment: u64) -> SaleView {
        SaleView {
            id: 1,
            name: "held".into(),
            stock: 50,
            remaining,
            sold: 50 - remaining,
            per_user_limit: 1,
            starts_at: None,
            ends_at: None,
            status: seckill_api::SaleStatus::Live,
            demo: false,
            server_time: "2026-11-25T10:00:00.000Z".into(),
            payment_window_secs: 2,
            awaiting_payment,
            paid,
            waiting_room: None,
            stock_shards: 1,
        }
    }

    fn orders(states: &[OrderState]) -> OrderStates {
        states
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("o{i}"), Some(*s)))
            .collect()
    }

    /// A run of 50 stock: 30 paid, 2 payments too late (their orders expired), nothing left.
    fn settled_run() -> (SaleView, Audit, Audit, OrderStates, OrderStates) {
        let mut after = audit(30, 30, 0);
        after.stock = 50;
        after.remaining = 20;
        after.paid = 30;
        after.expired = 25;
        after.late_payments = 2;
        (
            view(20, 30, 0),
            audit(0, 0, 0),
            after,
            orders(&[OrderState::Paid; 30]),
            orders(&[OrderState::Expired; 2]),
        )
    }

    fn judge(
        view: &SaleView,
        before: &Audit,
        after: &Audit,
        paid: &[(String, Option<OrderState>)],
        late: &[(String, Option<OrderState>)],
    ) -> Vec<Check> {
        payment_invariants(&Settled {
            stock: 50,
            at_rest: view,
            audit_before: before,
            audit: after,
            paid,
            too_late: late,
            webhook_errors: 0,
        })
    }

    fn failed(checks: &[Check]) -> Vec<&str> {
        checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn a_settled_run_with_payments_passes_every_check() {
        let (view, before, after, paid, late) = settled_run();
        let checks = judge(&view, &before, &after, &paid, &late);
        assert_eq!(checks.len(), 8);
        assert!(failed(&checks).is_empty(), "{checks:?}");
    }

    #[test]
    fn payments_the_webhook_refused_otherwise_fail() {
        let (view, before, after, paid, late) = settled_run();
        let checks = payment_invariants(&Settled {
            stock: 50,
            at_rest: &view,
            audit_before: &before,
            audit: &after,
            paid: &paid,
            too_late: &late,
            webhook_errors: 3,
        });
        assert_eq!(failed(&checks), ["every payment answered 200 or 409"]);
        assert_eq!(checks[0].detail, "3 payments answered otherwise or not at all");
    }

    #[test]
    fn at_rest_means_nothing_awaiting_and_nothing_in_transit() {
        assert!(is_at_rest(&view(20, 30, 0)));
        assert!(!is_at_rest(&view(19, 30, 1)), "a hold awaiting payment");
        // An expiry decided but not yet durable: neither awaiting nor back on sale.
        assert!(!is_at_rest(&view(19, 30, 0)), "a unit in transit");
    }

    #[test]
    fn an_order_paid_and_returned_fails() {
        let (view, before, after, mut paid, late) = settled_run();
        paid[3].1 = Some(OrderState::Expired);
        let checks = judge(&view, &before, &after, &paid, &late);
        assert_eq!(failed(&checks), ["every order answered paid is paid at rest"]);
        assert_eq!(checks[1].detail, "1 of 30 orders not paid, e.g. o3: expired");
        paid[3].1 = None;
        let checks = judge(&view, &before, &after, &paid, &late);
        assert_eq!(checks[1].detail, "1 of 30 orders not paid, e.g. o3: unreadable");
    }

    #[test]
    fn a_late_payment_that_took_the_unit_fails() {
        let (view, before, after, paid, mut late) = settled_run();
        late[0].1 = Some(OrderState::Paid);
        assert_eq!(
            failed(&judge(&view, &before, &after, &paid, &late)),
            ["every payment refused as too late is for an expired order"]
        );
    }

    #[test]
    fn units_neither_paid_nor_back_on_sale_fail() {
        let (_, before, after, paid, late) = settled_run();
        // One unit lost: neither paid nor back on sale.
        let lost = judge(&view(19, 30, 0), &before, &after, &paid, &late);
        assert_eq!(
            failed(&lost),
            ["at rest: remaining + paid == stock, nothing awaiting payment"]
        );
        // Still awaiting payment: not at rest.
        let held = judge(&view(19, 30, 1), &before, &after, &paid, &late);
        assert_eq!(
            failed(&held),
            ["at rest: remaining + paid == stock, nothing awaiting payment"]
        );
        let oversold = judge(&view(0, 51, 0), &before, &after, &paid, &late);
        assert!(failed(&oversold).contains(&"paid <= stock"), "{oversold:?}");
    }

    #[test]
    fn payments_the_audit_does_not_count_as_the_webhook_did_fail() {
        let (view, before, mut after, paid, late) = settled_run();
        after.late_payments = 1;
        after.paid = 31;
        after.consistent = false;
        assert_eq!(
            failed(&judge(&view, &before, &after, &paid, &late)),
            [
                "paid == payments answered 200",
                "late payments refused: 409 payment_window_closed == audit late_payments",
                "audit consistent"
            ]
        );
        // Payments made before the run are not the run's.
        let mut earlier = audit(0, 0, 0);
        earlier.paid = 1;
        earlier.late_payments = 1;
        let checks = judge(&view, &earlier, &after, &paid, &late);
        assert_eq!(
            failed(&checks),
            [
                "late payments refused: 409 payment_window_closed == audit late_payments",
                "audit consistent"
            ]
        );
    }

    #[test]
    fn named_buyers_want_their_limit_each_anonymous_ones_one() {
        assert_eq!(units_wanted(Some(20), 20_000, 1000), 20_000);
        // Fewer requests than buyers: only those who sent could buy.
        assert_eq!(units_wanted(Some(20), 5, 3), 15);
        assert_eq!(units_wanted(None, 2000, 1), 2000);
    }

    #[test]
    fn a_clean_run_sells_exactly_the_stock() {
        let counts = Counts {
            success: 1000,
            sold_out: 1000,
            ..Counts::default()
        };
        let check = successes(&counts, 1000, 2000);
        assert_eq!(check.name, "successes == min(stock, buyers)");
        assert!(check.passed, "{}", check.detail);
        let short = Counts { success: 999, ..counts };
        assert!(!successes(&short, 1000, 2000).passed, "one unit unsold");
    }

    #[test]
    fn a_run_with_failures_is_only_bounded() {
        let counts = Counts {
            success: 900,
            errors: 100,
            ..Counts::default()
        };
        let check = successes(&counts, 1000, 2000);
        assert_eq!(check.name, "successes <= min(stock, buyers)");
        assert!(check.passed, "{}", check.detail);
        let oversold = Counts {
            success: 1001,
            ..counts
        };
        assert!(!successes(&oversold, 1000, 2000).passed);
    }

    #[test]
    fn a_buyer_over_the_limit_fails() {
        let within = HashMap::from([(0, 2), (1, 1)]);
        assert!(per_user_limit(&within, 2).passed);
        let over = HashMap::from([(0, 3), (1, 1)]);
        let check = per_user_limit(&over, 2);
        assert!(!check.passed);
        assert_eq!(check.detail, "most units to one buyer: 3, limit 2");
        assert!(per_user_limit(&HashMap::new(), 1).passed, "nobody bought");
    }

    #[test]
    fn a_unit_sold_outside_the_load_fails_the_remaining_check() {
        assert!(remaining(1000, 0, 1000).passed);
        let intruder = remaining(1000, 899, 100);
        assert!(!intruder.passed);
        assert_eq!(intruder.detail, "remaining 1000 → 899, 100 successes");
        assert!(!remaining(10, 0, 11).passed, "more successes than stock");
    }

    #[test]
    fn the_store_must_hold_every_sold_unit_once() {
        assert!(stored_equals_sold(&audit(10, 10, 0)).passed);
        assert!(!stored_equals_sold(&audit(10, 9, 0)).passed, "an order lost");
        assert!(!stored_equals_sold(&audit(10, 11, 0)).passed, "an order extra");
        assert!(no_duplicates(&audit(10, 10, 0)).passed);
        let duplicated = no_duplicates(&audit(10, 10, 1));
        assert!(!duplicated.passed);
        assert_eq!(duplicated.detail, "duplicates: 1");
    }
}
