//! Integration tests: each starts the real `seckill` binary on a random port with its own data
//! dir and talks HTTP to it. A file per feature; `helpers` spawns servers and services,
//! `browser`, `prometheus` and `requests` are shared by several features.

mod admin_page;
mod bench;
mod browser;
mod classic_api;
mod concurrency;
mod config;
mod deploy;
mod distributed;
mod durability;
mod errors;
mod helpers;
mod identity;
mod observability;
mod openapi;
mod page;
mod prometheus;
mod purchase;
mod purchase_tokens;
mod rate_limits;
mod requests;
mod sales;
