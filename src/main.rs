use anyhow::Context;
use clap::Parser;
use seckill::config::{Cli, Command, LogFormat};
use seckill::startup::EmbeddedApp;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            init_tracing(config.log_format);
            let app = EmbeddedApp::build(&config).await.context("cannot start the engine")?;
            // Tests and scripts read this line to find the port when listening on port 0.
            println!("seckill listening on http://{}", app.local_addr());
            app.run_until(seckill::shutdown::signal())
                .await
                .context("server error")?;
            tracing::info!("stopped cleanly");
            Ok(())
        }
        Command::Bench(config) => {
            init_tracing(LogFormat::Text);
            let passed = seckill::bench::run(config).await?;
            if !passed {
                std::process::exit(1);
            }
            Ok(())
        }
    }
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
