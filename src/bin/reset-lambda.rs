//! The scheduled daily reset Lambda: see `tiersync::lambda::run_reset` and `tiersync::reset`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tiersync::lambda::run_reset().await
}
