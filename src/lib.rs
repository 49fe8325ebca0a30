//! # seckill: a flash-sale engine
//!
//! A flash sale puts a small stock in front of a crowd at one instant. The engine sells exactly
//! the stock, at most `per_user_limit` units to each buyer, and tells a buyer "success" only once
//! the order is durable.
//!
//! The buy path, top to bottom:
//! 0. [`http::observe`] gives the request its id, applies the per-IP limit and, on the way out,
//!    counts it by route and status in [`metrics`] and logs a server fault with its cause.
//! 1. [`http`] parses the request into domain types ([`domain::UserId`], [`domain::SaleId`]):
//!    the buyer from `X-User-Id` or a JWT ([`http::identity`]), within the per-buyer limit
//!    ([`http::limit`]), with a purchase token when required ([`http::purchase_token`]), and, on a
//!    sale with a waiting room, an admission token: the buyer queued in the [`waiting_room`]
//!    (`POST /api/sales/{id}/queue`, behind a proof of work when asked: [`http::challenge`])
//!    and polled their ticket until it was admitted.
//! 2. [`engine::Engine::purchase`] asks the [`gate::StockGate`] for a unit: an atomic decision
//!    on the sale window, the stock and the per-user limit. Sold out costs one atomic load.
//! 3. The [`store::OrderStore`] makes the order durable (embedded: SQLite, group commit: one
//!    fsync per batch of orders). If that fails the unit is released back to the gate.
//! 4. The handler answers: 201 with the order, or one [`http::error::ApiError`] as JSON.
//!
//! Two sets of backends implement the same traits, chosen once in [`startup`]:
//! - embedded (default): [`gate::MemoryGate`] + [`store::SqliteStore`], one process;
//! - distributed: [`gate::RedisGate`] (one Lua script call per group of a sale's concurrent
//!   purchases, on one Redis or a Redis Cluster; a hot sale's stock split over several shards
//!   by [`gate::shards`]) + [`store::DistributedStore`] (durable once [`log::KafkaLog`] acks; [`consumer`]
//!   writes the log into MySQL; [`reconcile`] re-publishes reservations whose instance died
//!   before the ack).
//!
//! The [`waiting_room`] admits a sale's queue at its rate from counters alone (embedded: in
//! memory, lost on restart; distributed: in Redis, shared by the instances). Each ticket answer
//! tells its place and when the front reached it, so a client can check order and rate; a sale
//! that ended or sold out for good has its queue let go a ticket time to live later.
//!
//! Beside the buy path, a won unit on a sale with a payment window is a hold ([`payment`]): paid
//! through a signed webhook, cancelled, or expired back on sale, exactly one of the three.
//!
//! On start-up, [`engine::Engine::start`] rebuilds the gate from the store, so a restart never
//! resets or re-creates stock; [`recovery`] does the same while running for a sale the gate
//! lost (a Redis that restarted empty). [`startup`] is the one place where backends are chosen;
//! [`shutdown`] drains purchases and flushes the store on SIGTERM. Connections come in through
//! `server`, our own accept loop: it caps them per client address and in total, and closes a
//! connection whose request head trickles or that idles, so slow clients cannot hold the door.
//! [`config`] reads flags, `SECKILL_*` variables and the TOML file, and keeps secrets off the
//! command line; [`backend`] holds the backends' error and what `/readyz` asks each of them.
//!
//! The load generator and the auditor (`seckill bench`, `seckill audit`) are clients of the
//! HTTP API, not part of this library: `crates/loadgen` (`seckill-loadgen`), reading answers
//! into the API's wire types from `crates/api` (`seckill-api`).

pub mod backend;
pub mod config;
#[cfg(feature = "distributed")]
pub mod consumer;
pub mod domain;
pub mod engine;
pub mod gate;
pub mod http;
#[cfg(feature = "distributed")]
pub mod log;
pub mod metrics;
pub mod payment;
#[cfg(feature = "distributed")]
pub mod reconcile;
pub mod recovery;
// The accept loop: connection caps, header and idle timeouts, so slow clients cannot hold the door.
mod server;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod throttle;
pub mod waiting_room;
