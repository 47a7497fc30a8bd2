//! The `sync-lambda` runtime glue: configuration read once at cold start, JSON logs, one SDK
//! client for the life of the execution environment, and one EMF line per invocation.

use aws_lambda_events::streams::DynamoDbEventResponse;
use chrono::Utc;
use lambda_runtime::{service_fn, LambdaEvent};

use crate::handler::{RawEvent, SyncHandler, DEFAULT_CONCURRENCY};
use crate::metrics::{emf_line, DEFAULT_NAMESPACE};
use crate::store::DynamoStore;

/// Configuration from the function's environment, validated before the first invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// `TABLE_NAME` (required).
    pub table: String,
    /// `SYNC_CONCURRENCY`: concurrent PROFILE writes per batch (default 32).
    pub concurrency: usize,
    /// `METRICS_NAMESPACE` (default `tiersync`).
    pub namespace: String,
}

/// A configuration value that is missing or malformed.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl SyncConfig {
    /// Reads the configuration through `get` (the process environment in production).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let table = get("TABLE_NAME")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ConfigError("TABLE_NAME is not set".into()))?;
        let concurrency = match get("SYNC_CONCURRENCY") {
            None => DEFAULT_CONCURRENCY,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| {
                    ConfigError(format!("SYNC_CONCURRENCY must be 1..=1024, got {v:?}"))
                })?,
        };
        let namespace = get("METRICS_NAMESPACE").unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        Ok(Self {
            table,
            concurrency,
            namespace,
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

/// JSON logs to stdout at `AWS_LAMBDA_LOG_LEVEL` / `RUST_LOG` (default `info`).
pub fn init_json_logging() {
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|l| l.to_lowercase()))
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_target(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
}

/// Runs the sync function until the runtime shuts it down.
pub async fn run_sync() -> Result<(), lambda_runtime::Error> {
    init_json_logging();
    let cfg = SyncConfig::from_env()?;
    let aws = aws_config::load_from_env().await;
    let handler = SyncHandler::new(
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), cfg.table.clone()),
        cfg.concurrency,
    );
    let (handler, cfg) = (&handler, &cfg);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<RawEvent>| async move {
        let started = Utc::now();
        let outcome = handler.handle(&event.payload, started).await;
        // EMF goes to stdout as its own line, outside the tracing JSON, so CloudWatch parses it.
        println!(
            "{}",
            emf_line(
                &cfg.namespace,
                "sync",
                started.timestamp_millis(),
                &outcome.counts.metrics()
            )
        );
        Ok::<DynamoDbEventResponse, lambda_runtime::Error>(outcome.response)
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn config_is_validated_at_start() {
        let cfg = SyncConfig::from_lookup(lookup(&[("TABLE_NAME", "t")])).unwrap();
        assert_eq!(
            cfg,
            SyncConfig {
                table: "t".into(),
                concurrency: 32,
                namespace: "tiersync".into()
            }
        );
        assert!(SyncConfig::from_lookup(lookup(&[]))
            .unwrap_err()
            .to_string()
            .contains("TABLE_NAME"));
        let bad =
            SyncConfig::from_lookup(lookup(&[("TABLE_NAME", "t"), ("SYNC_CONCURRENCY", "0")]));
        assert!(bad.unwrap_err().to_string().contains("SYNC_CONCURRENCY"));
    }
}
