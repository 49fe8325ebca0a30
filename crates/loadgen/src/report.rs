//! What a bench run found: the [`Report`] (also the `--report` JSON file) and its printed summary.

use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::fire::Outcome;

/// Answers by outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub success: u64,
    pub sold_out: u64,
    pub already_purchased: u64,
    pub not_started_or_ended: u64,
    /// Shed by the engine: 429 or 503.
    pub overloaded: u64,
    /// Anything else, a failed connection included.
    pub errors: u64,
}

impl Counts {
    pub(crate) fn record(&mut self, outcome: Outcome) {
        let count = match outcome {
            Outcome::Success => &mut self.success,
            Outcome::SoldOut => &mut self.sold_out,
            Outcome::AlreadyPurchased => &mut self.already_purchased,
            Outcome::Closed => &mut self.not_started_or_ended,
            Outcome::Overloaded => &mut self.overloaded,
            Outcome::Error => &mut self.errors,
        };
        *count += 1;
    }

    pub(crate) fn add(&mut self, other: &Counts) {
        self.success += other.success;
        self.sold_out += other.sold_out;
        self.already_purchased += other.already_purchased;
        self.not_started_or_ended += other.not_started_or_ended;
        self.overloaded += other.overloaded;
        self.errors += other.errors;
    }
}

/// Latency of the run's requests, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    /// From a histogram of microseconds.
    pub(crate) fn of(micros: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(micros.value_at_quantile(0.5)),
            p90_ms: ms(micros.value_at_quantile(0.9)),
            p99_ms: ms(micros.value_at_quantile(0.99)),
            p999_ms: ms(micros.value_at_quantile(0.999)),
            max_ms: ms(micros.max()),
            mean_ms: micros.mean() / 1000.0,
        }
    }
}

/// One invariant checked after the load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl Check {
    pub(crate) fn new(name: &str, passed: bool, detail: String) -> Self {
        Check {
            name: name.to_owned(),
            passed,
            detail,
        }
    }
}

/// What the payment provider did in a run with `--pay-ratio`, and the sale at rest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payments {
    pub window_secs: u32,
    pub pay_ratio: f64,
    /// Holds won (purchases answered 201): resold units count again.
    pub holds: u64,
    /// Holds the provider chose not to pay.
    pub let_expire: u64,
    /// Payments the webhook answered 200.
    pub paid: u64,
    /// Payments refused 409 `payment_window_closed`: the hold had expired.
    pub too_late: u64,
    /// Payments refused 409 `already_paid`.
    pub already_paid: u64,
    /// Any other answer, or none.
    pub webhook_errors: u64,
    /// Webhook answers per second, from the first payment due to the last answered.
    pub payments_per_s: f64,
    /// The webhook's latency from when each payment was due (a wait behind `-c` payments in
    /// flight included); `None` when nothing was paid.
    pub webhook_latency: Option<Latency>,
    /// Orders the audit counts as expired by the end of the run.
    pub expired: u64,
    pub stock: u64,
    pub remaining_at_rest: u64,
    pub paid_at_rest: u64,
    /// From the last unpaid hold's `pay_by` to the sale seen with nothing awaiting payment:
    /// how long the last expired unit took to be back on sale. `None` when every hold was paid.
    pub at_rest_after_last_deadline_s: Option<f64>,
}

/// A bench run: the load, what the engine answered, and the invariants checked afterwards.
#[derive(Debug, Serialize)]
pub struct Report {
    pub url: String,
    /// Which buyers: the classic API's anonymous ones, or the per-user API's (and how they
    /// identify themselves).
    pub mode: String,
    pub sale: i64,
    /// Requests sent (fewer than asked when `--duration` ran out).
    pub requests: u64,
    pub concurrency: u64,
    pub elapsed_s: f64,
    pub throughput_rps: f64,
    pub counts: Counts,
    pub latency: Latency,
    /// How long after the last answer the store held every success; `None` with `--no-check`.
    pub drain_s: Option<f64>,
    /// With `--pay-ratio`: the payments and the sale at rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payments: Option<Payments>,
    pub invariants: Vec<Check>,
    /// Every invariant held.
    pub passed: bool,
}

/// The summary `seckill bench` prints, one line per figure and per invariant.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seckill bench: {} against {} (sale {})",
            self.mode, self.url, self.sale
        )?;
        writeln!(
            f,
            "  requests     {} in {:.3} s, concurrency {}",
            self.requests, self.elapsed_s, self.concurrency
        )?;
        writeln!(f, "  throughput   {:.0} req/s", self.throughput_rps)?;
        let l = &self.latency;
        writeln!(
            f,
            "  latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
        )?;
        let c = &self.counts;
        writeln!(
            f,
            "  outcomes     success {}  sold_out {}  already_purchased {}  not_started/ended {}  overloaded {}  errors {}",
            c.success, c.sold_out, c.already_purchased, c.not_started_or_ended, c.overloaded, c.errors
        )?;
        if let Some(d) = self.drain_s {
            writeln!(f, "  drain        all successes stored {d:.3} s after the last answer")?;
        }
        if let Some(p) = &self.payments {
            write!(f, "{p}")?;
        }
        for check in &self.invariants {
            writeln!(
                f,
                "  [{}] {}: {}",
                if check.passed { "ok" } else { "FAIL" },
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

/// The payment lines of the summary.
impl fmt::Display for Payments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  payments     window {} s, pay ratio {:.2}: {} holds → {} paid, {} let expire, {} too late (409), {} already paid, {} errors",
            self.window_secs,
            self.pay_ratio,
            self.holds,
            self.paid,
            self.let_expire,
            self.too_late,
            self.already_paid,
            self.webhook_errors
        )?;
        write!(f, "  webhook      {:.0} payments/s", self.payments_per_s)?;
        if let Some(l) = &self.webhook_latency {
            write!(
                f,
                ", latency ms p50 {:.2}  p99 {:.2}  max {:.2}",
                l.p50_ms, l.p99_ms, l.max_ms
            )?;
        }
        writeln!(f)?;
        write!(
            f,
            "  at rest      remaining {} + paid {} of stock {}; {} expired",
            self.remaining_at_rest, self.paid_at_rest, self.stock, self.expired
        )?;
        if let Some(s) = self.at_rest_after_last_deadline_s {
            write!(
                f,
                "; nothing awaiting payment {s:.3} s after the last unpaid hold's pay_by"
            )?;
        }
        writeln!(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(invariants: Vec<Check>) -> Report {
        let passed = invariants.iter().all(|c| c.passed);
        Report {
            url: "http://127.0.0.1:3030".into(),
            mode: "per-user (20 users)".into(),
            sale: 2,
            requests: 2000,
            concurrency: 500,
            elapsed_s: 0.5,
            throughput_rps: 4000.0,
            counts: Counts {
                success: 1000,
                sold_out: 1000,
                ..Counts::default()
            },
            latency: Latency {
                p50_ms: 1.0,
                p90_ms: 2.0,
                p99_ms: 3.0,
                p999_ms: 4.0,
                max_ms: 5.0,
                mean_ms: 1.5,
            },
            drain_s: Some(0.01),
            payments: None,
            invariants,
            passed,
        }
    }

    #[test]
    fn outcomes_are_counted_each_in_its_own_field() {
        let mut counts = Counts::default();
        for outcome in [
            Outcome::Success,
            Outcome::Success,
            Outcome::SoldOut,
            Outcome::AlreadyPurchased,
            Outcome::Closed,
            Outcome::Overloaded,
            Outcome::Error,
        ] {
            counts.record(outcome);
        }
        assert_eq!(
            counts,
            Counts {
                success: 2,
                sold_out: 1,
                already_purchased: 1,
                not_started_or_ended: 1,
                overloaded: 1,
                errors: 1,
            }
        );
    }

    #[test]
    fn latency_is_read_in_milliseconds() {
        let mut micros = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
        for us in 1..=1000 {
            micros.record(us * 10).expect("in bounds");
        }
        let l = Latency::of(&micros);
        assert!((l.p50_ms - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.max_ms - 10.0).abs() < 0.01, "{l:?}");
        assert!(l.p50_ms <= l.p90_ms && l.p90_ms <= l.p99_ms && l.p99_ms <= l.p999_ms);
    }

    #[test]
    fn payments_are_summarised_when_there_are_any() {
        let mut r = report(Vec::new());
        assert!(!r.to_string().contains("payments"));
        r.payments = Some(Payments {
            window_secs: 2,
            pay_ratio: 0.5,
            holds: 100,
            let_expire: 48,
            paid: 50,
            too_late: 2,
            already_paid: 0,
            webhook_errors: 0,
            payments_per_s: 25.0,
            webhook_latency: None,
            expired: 50,
            stock: 50,
            remaining_at_rest: 0,
            paid_at_rest: 50,
            at_rest_after_last_deadline_s: Some(0.18),
        });
        let text = r.to_string();
        assert!(
            text.contains("\n  payments     window 2 s, pay ratio 0.50: 100 holds → 50 paid, 48 let expire, 2 too late (409), 0 already paid, 0 errors\n  webhook      25 payments/s\n  at rest      remaining 0 + paid 50 of stock 50; 50 expired; nothing awaiting payment 0.180 s after the last unpaid hold's pay_by\n"),
            "{text}"
        );
    }

    #[test]
    fn the_summary_names_each_invariant_and_the_verdict() {
        let ok = report(vec![Check::new(
            "stored == sold",
            true,
            "gate sold 3, store holds 3".into(),
        )]);
        let text = ok.to_string();
        assert!(text.starts_with("seckill bench: per-user (20 users) against http://127.0.0.1:3030 (sale 2)\n"));
        assert!(
            text.contains("\n  [ok] stored == sold: gate sold 3, store holds 3\n"),
            "{text}"
        );
        assert!(text.ends_with("\nPASSED"), "{text}");
        let failed = report(vec![Check::new("remaining == x", false, "d".into())]);
        let text = failed.to_string();
        assert!(text.contains("  [FAIL] remaining == x: d\n"), "{text}");
        assert!(text.ends_with("FAILED: an invariant is violated"), "{text}");
    }
}
