//! Integration tests: each starts the real `seckill` binary on a random port with its own data
//! dir and talks HTTP to it.

mod bench;
mod concurrency;
mod distributed;
mod durability;
mod errors;
mod helpers;
mod page;
mod purchase;
mod sales;
mod seed;
