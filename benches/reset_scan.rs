//! Reset job vs a full parallel Scan, against a local DynamoDB API (moto).
//!
//! Loads N users (PROFILE + USAGE#LIMITS each), of which a fraction is due, then measures:
//! - the reset job: items read per due item (the index is sparse and keyed by due time, so the
//!   goal is ≤ 1.1) and resets per second;
//! - a full parallel Scan finding the same due items: items read per due item.
//!
//! Run: `scripts/bench-reset.sh [--users N] [--due-percent P] [--segments S]`
//! (starts its own moto; prints one JSON line, then a table).

use std::collections::HashMap;
use std::time::Instant;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use chrono::{DateTime, Duration, Utc};
use futures_util::stream::{self, StreamExt};
use tiersync::reset::run_reset;
use tiersync::schema::*;
use tiersync::store::DynamoStore;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn item(user: &str, sk: &str, extra: &[(&str, AttributeValue)]) -> WriteRequest {
    let mut m: HashMap<String, AttributeValue> = HashMap::from([
        (PK.into(), AttributeValue::S(format!("USER#{user}"))),
        (SK.into(), AttributeValue::S(sk.into())),
        (TIER.into(), AttributeValue::S("free".into())),
        (TIER_VERSION.into(), AttributeValue::N("1".into())),
    ]);
    for (k, v) in extra {
        m.insert((*k).into(), v.clone());
    }
    WriteRequest::builder()
        .put_request(PutRequest::builder().set_item(Some(m)).build().unwrap())
        .build()
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a small smoke test.
    let bench = std::env::args().any(|a| a == "--bench");
    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        eprintln!("reset_scan needs a local DynamoDB: run scripts/bench-reset.sh");
        return;
    }
    let users = arg("--users", if bench { 100_000 } else { 500 });
    let due_percent = arg("--due-percent", 10);
    let segments = arg("--segments", 16) as i32;
    let sdk = tiersync::aws::load().await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("bench-reset-{}", Utc::now().timestamp());
    let store = DynamoStore::new(client.clone(), table.clone());
    store.create_table().await.expect("create table");

    let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-12-03T00:05:00Z")
        .unwrap()
        .to_utc();
    let due_every = (100 / due_percent.max(1)).max(1);
    let load_started = Instant::now();
    let requests: Vec<WriteRequest> = (0..users)
        .flat_map(|i| {
            let user = format!("user{i:07}");
            let id = UserId::parse(&user).unwrap();
            let reset_at = if i % due_every == 0 {
                now - Duration::minutes(5)
            } else {
                next_reset_boundary(now)
            };
            let limits = item(
                &user,
                SK_LIMITS,
                &[
                    (DAILY_USED, AttributeValue::N("3".into())),
                    (RESET_DAILY_AT, AttributeValue::S(format_time(reset_at))),
                    (RESET_SHARD, AttributeValue::N(reset_shard(&id).to_string())),
                ],
            );
            [
                item(
                    &user,
                    SK_PROFILE,
                    &[("name", AttributeValue::S(format!("User {i}")))],
                ),
                limits,
            ]
        })
        .collect();
    let chunks: Vec<Vec<WriteRequest>> = requests.chunks(25).map(|c| c.to_vec()).collect();
    stream::iter(chunks)
        .map(|chunk| {
            let client = client.clone();
            let table = table.clone();
            async move {
                let mut pending = HashMap::from([(table, chunk)]);
                while !pending.is_empty() {
                    let out = client
                        .batch_write_item()
                        .set_request_items(Some(pending))
                        .send()
                        .await
                        .expect("load");
                    pending = out.unprocessed_items.unwrap_or_default();
                }
            }
        })
        .buffer_unordered(8)
        .collect::<()>()
        .await;
    let load_s = load_started.elapsed().as_secs_f64();

    // The naive job first (it only reads): a parallel Scan of the whole table, filtering due items (a filter does not
    // reduce what is read and paid for).
    let scan_started = Instant::now();
    let now_s = format_time(now);
    let scanned: Vec<(u64, u64)> = futures_util::future::join_all((0..segments).map(|segment| {
        let (client, table, now_s) = (client.clone(), table.clone(), now_s.clone());
        async move {
            let (mut scanned, mut matched) = (0u64, 0u64);
            let mut start = None;
            loop {
                let page = client
                    .scan()
                    .table_name(&table)
                    .segment(segment)
                    .total_segments(segments)
                    .filter_expression("SK = :limits AND reset_daily_at <= :now")
                    .expression_attribute_values(":limits", AttributeValue::S(SK_LIMITS.into()))
                    .expression_attribute_values(":now", AttributeValue::S(now_s.clone()))
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .expect("scan");
                scanned += page.scanned_count as u64;
                matched += page.count as u64;
                match page.last_evaluated_key {
                    Some(k) if !k.is_empty() => start = Some(k),
                    _ => break (scanned, matched),
                }
            }
        }
    }))
    .await;
    let scan_s = scan_started.elapsed().as_secs_f64();
    let scan_read: u64 = scanned.iter().map(|s| s.0).sum();
    let scan_due: u64 = scanned.iter().map(|s| s.1).sum();

    let reset = run_reset(&store, now, 64, &|| false, &|| {}).await;

    let reset_s = reset.duration_ms as f64 / 1000.0;
    let result = serde_json::json!({
        "users": users,
        "items_in_table": users * 2,
        "due": reset.due,
        "load_seconds": load_s,
        "reset": {
            "reset": reset.reset,
            "items_read": reset.items_read,
            "queries": reset.queries,
            "items_read_per_due_item": reset.items_read as f64 / reset.due.max(1) as f64,
            "seconds": reset_s,
            "resets_per_second": reset.reset as f64 / reset_s.max(1e-9),
        },
        "full_scan": {
            "segments": segments,
            "items_read": scan_read,
            "due_found": scan_due,
            "items_read_per_due_item": scan_read as f64 / scan_due.max(1) as f64,
            "seconds": scan_s,
        },
    });
    println!("{result}");
    println!();
    println!("| job | items read | due | items read per due item | seconds | resets/s |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| reset job (sparse index, 16 shards) | {} | {} | {:.3} | {:.1} | {:.0} |",
        reset.items_read,
        reset.due,
        reset.items_read as f64 / reset.due.max(1) as f64,
        reset_s,
        reset.reset as f64 / reset_s.max(1e-9)
    );
    println!(
        "| full parallel Scan ({segments} segments), read only | {scan_read} | {scan_due} | {:.3} | {scan_s:.1} | – |",
        scan_read as f64 / scan_due.max(1) as f64
    );
    assert_eq!(reset.reset, reset.due, "every due item was reset");
    assert_eq!(scan_due, reset.due, "both find the same due items");
}
