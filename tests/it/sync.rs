//! The sync handler on real stream records read back from moto.

use serde_json::json;
use tiersync::schema::{Tier, SK_PROFILE};

use crate::helpers::{event_of, is_limits_of, seq, TestApp};

async fn app_with(users: &[(&str, Tier)]) -> TestApp {
    let app = TestApp::spawn().await;
    for (u, t) in users {
        app.store
            .create_user(&TestApp::user(u), *t, chrono::Utc::now())
            .await
            .unwrap();
    }
    app
}

#[tokio::test]
async fn a_batch_writes_one_profile_per_user_with_the_highest_version_and_reads_nothing() {
    let app = app_with(&[("a", Tier::Free), ("b", Tier::Free)]).await;
    let (a, b) = (TestApp::user("a"), TestApp::user("b"));
    let now = chrono::Utc::now();
    for t in [Tier::Premium, Tier::Free, Tier::Premium] {
        app.store.set_tier(&a, t, now).await.unwrap();
    }
    app.store.set_tier(&b, Tier::Premium, now).await.unwrap();
    let records = app.stream_records().await;
    app.recorder.clear();
    let out = app.handler().handle(&event_of(&records), now).await;
    assert!(out.response.batch_item_failures.is_empty());
    assert_eq!(
        app.recorder.profile_writes(),
        2,
        "one write per user with a version rise"
    );
    assert_eq!(app.recorder.reads(), 0, "no reads on the sync path");
    assert_eq!(app.recorder.calls().len(), 2);
    assert_eq!((out.counts.writes, out.counts.applied), (2, 2));
    assert_eq!(out.counts.relevant, 6, "2 inserts + 4 tier changes");
    assert_eq!(app.profile("a").await, Some(("premium".into(), 4)));
    assert_eq!(app.profile("b").await, Some(("premium".into(), 2)));
}

#[tokio::test]
async fn usage_increments_and_profile_writes_cause_zero_database_calls() {
    let app = app_with(&[("u", Tier::Free)]).await;
    // Drain the creation records first.
    let created = app.stream_records().await.len();
    for _ in 0..5 {
        app.bump_usage("u").await;
    }
    let usage_only: Vec<_> = app
        .stream_records()
        .await
        .into_iter()
        .skip(created)
        .collect();
    assert_eq!(usage_only.len(), 5);
    app.recorder.clear();
    let out = app
        .handler()
        .handle(&event_of(&usage_only), chrono::Utc::now())
        .await;
    assert_eq!(
        app.recorder.calls().len(),
        0,
        "skipped records make no DynamoDB call"
    );
    assert_eq!((out.counts.skipped, out.counts.writes), (5, 0));
    assert!(out.response.batch_item_failures.is_empty());
}

#[tokio::test]
async fn stale_and_duplicate_records_never_change_a_profile() {
    let app = app_with(&[("s", Tier::Free)]).await;
    let u = TestApp::user("s");
    let now = chrono::Utc::now();
    app.store.set_tier(&u, Tier::Premium, now).await.unwrap();
    app.store.set_tier(&u, Tier::Free, now).await.unwrap();
    let records = app.stream_records().await;
    let first = app.handler().handle(&event_of(&records), now).await;
    assert_eq!(first.counts.applied, 1);
    let before = app.item("s", SK_PROFILE).await.unwrap();
    assert_eq!(app.profile("s").await, Some(("free".into(), 3)));

    // The whole batch again, and each tier change alone in reverse order (stale versions).
    let later = now + chrono::Duration::minutes(5);
    let again = app.handler().handle(&event_of(&records), later).await;
    assert_eq!((again.counts.applied, again.counts.already_current), (0, 1));
    for r in records.iter().filter(|r| is_limits_of(r, "s")).rev() {
        let out = app
            .handler()
            .handle(&event_of(std::slice::from_ref(r)), later)
            .await;
        assert_eq!(out.counts.applied, 0);
        assert!(out.response.batch_item_failures.is_empty());
    }
    assert_eq!(
        app.item("s", SK_PROFILE).await.unwrap(),
        before,
        "not even tier_synced_at moved"
    );
}

#[tokio::test]
async fn poison_next_to_good_records_is_skipped_and_reported_while_good_ones_apply() {
    let app = app_with(&[("g", Tier::Free)]).await;
    app.store
        .set_tier(&TestApp::user("g"), Tier::Premium, chrono::Utc::now())
        .await
        .unwrap();
    let good = app.stream_records().await;
    let template = good.iter().rfind(|r| is_limits_of(r, "g")).unwrap().clone();
    let mut unknown_tier = template.clone();
    unknown_tier["dynamodb"]["NewImage"]["tier"] = json!({"S": "gold"});
    unknown_tier["dynamodb"]["SequenceNumber"] = json!("1");
    let mut bad_version = template.clone();
    bad_version["dynamodb"]["NewImage"]["tier_version"] = json!({"N": "two"});
    bad_version["dynamodb"]["SequenceNumber"] = json!("2");
    let mut bad_key = template.clone();
    bad_key["dynamodb"]["Keys"]["PK"] = json!({"S": "USER#"});
    let not_a_record = json!({"eventName": "MODIFY", "dynamodb": "garbage"});
    let mut records = vec![unknown_tier, bad_version, bad_key, not_a_record];
    records.extend(good);
    let out = app
        .handler()
        .handle(&event_of(&records), chrono::Utc::now())
        .await;
    assert_eq!(out.counts.poison, 4);
    assert_eq!(out.counts.applied, 1);
    assert!(
        out.response.batch_item_failures.is_empty(),
        "poison is never retried"
    );
    assert_eq!(app.profile("g").await, Some(("premium".into(), 2)));
}

#[tokio::test]
async fn a_missing_profile_is_never_created() {
    let app = TestApp::spawn().await;
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    app.put_raw(vec![
        ("PK", S("USER#lonely".into())),
        ("SK", S("USAGE#LIMITS".into())),
        ("tier", S("free".into())),
        ("tier_version", N("1".into())),
    ])
    .await;
    app.store
        .set_tier(&TestApp::user("lonely"), Tier::Premium, chrono::Utc::now())
        .await
        .unwrap();
    let out = app
        .handler()
        .handle(&event_of(&app.stream_records().await), chrono::Utc::now())
        .await;
    assert_eq!((out.counts.profile_missing, out.counts.applied), (1, 0));
    assert!(out.response.batch_item_failures.is_empty());
    assert!(app.item("lonely", SK_PROFILE).await.is_none());
}

#[tokio::test]
async fn the_same_version_with_another_tier_is_a_conflict_and_left_alone() {
    let app = app_with(&[("c", Tier::Free)]).await;
    app.store
        .set_tier(&TestApp::user("c"), Tier::Premium, chrono::Utc::now())
        .await
        .unwrap();
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    // Someone broke the contract and wrote PROFILE directly at version 2 with the wrong tier.
    app.put_raw(vec![
        ("PK", S("USER#c".into())),
        ("SK", S(SK_PROFILE.into())),
        ("tier", S("free".into())),
        ("tier_version", N("2".into())),
    ])
    .await;
    let out = app
        .handler()
        .handle(&event_of(&app.stream_records().await), chrono::Utc::now())
        .await;
    assert_eq!((out.counts.conflict, out.counts.applied), (1, 0));
    assert!(out.response.batch_item_failures.is_empty());
    assert_eq!(app.profile("c").await, Some(("free".into(), 2)));
}

#[tokio::test]
async fn a_transient_failure_reports_the_failed_users_lowest_sequence_number() {
    let app = app_with(&[("ok", Tier::Free), ("flaky", Tier::Free)]).await;
    let now = chrono::Utc::now();
    app.store
        .set_tier(&TestApp::user("flaky"), Tier::Premium, now)
        .await
        .unwrap();
    app.store
        .set_tier(&TestApp::user("ok"), Tier::Premium, now)
        .await
        .unwrap();
    app.store
        .set_tier(&TestApp::user("flaky"), Tier::Free, now)
        .await
        .unwrap();
    let records = app.stream_records().await;
    let lowest_flaky = records
        .iter()
        .filter(|r| is_limits_of(r, "flaky"))
        .map(seq)
        .next()
        .unwrap();
    app.recorder.fail_next("UpdateItem", "USER#flaky", 1);
    let out = app.handler().handle(&event_of(&records), now).await;
    let reported: Vec<_> = out
        .response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap())
        .collect();
    assert_eq!(reported, [lowest_flaky]);
    assert_eq!((out.counts.failed, out.counts.applied), (1, 1));
    let response = serde_json::to_value(&out.response).unwrap();
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": reported[0]}]})
    );
    assert_eq!(app.profile("ok").await, Some(("premium".into(), 2)));
    assert_eq!(
        app.profile("flaky").await,
        Some(("free".into(), 1)),
        "not written yet"
    );
}
