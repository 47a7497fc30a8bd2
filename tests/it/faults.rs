//! Faults below the SDK (throttling, 500s) and races, against moto.

use tiersync::schema::Tier;

use crate::common;

use crate::helpers::{event_of, is_limits_of, seq, TestApp};

/// The SDK's standard retry mode: 3 attempts in all.
const SDK_ATTEMPTS: u32 = 3;

async fn one_change(app: &TestApp, user: &str) -> Vec<serde_json::Value> {
    app.store
        .create_user(&TestApp::user(user), Tier::Free, chrono::Utc::now())
        .await
        .unwrap();
    app.store
        .set_tier(&TestApp::user(user), Tier::Premium, chrono::Utc::now())
        .await
        .unwrap();
    app.stream_records().await
}

#[tokio::test]
async fn throttling_the_sdk_absorbs_is_retried_once_by_the_sdk_only() {
    let app = TestApp::spawn().await;
    let records = one_change(&app, "thr").await;
    app.faults.watch("UpdateItem", "USER#thr");
    app.faults.fail(
        "UpdateItem",
        "USER#thr",
        "ProvisionedThroughputExceededException",
        2,
    );
    let out = app
        .handler()
        .handle(&event_of(&records), chrono::Utc::now())
        .await;
    assert!(out.response.batch_item_failures.is_empty());
    assert_eq!(out.counts.applied, 1);
    assert_eq!(
        app.faults.attempts("UpdateItem", "USER#thr"),
        3,
        "two throttled attempts, then success"
    );
    assert_eq!(app.profile("thr").await, Some(("premium".into(), 2)));
}

#[tokio::test]
async fn persistent_500s_are_reported_with_the_lowest_sequence_number_and_not_retried_twice() {
    let app = TestApp::spawn().await;
    let records = one_change(&app, "isr").await;
    let lowest = records
        .iter()
        .filter(|r| is_limits_of(r, "isr"))
        .map(seq)
        .next()
        .unwrap();
    app.faults.watch("UpdateItem", "USER#isr");
    app.faults
        .fail("UpdateItem", "USER#isr", "InternalServerError", 100);
    let out = app
        .handler()
        .handle(&event_of(&records), chrono::Utc::now())
        .await;
    let reported: Vec<_> = out
        .failed_sequence_numbers()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(reported, [lowest]);
    assert_eq!(
        app.faults.attempts("UpdateItem", "USER#isr"),
        SDK_ATTEMPTS,
        "the SDK's attempts and nothing on top: no doubled retry layer"
    );
    assert_eq!(app.profile("isr").await, Some(("free".into(), 1)));
}

#[tokio::test]
async fn throttling_past_the_sdk_is_redelivered_by_the_worker_and_nothing_is_lost() {
    let app = TestApp::spawn().await;
    one_change(&app, "slow").await;
    app.store
        .set_tier(&TestApp::user("slow"), Tier::Free, chrono::Utc::now())
        .await
        .unwrap();
    // Four throttles: the first invocation's 3 SDK attempts fail, the redelivery's second attempt
    // succeeds.
    app.faults.watch("UpdateItem", "USER#slow");
    app.faults
        .fail("UpdateItem", "USER#slow", "ThrottlingException", 4);
    let s = app.run_worker().await;
    assert_eq!((s.retries, s.on_failure, s.handler.failed), (1, 0, 1));
    assert_eq!(app.faults.attempts("UpdateItem", "USER#slow"), 5);
    assert_eq!(
        app.profile("slow").await,
        Some(("free".into(), 3)),
        "the latest version, not an older one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_racing_writers_on_one_user_get_unique_versions_and_profile_converges() {
    let app = TestApp::spawn().await;
    let u = TestApp::user("hot");
    app.store
        .create_user(&u, Tier::Free, chrono::Utc::now())
        .await
        .unwrap();
    let writes = (0..20).map(|i| {
        let store = app.store.clone();
        let u = u.clone();
        tokio::spawn(async move {
            let tier = if i % 2 == 0 {
                Tier::Premium
            } else {
                Tier::Free
            };
            store.set_tier(&u, tier, chrono::Utc::now()).await.unwrap()
        })
    });
    let results = futures_util::future::join_all(writes).await;
    let mut versions: Vec<u64> = results
        .into_iter()
        .filter_map(|r| match r.unwrap() {
            tiersync::store::SetTier::Changed { tier_version } => Some(tier_version),
            tiersync::store::SetTier::Unchanged { .. } => None,
        })
        .collect();
    versions.sort();
    let n = versions.len() as u64;
    assert_eq!(
        versions,
        (2..2 + n).collect::<Vec<_>>(),
        "every real change got its own version"
    );
    assert_eq!(app.limits("hot").await.unwrap().1, 1 + n);
    app.run_worker().await;
    assert_eq!(app.profile("hot").await, app.limits("hot").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_racing_increments_never_resets_twice_or_loses_an_increment() {
    let app = TestApp::spawn().await;
    let limits = tiersync::config::Limits {
        free: 100,
        premium: 1000,
    };
    let day1 = chrono::DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
        .unwrap()
        .to_utc();
    let u = TestApp::user("busy");
    app.store.create_user(&u, Tier::Free, day1).await.unwrap();
    for _ in 0..5 {
        app.store.increment_usage(&u, day1, &limits).await.unwrap();
    }
    // Just after midnight: the reset job and 15 first requests of the day race.
    let day2 = chrono::DateTime::parse_from_rfc3339("2026-12-04T00:00:01Z")
        .unwrap()
        .to_utc();
    let increments = futures_util::future::join_all(
        (0..15).map(|_| app.store.increment_usage(&u, day2, &limits)),
    );
    let reset = tiersync::reset::run_reset(&app.store, day2, 4, &|| false, &|| {});
    let (results, summary) = tokio::join!(increments, reset);
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(tiersync::usage::Increment::Counted { .. }))));
    assert!(summary.reset + summary.already_reset <= 1);
    let item = app.item("busy", tiersync::schema::SK_LIMITS).await.unwrap();
    assert_eq!(
        item["daily_used"].as_n().unwrap(),
        "15",
        "every increment of the new day counted, yesterday's gone"
    );
    assert_eq!(
        item["reset_daily_at"].as_s().unwrap(),
        "2026-12-05T00:00:00Z"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_racing_live_sync_never_regresses_a_profile() {
    let app = TestApp::spawn().await;
    let u = TestApp::user("rr");
    app.store
        .create_user(&u, Tier::Free, chrono::Utc::now())
        .await
        .unwrap();
    let mut old_batches = Vec::new();
    for i in 0..6 {
        app.store
            .set_tier(
                &u,
                if i % 2 == 0 {
                    Tier::Premium
                } else {
                    Tier::Free
                },
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        old_batches.push(app.stream_records().await);
    }
    // Live sync of the newest state and replays of every older prefix, all at once.
    let (handler, newest) = (app.handler(), event_of(old_batches.last().unwrap()));
    let live = handler.handle(&newest, chrono::Utc::now());
    let replays = futures_util::future::join_all(
        old_batches
            .iter()
            .map(|b| async { app.handler().handle(&event_of(b), chrono::Utc::now()).await }),
    );
    let (live, replays) = tokio::join!(live, replays);
    assert!(live.response.batch_item_failures.is_empty());
    assert!(replays
        .iter()
        .all(|r| r.response.batch_item_failures.is_empty()));
    assert_eq!(app.profile("rr").await, Some(("free".into(), 7)));
}

#[tokio::test]
async fn attempts_that_time_out_are_retried_by_the_sdk_then_reported() {
    // A DynamoDB stand-in that answers after 300 ms, and a client whose attempts time out
    // after 50 ms: every attempt times out.
    let endpoint = common::dynamodb_stub(std::time::Duration::from_millis(300)).await;
    let conf = tiersync::aws::loader()
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "t", "t", None, None, "t",
        ))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(std::time::Duration::from_millis(50))
                .build(),
        )
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_initial_backoff(std::time::Duration::from_millis(1)),
        )
        .load()
        .await;
    let store = tiersync::store::DynamoStore::new(aws_sdk_dynamodb::Client::new(&conf), "t");
    let event: tiersync::handler::StreamEvent = common::distinct_changes(3).parse().unwrap();
    let started = std::time::Instant::now();
    let out = tiersync::handler::SyncHandler::new(store, 8)
        .handle(&event, chrono::Utc::now())
        .await;
    let reported: Vec<String> = out
        .failed_sequence_numbers()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(reported.len(), 3, "each user's write is reported");
    assert_eq!(
        reported[0], "100000000000000000000",
        "the lowest sequence number first"
    );
    assert_eq!(out.counts.failed, 3);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(150),
        "3 attempts of 50 ms each"
    );
}
