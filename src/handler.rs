//! The sync handler: a Lambda DynamoDB stream event in, a partial batch response out. Shared by
//! `sync-lambda`, `tiersync worker`, `tiersync sync` and the tests.
//!
//! Per batch: decode every record on its own ([`crate::decide`]), coalesce to one write per user,
//! write concurrently up to a bound, and report each failed user's lowest sequence number.
//! Nothing record-level ever makes it return `Err`: poison is logged, counted and skipped.

use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};

use crate::decide::{self, Decision, Decoded, PlannedWrite, SeqNo};
use crate::scan::{Scanner, SyntaxError};
use crate::schema::format_time;
use crate::store::{ProfileStore, ProfileWrite};

/// Default bound on concurrent PROFILE writes per batch: chosen by measurement (BENCHMARKS.md:
/// 1,000 users at 10 ms a call take about 425 ms at 32, 210–230 ms at 64, 117 ms at 128). 64
/// meets the 250 ms target without a burst of 128 connections per invocation.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// A Lambda DynamoDB event, decoded in one pass with every record on its own: each becomes a
/// decision or poison ([`decide::Decoded`]), so one malformed record cannot fail the
/// batch (deserialising `aws_lambda_events::dynamodb::Event` whole would fail them all).
///
/// Records that need no write (usage increments, resets, PROFILE writes: most of a real stream)
/// are only counted while decoding; keeping them would cost memory and time for nothing
/// (BENCHMARKS.md, "Handler CPU").
#[derive(Debug, Default)]
pub struct StreamEvent {
    /// Records in the event.
    pub len: u64,
    /// Records that need no write ([`Decision::Skip`]).
    pub skipped: u64,
    /// Every other record, in event order: tier changes, unversioned changes and poison.
    pub records: Vec<Decoded>,
}

impl StreamEvent {
    /// Decodes an event from its bytes (a Lambda invocation body): UTF-8 is checked once over
    /// the whole body, then the text is scanned once ([`crate::scan`]).
    pub fn from_bytes(body: &[u8]) -> Result<Self, SyntaxError> {
        let text = std::str::from_utf8(body)
            .map_err(|e| SyntaxError::new("event is not UTF-8", e.valid_up_to()))?;
        text.parse()
    }
}

impl std::str::FromStr for StreamEvent {
    type Err = SyntaxError;

    /// Decodes an event (`{"Records": [...]}`) in one pass, every record on its own. Only broken
    /// JSON syntax, or no `Records` array, is an error.
    fn from_str(text: &str) -> Result<Self, SyntaxError> {
        let mut s = Scanner::new(text);
        let mut event = StreamEvent::default();
        let mut seen = false;
        let mut members = s.object()?;
        while let Some(key) = members.next(&mut s)? {
            if key != "Records" || seen {
                s.skip()?;
                continue;
            }
            seen = true;
            let mut records = s.array()?;
            while records.next(&mut s)? {
                event.len += 1;
                match decide::decode_next(&mut s)? {
                    Ok(Decision::Skip(_)) => event.skipped += 1,
                    other => event.records.push(other),
                }
            }
        }
        s.finish()?;
        if !seen {
            return Err(SyntaxError::new("the event has no `Records` array", 0));
        }
        Ok(event)
    }
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
pub fn plan(table: &str, event: &StreamEvent) -> Plan {
    let mut counts = Counts {
        records: event.len,
        skipped: event.skipped,
        ..Counts::default()
    };
    let mut changes = Vec::new();
    for decided in &event.records {
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
    #[tracing::instrument(skip_all, fields(table = self.store.table(), records = event.len))]
    pub async fn handle(&self, event: &StreamEvent, now: DateTime<Utc>) -> BatchOutcome {
        let Plan { writes, mut counts } = plan(self.store.table(), event);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits_record(
        seq: &str,
        old_version: u64,
        new_version: u64,
        used: u64,
    ) -> serde_json::Value {
        let image = |v: u64| {
            json!({"PK": {"S": "USER#u1"}, "SK": {"S": "USAGE#LIMITS"}, "tier": {"S": if v.is_multiple_of(2) { "premium" } else { "free" }},
                   "tier_version": {"N": v.to_string()}, "daily_used": {"N": used.to_string()}})
        };
        json!({"eventName": "MODIFY", "dynamodb": {
            "Keys": {"PK": {"S": "USER#u1"}, "SK": {"S": "USAGE#LIMITS"}},
            "OldImage": image(old_version), "NewImage": image(new_version), "SequenceNumber": seq}})
    }

    #[test]
    fn an_event_keeps_only_the_records_that_matter_and_counts_the_rest() {
        let event = json!({"Records": [
            limits_record("1", 1, 1, 5),          // usage increment: skipped
            limits_record("2", 1, 2, 5),          // tier change
            {"eventName": "MODIFY"},              // poison (no dynamodb)
            limits_record("3", 2, 2, 6),          // usage increment: skipped
        ], "extra": {"ignored": true}});
        let e: StreamEvent = event.to_string().parse().unwrap();
        assert_eq!((e.len, e.skipped, e.records.len()), (4, 2, 2));
        assert!(matches!(&e.records[0], Ok(Decision::Change(c)) if c.version == 2));
        assert!(e.records[1].is_err());
        let p = plan("t", &e);
        assert_eq!(
            (
                p.counts.records,
                p.counts.skipped,
                p.counts.relevant,
                p.counts.poison
            ),
            (4, 2, 1, 1)
        );
        assert_eq!(p.writes.len(), 1);
    }

    #[test]
    fn an_event_from_bytes_is_the_same_as_from_text_and_rejects_bad_utf8() {
        let text = json!({"Records": [limits_record("2", 1, 2, 5)]}).to_string();
        let e = StreamEvent::from_bytes(text.as_bytes()).unwrap();
        assert_eq!((e.len, e.skipped, e.records.len()), (1, 0, 1));
        let mut bad = text.into_bytes();
        bad.insert(1, 0xff);
        let err = StreamEvent::from_bytes(&bad).unwrap_err();
        assert!(err.to_string().starts_with("event is not UTF-8"), "{err}");
    }

    #[test]
    fn an_event_without_records_is_an_error_not_an_empty_batch() {
        let err = r#"{"records": []}"#.parse::<StreamEvent>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the event has no `Records` array at byte 0"
        );
        assert!(r#"{"Records": {}}"#.parse::<StreamEvent>().is_err());
        assert!("[]".parse::<StreamEvent>().is_err());
        assert!(r#"{"Records": []} x"#.parse::<StreamEvent>().is_err());
        let empty: StreamEvent = r#"{"Records": []}"#.parse().unwrap();
        assert_eq!((empty.len, empty.skipped, empty.records.len()), (0, 0, 0));
    }
}
