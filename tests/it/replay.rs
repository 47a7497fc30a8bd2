//! Replay of on-failure records, reconcile and migrate, against moto.

use aws_sdk_dynamodb::types::AttributeValue::{N, S};
use serde_json::{json, Value};
use tiersync::reconcile::{self, Class};
use tiersync::replay::{ReplayOptions, ReplaySummary, Replayer, Source};
use tiersync::schema::{Tier, SK_LIMITS, SK_PROFILE};

use crate::helpers::{is_limits_of, seq, TestApp};

fn opts() -> ReplayOptions {
    ReplayOptions {
        dry_run: false,
        max_messages: 100,
        reconcile_on_expiry: false,
        max_writes_per_second: 1000,
    }
}

async fn replay(app: &TestApp, source: Source, opts: ReplayOptions) -> ReplaySummary {
    let r = Replayer {
        store: &app.store,
        handler: app.handler(),
        streams: app.streams.clone(),
        opts,
    };
    r.run(&source, &|| {}).await
}

async fn shard_id(app: &TestApp) -> String {
    let d = app
        .streams
        .describe_stream()
        .stream_arn(app.stream_arn().await)
        .send()
        .await
        .unwrap();
    d.stream_description.unwrap().shards.unwrap()[0]
        .shard_id
        .clone()
        .unwrap()
}

/// An on-failure record in AWS's exact format, written by hand.
async fn pointer(app: &TestApp, shard: &str, start: &str, end: &str) -> Value {
    json!({
        "requestContext": {"requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:sync",
            "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 11},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2026-12-03T00:13:49.717Z",
        "DDBStreamBatchInfo": {
            "shardId": shard, "startSequenceNumber": start, "endSequenceNumber": end,
            "approximateArrivalOfFirstRecord": "2026-12-03T00:13:19Z",
            "approximateArrivalOfLastRecord": "2026-12-03T00:13:19Z",
            "batchSize": 2, "streamArn": app.stream_arn().await}
    })
}

#[tokio::test]
async fn on_failure_records_from_the_worker_replay_once_and_then_change_nothing() {
    let app = TestApp::spawn().await;
    app.free_users_upgraded(&["p1", "p2"]).await;
    app.recorder.fail_next("UpdateItem", "USER#p2", 100);
    let mut cfg = app.worker_config();
    cfg.max_retries = 1;
    let file = app.path("failures.jsonl");
    cfg.on_failure = Some(tiersync::worker::OnFailureTarget::File(file.clone()));
    assert_eq!(app.run_worker_with(cfg).await.on_failure, 1);
    assert_eq!(app.profile("p2").await, Some(("free".into(), 1)));
    app.recorder.clear_faults();

    let first = replay(&app, Source::File(file.clone()), opts()).await;
    assert!(first.ok(), "{first:?}");
    assert_eq!((first.messages, first.batches, first.applied), (1, 1, 1));
    assert_eq!(app.profile("p2").await, Some(("premium".into(), 2)));
    let again = replay(&app, Source::File(file), opts()).await;
    assert!(again.ok());
    assert_eq!(
        (again.applied, again.already_current),
        (0, 1),
        "a second replay changes nothing"
    );
}

#[tokio::test]
async fn replaying_an_old_batch_never_regresses_a_profile() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now();
    let u = TestApp::user("old");
    app.store.create_user(&u, Tier::Free, now).await.unwrap();
    app.store.set_tier(&u, Tier::Premium, now).await.unwrap();
    let records = app.stream_records().await;
    let first_change = records
        .iter()
        .filter(|r| is_limits_of(r, "old"))
        .map(seq)
        .nth(1)
        .unwrap();
    app.store.set_tier(&u, Tier::Free, now).await.unwrap();
    app.run_worker().await;
    assert_eq!(app.profile("old").await, Some(("free".into(), 3)));
    let file = app.path("old.json");
    std::fs::write(
        &file,
        pointer(&app, &shard_id(&app).await, &first_change, &first_change)
            .await
            .to_string(),
    )
    .unwrap();
    let s = replay(&app, Source::File(file), opts()).await;
    assert!(s.ok(), "{s:?}");
    assert_eq!((s.records, s.applied, s.already_current), (1, 0, 1));
    assert_eq!(app.profile("old").await, Some(("free".into(), 3)));
}

async fn queue(app: &TestApp) -> (aws_sdk_sqs::Client, String) {
    let sqs = aws_sdk_sqs::Client::new(&app.sdk);
    let url = sqs
        .create_queue()
        .queue_name(format!("{}-onfailure", app.table))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    (sqs, url)
}

async fn messages_in_queue(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    attrs.values().map(|v| v.parse::<u64>().unwrap()).sum()
}

#[tokio::test]
async fn a_queue_replay_deletes_applied_messages_and_leaves_malformed_ones() {
    let app = TestApp::spawn().await;
    app.free_users_upgraded(&["q"]).await;
    let records = app.stream_records().await;
    let limits: Vec<String> = records
        .iter()
        .filter(|r| is_limits_of(r, "q"))
        .map(seq)
        .collect();
    let (sqs, url) = queue(&app).await;
    let record = pointer(&app, &shard_id(&app).await, &limits[0], &limits[1]).await;
    // Through SNS: the record is the envelope's Message string.
    let sns = json!({"Type": "Notification", "MessageId": "sns-1", "TopicArn": "arn:aws:sns:us-east-1:123456789012:t", "Message": record.to_string()});
    sqs.send_message()
        .queue_url(&url)
        .message_body(sns.to_string())
        .send()
        .await
        .unwrap();
    sqs.send_message()
        .queue_url(&url)
        .message_body("{\"not\": \"an on-failure record\"}")
        .send()
        .await
        .unwrap();

    let s = replay(
        &app,
        Source::Queue {
            client: sqs.clone(),
            url: url.clone(),
        },
        opts(),
    )
    .await;
    assert_eq!(
        (
            s.messages,
            s.batches,
            s.records,
            s.applied,
            s.malformed,
            s.deleted
        ),
        (2, 1, 2, 1, 1, 1),
        "{s:?}"
    );
    assert!(!s.ok());
    assert_eq!(s.problems.len(), 1);
    assert_eq!(s.problems[0].kind, "malformed");
    assert!(s.problems[0].reason.contains("DDBStreamBatchInfo"));
    assert_eq!(app.profile("q").await, Some(("premium".into(), 2)));
    assert_eq!(
        messages_in_queue(&sqs, &url).await,
        1,
        "only the malformed message is left"
    );
}

#[tokio::test]
async fn an_expired_batch_is_never_success_and_can_be_repaired_for_its_users() {
    let app = TestApp::spawn().await;
    app.free_users_upgraded(&["x1", "x2"]).await;
    // As after the 24 h retention: the shard is gone (DynamoDB answers ResourceNotFoundException;
    // moto answers a 500 for an unknown shard, so the exact AWS error is injected).
    let gone = "shardId-00000001000000000000-deadbeef";
    app.stream_faults
        .fail("GetShardIterator", gone, "ResourceNotFoundException", 3);
    let mut record = pointer(&app, gone, "100000000000000000001", "100000000000000000002").await;
    let file = app.path("expired.json");
    std::fs::write(&file, record.to_string()).unwrap();
    let s = replay(&app, Source::File(file.clone()), opts()).await;
    assert!(!s.ok());
    assert_eq!((s.expired, s.applied, s.repaired), (1, 0, 0), "{s:?}");
    assert_eq!(s.problems[0].kind, "expired");
    assert_eq!(app.profile("x1").await, Some(("free".into(), 1)));

    // The S3 form names the batch's users: the repair touches just them.
    record["payload"] = json!({"Records": [{"dynamodb": {"Keys": {"PK": {"S": "USER#x1"}, "SK": {"S": "USAGE#LIMITS"}}}}]});
    std::fs::write(&file, record.to_string()).unwrap();
    let mut o = opts();
    o.reconcile_on_expiry = true;
    let s = replay(&app, Source::File(file.clone()), o).await;
    assert!(!s.ok(), "an expired batch is never reported as success");
    assert_eq!((s.expired, s.repaired), (1, 1));
    assert_eq!(app.profile("x1").await, Some(("premium".into(), 2)));
    assert_eq!(
        app.profile("x2").await,
        Some(("free".into(), 1)),
        "not in the batch"
    );

    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_tiersync"))
        .args(["--table", &app.table, "replay", "--file"])
        .arg(&file)
        .output()
        .unwrap();
    // The CLI (no injected faults: moto answers an unknown shard with a 500) also exits non-zero
    // and names the batch.
    assert!(!cli.status.success());
    assert!(String::from_utf8_lossy(&cli.stderr).contains("error: replay incomplete"));
    let summary: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert!(summary["problems"][0]["reason"]
        .as_str()
        .unwrap()
        .contains(gone));
}

#[tokio::test]
async fn trimmed_records_and_expired_iterators_are_handled() {
    let app = TestApp::spawn().await;
    app.free_users_upgraded(&["t"]).await;
    let limits: Vec<String> = app
        .stream_records()
        .await
        .iter()
        .filter(|r| is_limits_of(r, "t"))
        .map(seq)
        .collect();
    let file = app.path("p.json");
    std::fs::write(
        &file,
        pointer(&app, &shard_id(&app).await, &limits[0], &limits[1])
            .await
            .to_string(),
    )
    .unwrap();
    // The records are past the trim horizon: expired, never success.
    app.stream_faults.fail(
        "GetShardIterator",
        &limits[0],
        "TrimmedDataAccessException",
        1,
    );
    let s = replay(&app, Source::File(file.clone()), opts()).await;
    assert_eq!((s.expired, s.applied), (1, 0), "{s:?}");
    assert!(s.problems[0].reason.contains("TrimmedDataAccessException"));
    // An iterator that expires mid-read is renewed and the replay completes.
    app.stream_faults
        .fail("GetRecords", "", "ExpiredIteratorException", 1);
    let s = replay(&app, Source::File(file), opts()).await;
    assert!(s.ok(), "{s:?}");
    assert_eq!((s.records, s.applied), (2, 1));
}

#[tokio::test]
async fn a_pointer_into_another_tables_stream_is_refused() {
    let app = TestApp::spawn().await;
    let mut record = pointer(&app, "shardId-1", "1", "2").await;
    record["DDBStreamBatchInfo"]["streamArn"] =
        json!("arn:aws:dynamodb:us-east-1:123456789012:table/other/stream/2026-01-01T00:00:00.000");
    let file = app.path("other.json");
    std::fs::write(&file, record.to_string()).unwrap();
    let s = replay(&app, Source::File(file), opts()).await;
    assert_eq!((s.failed, s.applied), (1, 0));
    assert!(s.problems[0].reason.contains("does not belong to table"));
}

async fn drifted(app: &TestApp) {
    let now = chrono::Utc::now();
    for u in ["ok", "behind", "ahead"] {
        app.store
            .create_user(&TestApp::user(u), Tier::Free, now)
            .await
            .unwrap();
    }
    app.store
        .set_tier(&TestApp::user("behind"), Tier::Premium, now)
        .await
        .unwrap();
    let raw = |pk: &str, sk: &str, tier: Option<&str>, v: Option<&str>| {
        let mut item = vec![("PK", S(format!("USER#{pk}"))), ("SK", S(sk.into()))];
        if let Some(t) = tier {
            item.push(("tier", S(t.into())));
        }
        if let Some(v) = v {
            item.push(("tier_version", N(v.into())));
        }
        item
    };
    app.put_raw(raw("ahead", SK_PROFILE, Some("premium"), Some("7")))
        .await;
    app.put_raw(raw("nolimits", SK_PROFILE, Some("free"), Some("1")))
        .await;
    app.put_raw(raw("noprofile", SK_LIMITS, Some("free"), Some("1")))
        .await;
    app.put_raw(raw("legacy", SK_LIMITS, None, None)).await;
    app.put_raw(raw("legacy", SK_PROFILE, Some("premium"), None))
        .await;
    app.put_raw(raw("weird", SK_LIMITS, Some("gold"), Some("1")))
        .await;
}

#[tokio::test]
async fn reconcile_reports_every_class_and_a_dry_run_changes_nothing() {
    let app = TestApp::spawn().await;
    drifted(&app).await;
    app.recorder.clear();
    let users = reconcile::scan_users(&app.store, 3, &|_| {}).await.unwrap();
    let report =
        reconcile::reconcile(&app.store, &users, false, 100, chrono::Utc::now(), &|| {}).await;
    assert_eq!(report.users, 7);
    let ids = |c: Class| report.user_ids.get(&c).cloned().unwrap_or_default();
    assert_eq!(report.count(Class::InSync), 1);
    assert_eq!(ids(Class::ProfileBehind), ["behind"]);
    assert_eq!(ids(Class::ProfileAhead), ["ahead"]);
    assert_eq!(ids(Class::LimitsMissing), ["nolimits"]);
    assert_eq!(ids(Class::ProfileMissing), ["noprofile"]);
    assert_eq!(ids(Class::Legacy), ["legacy"]);
    assert_eq!(ids(Class::Invalid), ["weird"]);
    assert!(!report.user_ids.contains_key(&Class::InSync));
    assert_eq!(
        app.recorder.count("UpdateItem") + app.recorder.count("PutItem"),
        0,
        "a dry run writes nothing"
    );
    assert_eq!(app.profile("behind").await, Some(("free".into(), 1)));
}

#[tokio::test]
async fn repair_fixes_profiles_behind_and_never_lowers_a_version() {
    let app = TestApp::spawn().await;
    drifted(&app).await;
    let users = reconcile::scan_users(&app.store, 2, &|_| {}).await.unwrap();
    let report =
        reconcile::reconcile(&app.store, &users, true, 1000, chrono::Utc::now(), &|| {}).await;
    let repaired = report.repaired.unwrap();
    assert_eq!((repaired.applied, repaired.failed), (1, 0));
    assert_eq!(app.profile("behind").await, Some(("premium".into(), 2)));
    assert_eq!(
        app.profile("ahead").await,
        Some(("premium".into(), 7)),
        "ahead stays ahead"
    );
    let after = reconcile::scan_users(&app.store, 2, &|_| {}).await.unwrap();
    let report =
        reconcile::reconcile(&app.store, &after, false, 100, chrono::Utc::now(), &|| {}).await;
    assert_eq!(report.count(Class::InSync), 2);
    assert_eq!(report.count(Class::ProfileBehind), 0);
}

#[tokio::test]
async fn migrate_then_worker_brings_legacy_users_in_sync() {
    let app = TestApp::spawn().await;
    drifted(&app).await;
    let users = reconcile::scan_users(&app.store, 2, &|_| {}).await.unwrap();
    let dry = reconcile::migrate(&app.store, &users, true, chrono::Utc::now()).await;
    assert_eq!(
        (dry.migrated, dry.index_backfilled),
        (1, 3),
        "legacy, noprofile and weird lack the index"
    );
    assert!(
        app.limits("legacy").await.unwrap().0.is_empty(),
        "dry run wrote nothing"
    );
    let done = reconcile::migrate(&app.store, &users, false, chrono::Utc::now()).await;
    assert_eq!(done, dry, "the dry run predicted the run");
    assert_eq!(
        app.limits("legacy").await,
        Some(("premium".into(), 1)),
        "tier taken from PROFILE"
    );
    let item = app.item("legacy", SK_LIMITS).await.unwrap();
    assert!(item.contains_key("reset_shard") && item.contains_key("reset_daily_at"));
    app.run_worker().await;
    assert_eq!(app.profile("legacy").await, Some(("premium".into(), 1)));
    let again = reconcile::migrate(
        &app.store,
        &reconcile::scan_users(&app.store, 2, &|_| {}).await.unwrap(),
        false,
        chrono::Utc::now(),
    )
    .await;
    assert_eq!(
        (again.migrated, again.index_backfilled),
        (0, 0),
        "idempotent"
    );
}

#[tokio::test]
async fn the_workers_on_failure_records_in_sqs_replay_from_the_queue() {
    let app = TestApp::spawn().await;
    app.free_users_upgraded(&["s1"]).await;
    let (sqs, url) = queue(&app).await;
    app.recorder.fail_next("UpdateItem", "USER#s1", 100);
    let mut cfg = app.worker_config();
    cfg.max_retries = 0;
    cfg.on_failure = Some(tiersync::worker::OnFailureTarget::Queue {
        client: sqs.clone(),
        url: url.clone(),
    });
    assert_eq!(app.run_worker_with(cfg).await.on_failure, 1);
    assert_eq!(messages_in_queue(&sqs, &url).await, 1);
    app.recorder.clear_faults();
    let s = replay(
        &app,
        Source::Queue {
            client: sqs.clone(),
            url: url.clone(),
        },
        opts(),
    )
    .await;
    assert!(s.ok(), "{s:?}");
    assert_eq!((s.messages, s.applied, s.deleted), (1, 1, 1));
    assert_eq!(app.profile("s1").await, Some(("premium".into(), 2)));
    assert_eq!(messages_in_queue(&sqs, &url).await, 0);
}
