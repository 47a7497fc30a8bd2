//! The operator CLI: see `tiersync::cli`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tiersync::cli::init_logging();
    tiersync::cli::run(tiersync::cli::Cli::parse()).await
}
