//! Configuration: one struct per subcommand, filled by `clap` from flags or `SECKILL_*` env.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "seckill",
    version,
    about = "A flash-sale engine: sells exactly the stock, never loses a confirmed order."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine: HTTP API, buyer's page, stock gate and order store.
    Serve(ServeConfig),
    /// Fire the seed's load (many buyers at one sale) and check the invariants afterwards.
    Bench(crate::bench::BenchConfig),
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on (the seed's port is 3030; use port 0 for any free port).
    #[arg(long, env = "SECKILL_LISTEN", default_value = "127.0.0.1:3030")]
    pub listen: SocketAddr,

    /// Where the embedded order store keeps its SQLite file.
    #[arg(long, env = "SECKILL_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Stock of the demo sale created on first start (the one the seed's endpoints sell).
    /// Ignored once the data dir holds a demo sale: a restart never resets stock.
    #[arg(long, env = "SECKILL_DEMO_STOCK", default_value_t = 1000)]
    pub demo_stock: u64,

    /// Bearer token for the admin routes (`POST /api/sales`). Unset: admin routes answer 403.
    #[arg(long, env = "SECKILL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Fault injection for tests: hold each group commit this long before writing it. This
    /// widens the window in which an order is queued but not yet durable, so a crash test can
    /// prove that no buyer is answered inside that window.
    #[arg(long, env = "SECKILL_COMMIT_DELAY_MS", default_value_t = 0, hide = true)]
    pub commit_delay_ms: u64,

    /// Log format on stderr.
    #[arg(long, env = "SECKILL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
