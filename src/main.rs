use anyhow::Context;
use seckill::config::{Backend, Command, LogFormat};
use seckill::gate::StockGate;
use seckill::startup::{Application, DistributedApp, EmbeddedApp};
use seckill::store::OrderStore;

/// The buy path allocates on tokio workers and frees on the group-commit writer thread; glibc's
/// malloc spends ~10% of the selling path on that (perf), mimalloc a fraction of it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Before the runtime starts: loading the config file sets environment variables.
    let cli = match seckill::config::load(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(seckill::config::ConfigError::Cli(e)) => e.exit(),
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
        Command::Serve(config) => {
            init_tracing(config.log_format);
            match config.backend {
                Backend::Embedded => serve(EmbeddedApp::build(&config).await).await,
                Backend::Distributed => serve(DistributedApp::build(&config).await).await,
            }
        }
        Command::Consumer(config) => {
            init_tracing(config.log_format);
            seckill::startup::run_consumer(&config, seckill::shutdown::signal())
                .await
                .context("consumer")
        }
        Command::Bench(config) => {
            init_tracing(LogFormat::Text);
            if !seckill::bench::run(config).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Audit(config) => {
            if !seckill::audit::run(config).await? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
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
