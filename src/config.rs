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
    /// Run only the distributed mode's consumer (Kafka → MySQL).
    Consumer(ConsumerConfig),
    /// Fire the seed's load (many buyers at one sale) and check the invariants afterwards.
    Bench(crate::bench::BenchConfig),
    /// Compare gate and store of a running deployment, sale by sale; exit 1 if inconsistent.
    Audit(crate::audit::AuditConfig),
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

    /// Fault injection for tests: hold each order this long before its durability point (the
    /// group commit, or the publish to Kafka). This widens the window in which an order is
    /// reserved but not yet durable, so a crash test can prove what happens inside it.
    #[arg(long, env = "SECKILL_COMMIT_DELAY_MS", default_value_t = 0, hide = true)]
    pub commit_delay_ms: u64,

    /// Log format on stderr.
    #[arg(long, env = "SECKILL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Purchases in flight at once; beyond it buyers get 503 `overloaded` (with Retry-After)
    /// at once, so a stampede beyond capacity never builds an unbounded queue.
    #[arg(long, env = "SECKILL_MAX_INFLIGHT_PURCHASES", default_value_t = crate::engine::DEFAULT_MAX_IN_FLIGHT)]
    pub max_inflight_purchases: usize,

    /// A request body must arrive within this time (408 otherwise).
    #[arg(long, env = "SECKILL_REQUEST_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_body_timeout_ms: u64,

    /// `embedded`: one process, in-process gate, SQLite. `distributed`: Redis gate, Kafka log,
    /// MySQL store; run as many instances as you like on the same services.
    #[arg(long, env = "SECKILL_BACKEND", value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,

    /// Distributed mode: do not run the consumer in this process (run `seckill consumer`).
    #[arg(long, env = "SECKILL_NO_CONSUMER")]
    pub no_consumer: bool,

    #[command(flatten)]
    pub distributed: DistributedConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Embedded,
    Distributed,
}

/// Where the distributed mode's services are.
#[derive(Debug, Clone, Args)]
pub struct DistributedConfig {
    /// Redis holding the stock gate.
    #[arg(long, env = "SECKILL_REDIS_URL", default_value = "redis://127.0.0.1:6379/0")]
    pub redis_url: String,

    /// Prefix of every Redis key (several deployments can share one Redis).
    #[arg(long, env = "SECKILL_REDIS_PREFIX", default_value = "seckill")]
    pub redis_prefix: String,

    /// Kafka bootstrap servers (Apache Kafka, Redpanda, tansu…).
    #[arg(long, env = "SECKILL_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topic of the order log.
    #[arg(long, env = "SECKILL_KAFKA_TOPIC", default_value = "seckill-orders")]
    pub kafka_topic: String,

    /// Partitions of the topic when the engine creates it.
    #[arg(long, env = "SECKILL_KAFKA_PARTITIONS", default_value_t = 8)]
    pub kafka_partitions: i32,

    /// Consumer group of the order consumers.
    #[arg(long, env = "SECKILL_KAFKA_GROUP", default_value = "seckill-consumer")]
    pub kafka_group: String,

    /// How long a purchase waits for the broker's ack before answering 503.
    #[arg(long, env = "SECKILL_KAFKA_TIMEOUT_MS", default_value_t = 5000)]
    pub kafka_timeout_ms: u64,

    /// MySQL (or MariaDB) of the order store; the database is created when missing.
    #[arg(
        long,
        env = "SECKILL_DATABASE_URL",
        default_value = "mysql://root@127.0.0.1:3306/seckill"
    )]
    pub database_url: String,

    /// Most MySQL connections per process.
    #[arg(long, env = "SECKILL_DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,

    /// Timeout of each Redis call and of connecting to Redis and MySQL.
    #[arg(long, env = "SECKILL_BACKEND_TIMEOUT_MS", default_value_t = 2000)]
    pub backend_timeout_ms: u64,

    /// A reservation unconfirmed for this long is re-published by the reconciler.
    /// Must be at least twice --kafka-timeout-ms.
    #[arg(long, env = "SECKILL_RECONCILE_AFTER_MS", default_value_t = 30_000)]
    pub reconcile_after_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ConsumerConfig {
    #[command(flatten)]
    pub distributed: DistributedConfig,

    /// Log format on stderr.
    #[arg(long, env = "SECKILL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
