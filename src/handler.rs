//! The sync handler: a Lambda DynamoDB stream event in, a partial batch response out. Shared by
//! `sync-lambda`, `tiersync worker`, `tiersync sync` and the tests.
//!
//! Per batch: decode every record on its own ([`crate::decide`]), coalesce to one write per user,
//! write concurrently up to a bound, and report each failed user's lowest sequence number.
//! Nothing record-level ever makes it return `Err`: poison is logged, counted and skipped.

use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;

use crate::decide::{self, Decision, DecodedRecord, PlannedWrite, SeqNo};
use crate::schema::format_time;
use crate::store::{ProfileStore, ProfileWrite};

/// Default bound on concurrent PROFILE writes per batch: chosen by measurement (BENCHMARKS.md:
/// 1,000 users at 10 ms a call take 429 ms at 32, 208 ms at 64, 145 ms at 128). 64 meets the
/// 250 ms target without a burst of 128 connections per invocation.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// A Lambda DynamoDB event, decoded in one pass with every record on its own: each becomes a
/// decision or poison ([`decide::DecodedRecord`]), so one malformed record cannot fail the
/// batch (deserialising `aws_lambda_events::dynamodb::Event` whole would fail them all).
#[derive(Debug, Deserialize)]
pub struct StreamEvent {
    #[serde(rename = "Records")]
    pub records: Vec<DecodedRecord>,
}

/// What a batch did, for logs, EMF metrics and CLI summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Records in the event.
    pub records: u64,
    /// Records that carry a tier change (version rise on USAGE#LIMITS).
    pub relevant: u64,
    /// Records needing no write (usage, reset, PROFILE, other items, REMOVE).
    pub skipped: u64,
    /// PROFILE writes attempted (one per user with a version rise).
    pub writes: u64,
    pub applied: u64,
    pub already_current: u64,
    pub profile_missing: u64,
    pub conflict: u64,
    /// Records that can never be applied; skipped, never retried.
    pub poison: u64,
    /// Tier changes without a version bump; not applied.
    pub unversioned: u64,
    /// Writes that failed after the SDK's retries; reported in `batchItemFailures`.
    pub failed: u64,
}

impl Counts {
    /// Adds another batch's counts.
    pub fn add(&mut self, o: &Counts) {
        self.records += o.records;
        self.relevant += o.relevant;
        self.skipped += o.skipped;
        self.writes += o.writes;
        self.applied += o.applied;
        self.already_current += o.already_current;
        self.profile_missing += o.profile_missing;
        self.conflict += o.conflict;
        self.poison += o.poison;
        self.unversioned += o.unversioned;
        self.failed += o.failed;
    }

    /// Name/value pairs in a fixed order, for metrics.
    pub fn metrics(&self) -> [(&'static str, u64); 11] {
        [
            ("records", self.records),
            ("relevant", self.relevant),
            ("skipped", self.skipped),
            ("writes", self.writes),
            ("applied", self.applied),
            ("already_current", self.already_current),
            ("profile_missing", self.profile_missing),
            ("conflict", self.conflict),
            ("poison", self.poison),
            ("unversioned", self.unversioned),
            ("failed", self.failed),
        ]
    }
}

/// The writes a batch needs, and the counts of deciding them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub writes: Vec<PlannedWrite>,
    pub counts: Counts,
}

/// Decodes and decides every record, logging poison and unversioned changes with their key and
/// sequence number, and coalesces the changes. Pure apart from logging.
pub fn plan(table: &str, records: &[DecodedRecord]) -> Plan {
    let mut counts = Counts {
        records: records.len() as u64,
        ..Counts::default()
    };
    let mut changes = Vec::new();
    for DecodedRecord(decided) in records {
        match decided {
            Ok(Decision::Change(c)) => {
                counts.relevant += 1;
                changes.push(c.clone());
            }
            Ok(Decision::Skip(_)) => counts.skipped += 1,
            Ok(Decision::Unversioned {
                user,
                seq,
                old_tier,
                new_tier,
            }) => {
                counts.unversioned += 1;
                tracing::warn!(
                    table,
                    pk = %user.pk(),
                    sk = crate::schema::SK_LIMITS,
                    seq = %seq,
                    old_tier = ?old_tier,
                    new_tier = ?new_tier,
                    "unversioned tier change not applied: the writer changed tier without raising tier_version"
                );
            }
            Err(p) => {
                counts.poison += 1;
                tracing::error!(
                    table,
                    pk = p.pk.as_deref().unwrap_or("?"),
                    sk = p.sk.as_deref().unwrap_or("?"),
                    seq = p.seq.as_deref().unwrap_or("?"),
                    reason = %p.reason,
                    "poison record skipped"
                );
            }
        }
    }
    Plan {
        writes: decide::coalesce(changes),
        counts,
    }
}

/// The handler's result: the exact Lambda response, and what happened.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    pub response: DynamoDbEventResponse,
    pub counts: Counts,
}

impl BatchOutcome {
    /// The reported sequence numbers (one per failed user), lowest first.
    pub fn failed_sequence_numbers(&self) -> Vec<SeqNo> {
        self.response
            .batch_item_failures
            .iter()
            .filter_map(|f| f.item_identifier.as_deref().and_then(SeqNo::parse))
            .collect()
    }
}

/// Builds the partial batch response from the failed users' lowest sequence numbers. An empty
/// list means the whole batch succeeded.
pub fn batch_response(mut failed: Vec<SeqNo>) -> DynamoDbEventResponse {
    failed.sort();
    failed.dedup();
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|seq| {
            let mut f = DynamoDbBatchItemFailure::default();
            f.item_identifier = Some(seq.into());
            f
        })
        .collect();
    response
}

/// The sync handler over a profile store.
#[derive(Debug, Clone)]
pub struct SyncHandler<S> {
    store: S,
    concurrency: usize,
}

impl<S: ProfileStore> SyncHandler<S> {
    pub fn new(store: S, concurrency: usize) -> Self {
        Self {
            store,
            concurrency: concurrency.max(1),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Handles one event. `now` stamps `tier_synced_at`.
    #[tracing::instrument(skip_all, fields(table = self.store.table(), records = event.records.len()))]
    pub async fn handle(&self, event: &StreamEvent, now: DateTime<Utc>) -> BatchOutcome {
        let Plan { writes, mut counts } = plan(self.store.table(), &event.records);
        counts.writes = writes.len() as u64;
        let synced_at = format_time(now);
        let results: Vec<_> = stream::iter(writes)
            .map(|w| {
                let synced_at = &synced_at;
                async move {
                    let r = self
                        .store
                        .write_profile(&w.user_id, w.tier, w.tier_version, synced_at)
                        .await;
                    (w, r)
                }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut failed = Vec::new();
        let table = self.store.table();
        for (w, result) in results {
            let pk = w.user_id.pk();
            match result {
                Ok(ProfileWrite::Applied) => counts.applied += 1,
                Ok(ProfileWrite::AlreadyCurrent { .. }) => counts.already_current += 1,
                Ok(ProfileWrite::ProfileMissing) => {
                    counts.profile_missing += 1;
                    tracing::warn!(table, pk, seq = %w.first_seq, tier_version = w.tier_version,
                        "no PROFILE item for a tier change; not creating one");
                }
                Ok(ProfileWrite::Conflict { stored }) => {
                    counts.conflict += 1;
                    tracing::error!(table, pk, seq = %w.first_seq, tier = %w.tier,
                        tier_version = w.tier_version, stored,
                        "PROFILE holds the same tier_version with a different tier: invariant violated");
                }
                Err(e) => {
                    counts.failed += 1;
                    tracing::warn!(table, pk, seq = %w.first_seq, error = %e,
                        "PROFILE write failed after SDK retries; reporting for redelivery");
                    failed.push(w.first_seq);
                }
            }
        }
        BatchOutcome {
            response: batch_response(failed),
            counts,
        }
    }
}
