//! The invariants, checked through the API once the load is over: exactly the stock sold (or
//! at most, when some requests failed), no buyer over the limit, the gate's count moved by the
//! successes, and the store holding every unit the gate sold, once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use seckill_api::{Audit, SaleView};

use crate::client::{ClientError, Target};
use crate::merge::Merged;
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
