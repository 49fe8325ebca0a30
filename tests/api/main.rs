//! Integration tests: each starts the real `seckill` binary on a random port with its own data
//! dir and talks HTTP to it.

mod admin_page;
mod bench;
mod browser;
mod concurrency;
mod deploy;
mod distributed;
mod durability;
mod errors;
mod helpers;
mod openapi;
mod page;
mod production;
mod purchase;
mod sales;
mod seed;
