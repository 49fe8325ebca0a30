//! Process-wide counters, rendered as Prometheus text at `/metrics`.
//!
//! Plain atomics (relaxed): the buy path pays one uncontended-ish increment per outcome.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::ApiError;

pub static METRICS: Metrics = Metrics::new();

/// Outcomes of a purchase attempt, as the `outcome` label.
const OUTCOMES: [&str; 8] = [
    "success",
    "sold_out",
    "already_purchased",
    "not_started",
    "ended",
    "sale_not_found",
    "unavailable",
    "error",
];

pub struct Metrics {
    purchases: [AtomicU64; OUTCOMES.len()],
    commit_batches: AtomicU64,
    committed_rows: AtomicU64,
    largest_batch: AtomicU64,
}

impl Metrics {
    const fn new() -> Self {
        Metrics {
            purchases: [const { AtomicU64::new(0) }; OUTCOMES.len()],
            commit_batches: AtomicU64::new(0),
            committed_rows: AtomicU64::new(0),
            largest_batch: AtomicU64::new(0),
        }
    }

    pub fn observe_purchase(&self, result: Result<(), &ApiError>) {
        let index = match result {
            Ok(()) => 0,
            Err(ApiError::SoldOut) => 1,
            Err(ApiError::AlreadyPurchased) => 2,
            Err(ApiError::NotStarted) => 3,
            Err(ApiError::Ended) => 4,
            Err(ApiError::SaleNotFound) => 5,
            Err(ApiError::Unavailable(_) | ApiError::Overloaded | ApiError::OutcomeUnknown) => 6,
            Err(_) => 7,
        };
        self.purchases[index].fetch_add(1, Relaxed);
    }

    pub fn observe_commit(&self, rows: usize) {
        self.commit_batches.fetch_add(1, Relaxed);
        self.committed_rows.fetch_add(rows as u64, Relaxed);
        self.largest_batch.fetch_max(rows as u64, Relaxed);
    }

    /// Prometheus text exposition; `per_sale` is `(sale id, stock, remaining)`.
    pub fn render(&self, per_sale: &[(i64, u64, u64)]) -> String {
        let mut out = String::with_capacity(2048);
        out.push_str(
            "# HELP seckill_purchases_total Purchase attempts by outcome.\n# TYPE seckill_purchases_total counter\n",
        );
        for (name, count) in OUTCOMES.iter().zip(&self.purchases) {
            let _ = writeln!(
                out,
                "seckill_purchases_total{{outcome=\"{name}\"}} {}",
                count.load(Relaxed)
            );
        }
        let _ = write!(
            out,
            "# HELP seckill_commit_batches_total Group-commit transactions.\n# TYPE seckill_commit_batches_total counter\n\
             seckill_commit_batches_total {}\n\
             # HELP seckill_committed_rows_total Rows written by group commit.\n# TYPE seckill_committed_rows_total counter\n\
             seckill_committed_rows_total {}\n\
             # HELP seckill_commit_batch_max Largest group-commit batch so far.\n# TYPE seckill_commit_batch_max gauge\n\
             seckill_commit_batch_max {}\n",
            self.commit_batches.load(Relaxed),
            self.committed_rows.load(Relaxed),
            self.largest_batch.load(Relaxed),
        );
        out.push_str("# HELP seckill_stock_remaining Units left per sale.\n# TYPE seckill_stock_remaining gauge\n");
        for (id, _, remaining) in per_sale {
            let _ = writeln!(out, "seckill_stock_remaining{{sale=\"{id}\"}} {remaining}");
        }
        out.push_str("# HELP seckill_stock_initial Initial stock per sale.\n# TYPE seckill_stock_initial gauge\n");
        for (id, stock, _) in per_sale {
            let _ = writeln!(out, "seckill_stock_initial{{sale=\"{id}\"}} {stock}");
        }
        out
    }
}
