//! # seckill-loadgen: the load generator and the auditor
//!
//! Both are clients of the engine's HTTP API: they read its answers into `seckill_api` types and
//! never link the engine, so the server carries none of their dependencies (HTTP client,
//! histograms, progress bar, plotting). The `seckill` binary exposes them as `seckill bench` and
//! `seckill audit`.
//!
//! A bench run ([`bench::execute`]), top to bottom:
//! 1. `fire`: workers send purchases through `client::Target`, closed or open loop, and
//!    classify each answer (success, sold out, already purchased, closed, overloaded, error);
//! 2. `merge`: the workers' counts, latency histograms and units per buyer become the run's;
//! 3. `check`: the invariants, through the API: exactly the stock sold, no buyer over the
//!    limit, the gate's count moved by exactly the successes, the store holding every unit the
//!    gate sold, once.
//!
//! With `--pay-ratio`, `payment` plays the payment provider: each hold won is paid through the
//! signed webhook or left to expire, buyers refused `sold_out` try again while units may come
//! back, and `check` judges the sale at rest (no order both paid and returned, every unit paid
//! or on sale again).
//!
//! With `--waiting-room`, [`waiting_room`] runs instead: buyers join a sale's queue before and
//! after its start, poll, buy once admitted, and the queue is judged from the server's answers.
//!
//! Then `report` prints the summary (and `--report` writes it as JSON) and `plot` draws every
//! request's latency. [`audit`] compares gate and store of every sale of a running deployment.

pub mod audit;
pub mod bench;
mod check;
mod client;
mod fire;
mod merge;
mod payment;
mod plot;
mod report;
pub mod waiting_room;

pub use audit::AuditConfig;
pub use bench::BenchConfig;
pub use report::{Check, Counts, Latency, Payments, Report};

/// A number of seconds from a flag as a duration: negative is none, too long to count is
/// [`std::time::Duration::MAX`].
pub(crate) fn seconds(secs: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(std::time::Duration::MAX)
}
