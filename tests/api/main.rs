//! Integration tests: each starts the real `seckill` binary on a random port with its own data
//! dir and talks HTTP to it. A file per feature; `helpers` spawns servers and services,
//! `browser`, `prometheus` and `requests` are shared by several features; `services` starts the
//! distributed mode's Redis, MariaDB and broker.
//!
//! Features choose what runs: `distributed` (default) adds the distributed mode's tests, `e2e`
//! the ones that need Chromium, root or schemathesis. `cargo test --no-default-features` is the
//! suite a laptop with only Rust runs.

// Without the distributed tests some shared helpers and imports go unused.
#![cfg_attr(not(feature = "distributed"), allow(unused))]

#[cfg(feature = "e2e")]
mod admin_page;
mod bench;
#[cfg(feature = "e2e")]
mod browser;
mod classic_api;
mod concurrency;
mod config;
mod connections;
mod deploy;
#[cfg(feature = "distributed")]
mod distributed;
mod durability;
mod errors;
mod helpers;
mod identity;
mod observability;
mod openapi;
#[cfg(feature = "e2e")]
mod page;
mod payments;
mod prometheus;
mod purchase;
mod purchase_tokens;
mod rate_limits;
#[cfg(feature = "distributed")]
mod redis_cluster;
mod requests;
mod sales;
#[cfg(feature = "e2e")]
mod schemathesis;
#[cfg(feature = "distributed")]
mod services;
#[cfg(feature = "distributed")]
mod stock_shards;
mod waiting_room;
