//! The benchmark baseline: a bare axum server answering `POST /seckill/seckill` with a small
//! JSON body and doing nothing else. `bench/ratio.sh` measures the engine against it.
//!
//! `cargo run --release --example bare -- 127.0.0.1:3099`

use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

// The engine's allocator, so the ratio compares servers, not allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3099".into());
    let app = Router::new().route(
        "/seckill/seckill",
        post(|| async { Json(json!({ "messages": "抢完了", "ok": false, "code": "sold_out" })) }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("bare listening on http://{addr}");
    axum::serve(listener, app).await
}
