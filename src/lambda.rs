//! The `sync-lambda` runtime glue: configuration read once at cold start, JSON logs, one SDK
//! client for the life of the execution environment, and one EMF line per invocation.

use aws_lambda_events::streams::DynamoDbEventResponse;
use chrono::Utc;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};

use crate::config::SyncConfig;
use crate::handler::{StreamEvent, SyncHandler};
use crate::metrics::emf_line;
use crate::store::DynamoStore;

/// JSON logs to stdout at `RUST_LOG` / `AWS_LAMBDA_LOG_LEVEL` (default `info`).
///
/// The filter is `tracing_subscriber`'s `Targets` (`info`, `tiersync=debug,warn`, …), not
/// `EnvFilter`: span and field directives are not needed in a Lambda, and `EnvFilter` links a
/// regex engine into the binary. A directive that does not parse falls back to `info` with a
/// warning, never a failed cold start.
pub fn init_json_logging() {
    use tracing_subscriber::prelude::*;
    let spec = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|l| l.to_lowercase()))
        .unwrap_or_else(|_| "info".into());
    let (filter, bad) = match spec.parse::<tracing_subscriber::filter::Targets>() {
        Ok(f) => (f, None),
        Err(e) => (
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing::level_filters::LevelFilter::INFO),
            Some(e),
        ),
    };
    let json = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_target(false);
    tracing_subscriber::registry()
        .with(json.with_filter(filter))
        .init();
    if let Some(e) = bad {
        tracing::warn!(directive = %spec, error = %e, "log filter not understood; logging at info");
    }
}

/// Runs the sync function until the runtime shuts it down.
pub async fn run_sync() -> Result<(), lambda_runtime::Error> {
    init_json_logging();
    let cfg = SyncConfig::from_env()?;
    let aws = crate::aws::load().await;
    let handler = SyncHandler::new(
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), cfg.table.clone()),
        cfg.concurrency,
    );
    let (handler, cfg) = (&handler, &cfg);
    let function = service_fn(move |_: LambdaEvent<serde::de::IgnoredAny>| async move {
        let started = Utc::now();
        let payload = decoded_event()?;
        let outcome = handler.handle(&payload, started).await;
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
        Ok::<DynamoDbEventResponse, Diagnostic>(outcome.response)
    });
    lambda_runtime::Runtime::new(function)
        .layer(lambda_runtime::layers::TracingLayer::new())
        .layer(DecodeFirst)
        .run()
        .await
}

/// The event of one invocation, decoded or not, until the function takes it.
type EventSlot = std::cell::RefCell<Option<Result<StreamEvent, crate::scan::SyntaxError>>>;

tokio::task_local! {
    /// The event of the invocation being handled, decoded by [`DecodeFirst`].
    static EVENT: EventSlot;
}

/// Decodes each invocation's body into a [`StreamEvent`] before `lambda_runtime` sees it.
///
/// Why: `lambda_runtime` decodes payloads through serde_path_to_error, which copies every object
/// key of every record into a `String` to report paths. On a 1,000-record event that doubled
/// the CPU of a batch when it was measured (`benches/handler.rs`, serde decoder: 3.0–4.3 µs a
/// record through it, 1.6–2.1 µs decoding directly). Taking the payload as `RawValue` instead
/// still scans the text twice (the bench's `via_raw_value` case: about twice the direct decode).
///
/// How: the layer decodes the body ([`StreamEvent::from_bytes`], one scan), hands the inner
/// service a `null` body (the function takes `IgnoredAny`), and runs the invocation inside a
/// task-local scope holding the decoded event, where the function takes it. The scope covers
/// exactly one invocation: the runtime polls the function inside the future this layer returns.
#[derive(Clone, Copy)]
struct DecodeFirst;

impl<S> lambda_runtime::tower::Layer<S> for DecodeFirst {
    type Service = DecodeFirstService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DecodeFirstService(inner)
    }
}

struct DecodeFirstService<S>(S);

impl<S> lambda_runtime::Service<lambda_runtime::LambdaInvocation> for DecodeFirstService<S>
where
    S: lambda_runtime::Service<lambda_runtime::LambdaInvocation, Response = ()>,
{
    type Response = ();
    type Error = S::Error;
    type Future = tokio::task::futures::TaskLocalFuture<EventSlot, S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut invocation: lambda_runtime::LambdaInvocation) -> Self::Future {
        let decoded = StreamEvent::from_bytes(&invocation.body);
        invocation.body = "null".into();
        let inner = self.0.call(invocation);
        EVENT.scope(std::cell::RefCell::new(Some(decoded)), inner)
    }
}

/// The `errorType` Lambda records for a payload that is not a DynamoDB stream event.
pub const INVALID_EVENT: &str = "InvalidStreamEvent";

/// The event [`DecodeFirst`] decoded for the current invocation. A body that is not a stream
/// event is the invocation's error (`errorType` [`INVALID_EVENT`]), as a payload lambda_runtime
/// could not decode would be.
fn decoded_event() -> Result<StreamEvent, Diagnostic> {
    let decoded = EVENT.try_with(|slot| slot.borrow_mut().take());
    let Ok(Some(decoded)) = decoded else {
        return Err(Diagnostic {
            error_type: "Runtime.DecodeFirstMissing".into(),
            error_message: "no decoded event for this invocation (DecodeFirst layer missing)"
                .into(),
        });
    };
    decoded.map_err(|e| Diagnostic {
        error_type: INVALID_EVENT.into(),
        error_message: e.to_string(),
    })
}

/// The scheduled time of an EventBridge (Scheduler) event: its `time` field, which the template
/// fills with `<aws.scheduler.scheduled-time>`. `None` when the event carries no time.
pub fn scheduled_time(
    payload: &serde_json::Value,
) -> Result<Option<chrono::DateTime<Utc>>, String> {
    match payload.get("time") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(t)) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| Some(t.to_utc()))
            .map_err(|e| format!("event time {t:?} is not RFC 3339: {e}")),
        Some(other) => Err(format!("event time is not a string: {other}")),
    }
}

/// Runs the reset function until the runtime shuts it down.
pub async fn run_reset() -> Result<(), lambda_runtime::Error> {
    init_json_logging();
    let cfg = crate::config::ResetConfig::from_env()?;
    let aws = crate::aws::load().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), cfg.table.clone());
    let (store, cfg) = (&store, &cfg);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let now = match scheduled_time(&event.payload)? {
                Some(t) => t,
                None => {
                    tracing::warn!("event has no `time`; using the clock");
                    Utc::now()
                }
            };
            // Stop a safety margin before the deadline; items left are still due for the next run.
            let stop_at = event.context.deadline.saturating_sub(cfg.safety_margin_ms);
            let should_stop = || Utc::now().timestamp_millis() as u64 >= stop_at;
            let summary =
                crate::reset::run_reset(store, now, cfg.concurrency, &should_stop, &|| {}).await;
            println!(
                "{}",
                crate::metrics::emf_line_with_units(
                    &cfg.namespace,
                    "reset",
                    Utc::now().timestamp_millis(),
                    [
                        ("due", summary.due as f64, "Count"),
                        ("reset", summary.reset as f64, "Count"),
                        ("already_reset", summary.already_reset as f64, "Count"),
                        ("malformed", summary.malformed as f64, "Count"),
                        ("failed", summary.failed as f64, "Count"),
                        ("duration", summary.duration_ms as f64, "Milliseconds"),
                    ],
                )
            );
            tracing::info!(summary = %serde_json::to_string(&summary)?, "reset run finished");
            if summary.failed > 0 {
                // Fail the invocation so the scheduler retries (the job is idempotent) and the
                // error alarm sees it.
                return Err(format!("{} reset writes or queries failed", summary.failed).into());
            }
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(&summary)?)
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    proptest::proptest! {
        /// Any `time` value yields a time or a clear error naming the value, never a panic.
        #[test]
        fn any_event_time_is_parsed_or_named(t in ".{0,40}") {
            match scheduled_time(&json!({ "time": t })) {
                Ok(parsed) => proptest::prop_assert!(parsed.is_some()),
                Err(e) => {
                    let named = format!("{:?}", t);
                    proptest::prop_assert!(e.contains(&named), "{}", e);
                }
            }
        }
    }

    #[test]
    fn the_scheduled_time_comes_from_the_event() {
        let t = scheduled_time(&json!({"time": "2026-12-04T00:00:00Z", "source": "aws.scheduler"}))
            .unwrap();
        assert_eq!(
            t.map(crate::schema::format_time).as_deref(),
            Some("2026-12-04T00:00:00Z")
        );
        assert_eq!(scheduled_time(&json!({})).unwrap(), None);
        assert!(scheduled_time(&json!({"time": "yesterday"}))
            .unwrap_err()
            .contains("yesterday"));
        assert!(scheduled_time(&json!({"time": 5})).is_err());
    }
}
