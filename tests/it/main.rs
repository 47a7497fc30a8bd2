//! Integration tests against moto's DynamoDB and DynamoDB Streams. One binary (fast to link),
//! one table per test, so they run in parallel. Run with `scripts/test.sh`.

mod cli;
#[path = "../../benches/common/mod.rs"]
mod common;
mod faults;
mod helpers;
mod lambda_runtime;
mod model;
mod replay;
mod sync;
mod usage;
mod worker;
mod write_path;
