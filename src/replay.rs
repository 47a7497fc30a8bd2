//! `tiersync replay`: turns on-failure pointers back into applied changes. For each pointer it
//! reads exactly `startSequenceNumber..=endSequenceNumber` of the shard from the stream and
//! feeds the records through the same [`SyncHandler`], so a replay can never regress a profile.
//! Records that can no longer be read (trimmed after 24 h, shard or stream gone) are never
//! reported as success.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_dynamodbstreams::error::DisplayErrorContext;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;

use crate::decide::SeqNo;
use crate::handler::{self, Counts, StreamEvent, SyncHandler};
use crate::onfailure::{parse_message, parse_value, split_file, BatchPointer};
use crate::store::DynamoStore;
use crate::stream::{lambda_event, redelivery_from};

/// Handler attempts per batch (the first and two redeliveries from the lowest failure).
const HANDLER_ATTEMPTS: u32 = 3;
/// Consecutive empty pages tolerated before a range counts as unreadable.
const MAX_EMPTY_PAGES: u32 = 20;

/// Where the pointers come from.
#[derive(Debug, Clone)]
pub enum Source {
    Queue {
        client: aws_sdk_sqs::Client,
        url: String,
    },
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub dry_run: bool,
    /// At most this many messages (queue) or entries (file).
    pub max_messages: usize,
    /// Repair expired batches from the source of truth (`reconcile --repair`), restricted to the
    /// batch's users when the message names them.
    pub reconcile_on_expiry: bool,
    pub max_writes_per_second: u32,
}

/// One problem, named: which message and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// SQS message id, or `file:LINE` / `file:#INDEX`.
    pub message: String,
    pub kind: &'static str,
    pub reason: String,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    pub messages: u64,
    pub batches: u64,
    pub records: u64,
    pub applied: u64,
    pub already_current: u64,
    pub expired: u64,
    pub malformed: u64,
    pub failed: u64,
    /// Queue messages deleted (only after their whole batch was applied).
    pub deleted: u64,
    /// Users repaired from USAGE#LIMITS for expired batches (`--reconcile-on-expiry`).
    pub repaired: u64,
    pub problems: Vec<Problem>,
}

impl ReplaySummary {
    /// Success means every batch was applied: nothing expired, malformed or failed.
    pub fn ok(&self) -> bool {
        self.expired == 0 && self.malformed == 0 && self.failed == 0
    }
}

/// Why a pointer's records could not be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unreplayable {
    /// The records are gone from the stream (trimmed, shard or stream deleted).
    Expired(String),
    /// Something else went wrong (wrong table, handler failures that persisted, API errors).
    Failed(String),
}

pub struct Replayer<'a> {
    pub store: &'a DynamoStore,
    pub handler: SyncHandler<DynamoStore>,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub opts: ReplayOptions,
}

impl Replayer<'_> {
    /// Runs the replay. `on_message` is called after each message (progress).
    pub async fn run(&self, source: &Source, on_message: &(dyn Fn() + Sync)) -> ReplaySummary {
        let mut summary = ReplaySummary::default();
        match source {
            Source::File(path) => self.run_file(path, &mut summary, on_message).await,
            Source::Queue { client, url } => {
                self.run_queue(client, url, &mut summary, on_message).await
            }
        }
        summary
    }

    async fn run_file(
        &self,
        path: &PathBuf,
        summary: &mut ReplaySummary,
        on_message: &(dyn Fn() + Sync),
    ) {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                summary.failed += 1;
                summary.problems.push(Problem {
                    message: path.display().to_string(),
                    kind: "failed",
                    reason: e.to_string(),
                });
                return;
            }
        };
        for (i, entry) in split_file(&text)
            .into_iter()
            .take(self.opts.max_messages)
            .enumerate()
        {
            summary.messages += 1;
            let name = format!("{}#{}", path.display(), i + 1);
            match entry.and_then(|v| parse_value(&v)) {
                Ok(p) => {
                    self.replay_pointer(&name, &p, summary).await;
                }
                Err(e) => malformed(summary, name, e.to_string()),
            }
            on_message();
        }
    }

    async fn run_queue(
        &self,
        sqs: &aws_sdk_sqs::Client,
        url: &str,
        summary: &mut ReplaySummary,
        on_message: &(dyn Fn() + Sync),
    ) {
        while (summary.messages as usize) < self.opts.max_messages {
            let want = (self.opts.max_messages - summary.messages as usize).min(10) as i32;
            let received = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(want)
                .wait_time_seconds(1)
                // Long enough to replay a batch; an undeleted message comes back after it.
                .visibility_timeout(300)
                .send()
                .await;
            let messages = match received {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(e) => {
                    summary.failed += 1;
                    summary.problems.push(Problem {
                        message: url.to_owned(),
                        kind: "failed",
                        reason: format!(
                            "ReceiveMessage: {}",
                            aws_sdk_sqs::error::DisplayErrorContext(&e)
                        ),
                    });
                    return;
                }
            };
            if messages.is_empty() {
                return;
            }
            for m in messages {
                summary.messages += 1;
                let name = m.message_id().unwrap_or("?").to_owned();
                let applied = match parse_message(m.body().unwrap_or_default()) {
                    Ok(p) => self.replay_pointer(&name, &p, summary).await,
                    Err(e) => {
                        // Left in the queue: it becomes visible again after the timeout.
                        malformed(summary, name.clone(), e.to_string());
                        false
                    }
                };
                if applied && !self.opts.dry_run {
                    match sqs
                        .delete_message()
                        .queue_url(url)
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .send()
                        .await
                    {
                        Ok(_) => summary.deleted += 1,
                        Err(e) => {
                            summary.failed += 1;
                            summary.problems.push(Problem {
                                message: name,
                                kind: "failed",
                                reason: format!(
                                    "applied, but DeleteMessage failed (a rerun is harmless): {}",
                                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                                ),
                            });
                        }
                    }
                }
                on_message();
            }
        }
    }

    /// Replays one pointer; true when its whole batch was applied (or, dry, planned).
    async fn replay_pointer(
        &self,
        name: &str,
        p: &BatchPointer,
        summary: &mut ReplaySummary,
    ) -> bool {
        summary.batches += 1;
        let outcome = match self.read_range(p).await {
            Ok(records) => {
                summary.records += records.len() as u64;
                self.apply(records, &p.stream_arn).await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(counts) => {
                summary.applied += counts.applied;
                summary.already_current += counts.already_current;
                true
            }
            Err(Unreplayable::Expired(reason)) => {
                summary.expired += 1;
                tracing::error!(message = name, shard = p.shard_id, start = %p.start, end = %p.end, reason,
                    "batch records are no longer in the stream; repair from USAGE#LIMITS with --reconcile-on-expiry or `tiersync reconcile --repair`");
                summary.problems.push(Problem {
                    message: name.to_owned(),
                    kind: "expired",
                    reason: format!("shard {} {}..{}: {reason}", p.shard_id, p.start, p.end),
                });
                if self.opts.reconcile_on_expiry && !self.opts.dry_run {
                    summary.repaired += self.repair(p, name, summary).await;
                }
                false
            }
            Err(Unreplayable::Failed(reason)) => {
                summary.failed += 1;
                tracing::error!(message = name, shard = p.shard_id, start = %p.start, end = %p.end, reason, "batch replay failed");
                summary.problems.push(Problem {
                    message: name.to_owned(),
                    kind: "failed",
                    reason: format!("shard {} {}..{}: {reason}", p.shard_id, p.start, p.end),
                });
                false
            }
        }
    }

    async fn repair(&self, p: &BatchPointer, name: &str, summary: &mut ReplaySummary) -> u64 {
        let users = match &p.users {
            Some(ids) => crate::reconcile::fetch_users(self.store, ids).await,
            None => crate::reconcile::scan_users(self.store, 4, &|_| {}).await,
        };
        match users {
            Ok(users) => {
                let report = crate::reconcile::reconcile(
                    self.store,
                    &users,
                    true,
                    self.opts.max_writes_per_second,
                    Utc::now(),
                    &|| {},
                )
                .await;
                let r = report.repaired.unwrap_or_default();
                tracing::info!(
                    message = name,
                    applied = r.applied,
                    users = report.users,
                    "repaired from USAGE#LIMITS"
                );
                r.applied
            }
            Err(e) => {
                summary.failed += 1;
                summary.problems.push(Problem {
                    message: name.to_owned(),
                    kind: "failed",
                    reason: format!("repair: {e}"),
                });
                0
            }
        }
    }

    /// Reads `start..=end` of the pointer's shard.
    async fn read_range(&self, p: &BatchPointer) -> Result<Vec<Record>, Unreplayable> {
        let table_part = format!("table/{}/stream/", self.store.table());
        if !p.stream_arn.contains(&table_part) {
            return Err(Unreplayable::Failed(format!(
                "stream {} does not belong to table {}",
                p.stream_arn,
                self.store.table()
            )));
        }
        let mut records = Vec::new();
        let mut iter = self.iterator(p, None).await?;
        let mut empty_pages = 0;
        loop {
            let page = match self
                .streams
                .get_records()
                .shard_iterator(&iter)
                .limit(1000)
                .send()
                .await
            {
                Ok(page) => page,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_expired_iterator_exception()) =>
                {
                    let after = records.last().and_then(seq_of);
                    iter = self.iterator(p, after.as_ref()).await?;
                    continue;
                }
                Err(e)
                    if e.as_service_error().is_some_and(|e| {
                        e.is_trimmed_data_access_exception() || e.is_resource_not_found_exception()
                    }) =>
                {
                    return Err(Unreplayable::Expired(DisplayErrorContext(&e).to_string()));
                }
                // Throttling and 5xx were already retried by the SDK.
                Err(e) => {
                    return Err(Unreplayable::Failed(format!(
                        "GetRecords: {}",
                        DisplayErrorContext(&e)
                    )))
                }
            };
            let got = page.records.unwrap_or_default();
            empty_pages = if got.is_empty() { empty_pages + 1 } else { 0 };
            let mut reached_end = false;
            for r in got {
                match seq_of(&r) {
                    Some(s) if s > p.end => reached_end = true,
                    Some(s) if s >= p.start => {
                        reached_end |= s == p.end;
                        records.push(r);
                    }
                    _ => {}
                }
            }
            if reached_end {
                return Ok(records);
            }
            match page.next_shard_iterator {
                Some(next) if empty_pages < MAX_EMPTY_PAGES => iter = next,
                Some(_) => {
                    return Err(Unreplayable::Failed(format!(
                        "endSequenceNumber {} not reached",
                        p.end
                    )))
                }
                None => {
                    return Err(Unreplayable::Expired(format!(
                        "shard closed before endSequenceNumber {}",
                        p.end
                    )))
                }
            }
        }
    }

    async fn iterator(
        &self,
        p: &BatchPointer,
        after: Option<&SeqNo>,
    ) -> Result<String, Unreplayable> {
        let (kind, seq) = match after {
            Some(s) => (ShardIteratorType::AfterSequenceNumber, s),
            None => (ShardIteratorType::AtSequenceNumber, &p.start),
        };
        let out = self
            .streams
            .get_shard_iterator()
            .stream_arn(&p.stream_arn)
            .shard_id(&p.shard_id)
            .shard_iterator_type(kind)
            .sequence_number(seq.as_str())
            .send()
            .await;
        match out {
            Ok(o) => o
                .shard_iterator
                .ok_or_else(|| Unreplayable::Expired("the shard has no iterator".into())),
            Err(e)
                if e.as_service_error().is_some_and(|e| {
                    e.is_trimmed_data_access_exception() || e.is_resource_not_found_exception()
                }) =>
            {
                Err(Unreplayable::Expired(DisplayErrorContext(&e).to_string()))
            }
            Err(e) => Err(Unreplayable::Failed(format!(
                "GetShardIterator: {}",
                DisplayErrorContext(&e)
            ))),
        }
    }

    /// Runs the handler on the batch, redelivering from the lowest failure like the ESM.
    async fn apply(
        &self,
        mut records: Vec<Record>,
        stream_arn: &str,
    ) -> Result<Counts, Unreplayable> {
        let mut total = Counts::default();
        if self.opts.dry_run {
            let event: StreamEvent = lambda_event(&records, stream_arn)
                .parse()
                .expect("a built event is valid JSON");
            let plan = handler::plan(self.store.table(), &event);
            for w in &plan.writes {
                println!("{}", serde_json::to_string(w).expect("serialisable"));
            }
            return Ok(plan.counts);
        }
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .build();
        for attempt in 1..=HANDLER_ATTEMPTS {
            let event: StreamEvent = lambda_event(&records, stream_arn)
                .parse()
                .expect("a built event is valid JSON");
            let outcome = self.handler.handle(&event, Utc::now()).await;
            total.add(&outcome.counts);
            let Some(lowest) = outcome.failed_sequence_numbers().into_iter().min() else {
                return Ok(total);
            };
            records = redelivery_from(records, &lowest);
            if attempt < HANDLER_ATTEMPTS {
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
            }
        }
        Err(Unreplayable::Failed(format!(
            "PROFILE writes still failing after {HANDLER_ATTEMPTS} attempts"
        )))
    }
}

fn seq_of(r: &Record) -> Option<SeqNo> {
    r.dynamodb()
        .and_then(|d| d.sequence_number())
        .and_then(SeqNo::parse)
}

fn malformed(summary: &mut ReplaySummary, message: String, reason: String) {
    summary.malformed += 1;
    tracing::error!(
        message,
        reason,
        "malformed on-failure message left in place"
    );
    summary.problems.push(Problem {
        message,
        kind: "malformed",
        reason,
    });
}
