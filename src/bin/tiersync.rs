//! The operator CLI: see `tiersync::cli`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    tiersync::cli::init_logging();
    match tiersync::cli::run(tiersync::cli::Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain on one line; a backtrace helps nobody operating the tool.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
