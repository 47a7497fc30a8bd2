//! The stream-triggered Lambda: see `tiersync::lambda`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tiersync::lambda::run_sync().await
}
