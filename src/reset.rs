//! The daily reset job (`reset-lambda`, `tiersync reset`): finds due USAGE#LIMITS items through
//! the sparse, write-sharded reset index (reading only due items, never scanning the table) and
//! resets each with a conditional write, so re-runs and overlapping runs are harmless. It is an
//! optimisation, not a correctness requirement: reads and increments roll the day over lazily.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};

use crate::schema::*;
use crate::store::{conditional_failure_item, n, s, DynamoStore, StoreError};

const DUE_QUERY: &str = "#shard = :shard AND #reset <= :now";
/// Never touches `tier` or `tier_version`, so a reset never wakes the sync.
const RESET_UPDATE: &str = "SET #used = :zero, #reset = :next, #upd = :now";
const RESET_CONDITION: &str = "#reset <= :now";

/// What a reset run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResetSummary {
    /// Due items found through the index.
    pub due: u64,
    /// Items this run reset.
    pub reset: u64,
    /// Items another run or an increment had already moved to a new day.
    pub already_reset: u64,
    /// Items with an unparsable `reset_daily_at`: logged with their key and skipped.
    pub malformed: u64,
    /// Writes or queries that failed after the SDK's retries; the items stay due for the next run.
    pub failed: u64,
    /// Items read from the index (the job's whole read cost).
    pub items_read: u64,
    /// Index queries (pages) issued.
    pub queries: u64,
    /// The run stopped before the deadline with work left; the next run finishes it.
    pub stopped_early: bool,
    pub duration_ms: u64,
}

#[derive(Default)]
struct Counters {
    due: AtomicU64,
    reset: AtomicU64,
    already_reset: AtomicU64,
    malformed: AtomicU64,
    failed: AtomicU64,
    items_read: AtomicU64,
    queries: AtomicU64,
    stopped: std::sync::atomic::AtomicBool,
}

/// Runs one reset pass as of `now`. `should_stop` is asked before every page and every write
/// (the Lambda passes "is the deadline near"); `on_item` is called after each due item (progress).
pub async fn run_reset(
    store: &DynamoStore,
    now: DateTime<Utc>,
    concurrency: usize,
    should_stop: &(dyn Fn() -> bool + Sync),
    on_item: &(dyn Fn() + Sync),
) -> ResetSummary {
    let started = std::time::Instant::now();
    let counters = Arc::new(Counters::default());
    let per_shard = (concurrency / RESET_SHARDS as usize).max(1);
    let shards = (0..RESET_SHARDS).map(|shard| {
        reset_shard_pages(
            store,
            shard,
            now,
            per_shard,
            should_stop,
            on_item,
            &counters,
        )
    });
    futures_util::future::join_all(shards).await;
    let c = &counters;
    ResetSummary {
        due: c.due.load(Ordering::Relaxed),
        reset: c.reset.load(Ordering::Relaxed),
        already_reset: c.already_reset.load(Ordering::Relaxed),
        malformed: c.malformed.load(Ordering::Relaxed),
        failed: c.failed.load(Ordering::Relaxed),
        items_read: c.items_read.load(Ordering::Relaxed),
        queries: c.queries.load(Ordering::Relaxed),
        stopped_early: c.stopped.load(Ordering::Relaxed),
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

async fn reset_shard_pages(
    store: &DynamoStore,
    shard: u32,
    now: DateTime<Utc>,
    concurrency: usize,
    should_stop: &(dyn Fn() -> bool + Sync),
    on_item: &(dyn Fn() + Sync),
    c: &Counters,
) {
    let now_s = format_time(now);
    let next = format_time(next_reset_boundary(now));
    let mut start_key = None;
    loop {
        if should_stop() {
            c.stopped.store(true, Ordering::Relaxed);
            return;
        }
        c.queries.fetch_add(1, Ordering::Relaxed);
        let page = store
            .client()
            .query()
            .table_name(store.table())
            .index_name(RESET_INDEX)
            .key_condition_expression(DUE_QUERY)
            .expression_attribute_names("#shard", RESET_SHARD)
            .expression_attribute_names("#reset", RESET_DAILY_AT)
            .expression_attribute_values(":shard", n(u64::from(shard)))
            .expression_attribute_values(":now", s(&now_s))
            .set_exclusive_start_key(start_key.take())
            .send()
            .await;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                let e = StoreError::sdk("Query", e);
                tracing::error!(shard, error = %e, "reset index query failed; the shard's due items wait for the next run");
                return;
            }
        };
        let items = page.items.unwrap_or_default();
        c.items_read
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        c.due.fetch_add(items.len() as u64, Ordering::Relaxed);
        let (now_s, next) = (now_s.as_str(), next.as_str());
        stream::iter(items)
            .map(|item| async move {
                if should_stop() {
                    c.stopped.store(true, Ordering::Relaxed);
                    return;
                }
                reset_item(store, item, now_s, next, c).await;
                on_item();
            })
            .buffer_unordered(concurrency)
            .collect::<()>()
            .await;
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start_key = Some(k),
            _ => return,
        }
    }
}

async fn reset_item(
    store: &DynamoStore,
    item: std::collections::HashMap<String, AttributeValue>,
    now_s: &str,
    next: &str,
    c: &Counters,
) {
    let text = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    let (pk, sk, reset) = (text(PK), text(SK), text(RESET_DAILY_AT));
    if DateTime::parse_from_rfc3339(&reset).is_err() {
        c.malformed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            table = store.table(),
            pk,
            sk,
            reset_daily_at = reset,
            "malformed reset_daily_at; item skipped"
        );
        return;
    }
    let result = store
        .client()
        .update_item()
        .table_name(store.table())
        .key(PK, s(&pk))
        .key(SK, s(&sk))
        .update_expression(RESET_UPDATE)
        .condition_expression(RESET_CONDITION)
        .expression_attribute_names("#used", DAILY_USED)
        .expression_attribute_names("#reset", RESET_DAILY_AT)
        .expression_attribute_names("#upd", UPDATED_AT)
        .expression_attribute_values(":zero", n(0))
        .expression_attribute_values(":next", s(next))
        .expression_attribute_values(":now", s(now_s))
        .send()
        .await;
    match result {
        Ok(_) => {
            c.reset.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) if conditional_failure_item(&e).is_some() => {
            c.already_reset.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            c.failed.fetch_add(1, Ordering::Relaxed);
            let e = StoreError::sdk("UpdateItem", e);
            tracing::warn!(table = store.table(), pk, sk, error = %e, "reset failed; the item stays due for the next run");
        }
    }
}
