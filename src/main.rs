use anyhow::Context;
use clap::{Parser, Subcommand};
use seckill::config::{Backend, ConfigError, ConsumerConfig, LogFormat, ServeConfig};
use seckill::gate::StockGate;
use seckill::startup::{Application, EmbeddedApp};
use seckill::store::OrderStore;
use seckill_loadgen::{AuditConfig, BenchConfig};

/// The buy path allocates on tokio workers and frees on the group-commit writer thread; glibc's
/// malloc spends ~10% of the selling path on that (perf), mimalloc a fraction of it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "seckill",
    version,
    about = "A flash-sale engine: sells exactly the stock, never loses a confirmed order."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The engine's two roles, and the two clients of its API.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine: HTTP API, buyer's page, stock gate and order store.
    Serve(Box<ServeConfig>),
    /// Run only the distributed mode's consumer (Kafka → MySQL).
    Consumer(ConsumerConfig),
    /// Fire the classic scenario's load (many buyers at one sale) and check the invariants afterwards.
    Bench(BenchConfig),
    /// Compare gate and store of a running deployment, sale by sale; exit 1 if inconsistent.
    Audit(AuditConfig),
}

fn main() -> anyhow::Result<()> {
    let cli: Cli = match seckill::config::load(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(mut config) => {
            config.drop_empty_secrets();
            init_tracing(config.log_format);
            match config.backend {
                Backend::Embedded => serve(EmbeddedApp::build(&config).await).await,
                #[cfg(feature = "distributed")]
                Backend::Distributed => serve(seckill::startup::DistributedApp::build(&config).await).await,
                #[cfg(not(feature = "distributed"))]
                Backend::Distributed => Err(without_distributed()),
            }
        }
        Command::Consumer(config) => {
            init_tracing(config.log_format);
            #[cfg(feature = "distributed")]
            return seckill::startup::run_consumer(&config, seckill::shutdown::signal())
                .await
                .context("consumer");
            #[cfg(not(feature = "distributed"))]
            return Err(without_distributed());
        }
        Command::Bench(config) => {
            init_tracing(LogFormat::Text);
            exit_1_unless(seckill_loadgen::bench::run(config).await?)
        }
        Command::Audit(config) => exit_1_unless(seckill_loadgen::audit::run(config).await?),
    }
}

#[cfg(not(feature = "distributed"))]
fn without_distributed() -> anyhow::Error {
    anyhow::anyhow!("this build has no distributed backend: build with `--features distributed` (on by default)")
}

/// A bench or audit that found an invariant violated exits 1 (an error to run it exits 1 too,
/// with the cause).
fn exit_1_unless(passed: bool) -> anyhow::Result<()> {
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

async fn serve<G: StockGate, S: OrderStore>(
    app: Result<Application<G, S>, seckill::startup::StartupError>,
) -> anyhow::Result<()> {
    let app = app.context("cannot start the engine")?;
    // Tests and scripts read this line to find the port when listening on port 0.
    println!("seckill listening on http://{}", app.local_addr());
    app.run_until(seckill::shutdown::signal())
        .await
        .context("server error")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SECKILL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
