//! tiersync keeps a user's tier, owned by the `USAGE#LIMITS` item, in sync with its copy on the
//! `PROFILE` item through the table's DynamoDB stream.
//!
//! # Layout
//! - [`schema`]: the item contract: key shapes, attribute names, tiers, user ids, reset times.
//! - [`decide`]: pure decisions: decode a stream record, decide what it means, coalesce a batch,
//!   order sequence numbers.
//! - [`store`]: every DynamoDB call (table, users, tier writes, the conditional PROFILE write),
//!   with each write's results as an enum.
//! - [`usage`]: usage metering with lazy rollover (`increment_usage`, `get_user_usage`).
//! - [`reset`]: the daily reset job over the sparse reset index.
//! - [`scan`]: the small JSON scanner that reads stream events in one pass (why: BENCHMARKS.md).
//! - [`handler`]: the sync handler shared by the Lambda, the worker and the CLI: event in,
//!   partial batch response out.
//! - [`stream`]: pure pieces of reading a stream like Lambda's event source mapping: shard
//!   lineage, the Lambda record shape, on-failure records, checkpoints.
//! - [`worker`]: the local stream worker (the event source mapping on your machine).
//! - [`onfailure`]: pure parsing of on-failure records (raw, SNS, S3 forms).
//! - [`replay`]: replaying failed batches from the stream through the handler.
//! - [`reconcile`]: finding and repairing drift, and migrating legacy items.
//! - [`metrics`]: CloudWatch Embedded Metric Format lines.
//! - [`aws`]: the one AWS SDK configuration (aws-config's chain, one HTTPS client).
//! - [`config`]: typed configuration from the environment, validated at start.
//! - [`lambda`]: the Lambdas' runtime glue (`sync-lambda`, `reset-lambda`).
//! - [`cli`]: the `tiersync` operator CLI.
//!
//! Binaries in `src/bin/` are thin entry points into [`lambda`] and [`cli`].

/// mimalloc instead of the system allocator, only with the `mimalloc` feature: kept so the
/// measurement that chose the system one can be re-run (BENCHMARKS.md, "Allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod aws;
pub mod cli;
pub mod config;
pub mod decide;
pub mod handler;
pub mod lambda;
pub mod metrics;
pub mod onfailure;
pub mod reconcile;
pub mod replay;
pub mod reset;
pub mod scan;
pub mod schema;
pub mod store;
pub mod stream;
pub mod usage;
pub mod worker;
