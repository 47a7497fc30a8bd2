//! Usage metering, lazy rollover and the reset job against moto.

use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Duration, Utc};
use tiersync::config::Limits;
use tiersync::reset::run_reset;
use tiersync::schema::{Tier, RESET_INDEX, SK_LIMITS};
use tiersync::usage::Increment;

use crate::helpers::TestApp;

fn at(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t).unwrap().to_utc()
}

const LIMITS: Limits = Limits {
    free: 10,
    premium: 1000,
};

async fn increments(app: &TestApp, user: &str, n: usize, now: DateTime<Utc>) -> (usize, usize) {
    let id = TestApp::user(user);
    let results = futures_util::future::join_all(
        (0..n).map(|_| app.store.increment_usage(&id, now, &LIMITS)),
    )
    .await;
    let counted = results
        .iter()
        .filter(|r| matches!(r, Ok(Increment::Counted { .. })))
        .count();
    let refused = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Ok(Increment::LimitReached {
                    daily_limit: 10,
                    ..
                })
            )
        })
        .count();
    (counted, refused)
}

#[tokio::test]
async fn twenty_five_racing_increments_against_a_limit_of_ten_succeed_exactly_ten_times() {
    let app = TestApp::spawn().await;
    let now = at("2026-12-03T10:00:00Z");
    app.store
        .create_user(&TestApp::user("racer"), Tier::Free, now)
        .await
        .unwrap();
    assert_eq!(increments(&app, "racer", 25, now).await, (10, 15));
    let usage = app
        .store
        .get_user_usage(&TestApp::user("racer"), now)
        .await
        .unwrap();
    assert_eq!(usage.daily_used, 10);
    let limits = app.item("racer", SK_LIMITS).await.unwrap();
    assert_eq!(
        limits["tier_version"].as_n().unwrap(),
        "1",
        "usage never touches the version"
    );
}

#[tokio::test]
async fn the_limit_message_names_the_limit_and_the_reset_time() {
    let app = TestApp::spawn().await;
    let now = at("2026-12-03T10:00:00Z");
    let u = TestApp::user("capped");
    app.store.create_user(&u, Tier::Free, now).await.unwrap();
    for i in 1..=10 {
        let r = app.store.increment_usage(&u, now, &LIMITS).await.unwrap();
        assert_eq!(
            r,
            Increment::Counted {
                daily_used: i,
                daily_limit: 10,
                reset_daily_at: "2026-12-04T00:00:00Z".into()
            }
        );
    }
    assert_eq!(
        app.store.increment_usage(&u, now, &LIMITS).await.unwrap(),
        Increment::LimitReached {
            daily_limit: 10,
            reset_daily_at: "2026-12-04T00:00:00Z".into()
        }
    );
}

#[tokio::test]
async fn reads_and_increments_roll_the_day_over_without_the_job() {
    let app = TestApp::spawn().await;
    let day1 = at("2026-12-03T10:00:00Z");
    let u = TestApp::user("lazy");
    app.store.create_user(&u, Tier::Free, day1).await.unwrap();
    assert_eq!(increments(&app, "lazy", 12, day1).await, (10, 2));
    let day2 = at("2026-12-04T00:00:00Z"); // exactly the boundary: a new day
    let read = app.store.get_user_usage(&u, day2).await.unwrap();
    assert_eq!(
        (read.daily_used, read.reset_daily_at.as_str()),
        (0, "2026-12-05T00:00:00Z")
    );
    // Racing first requests of the new day: exactly one starts it, none is lost.
    assert_eq!(increments(&app, "lazy", 7, day2).await, (7, 0));
    let item = app.item("lazy", SK_LIMITS).await.unwrap();
    assert_eq!(item["daily_used"].as_n().unwrap(), "7");
    assert_eq!(
        item["reset_daily_at"].as_s().unwrap(),
        "2026-12-05T00:00:00Z"
    );
}

async fn users_with_due(app: &TestApp, total: usize, due: usize, today: DateTime<Utc>) {
    for i in 0..total {
        // Created yesterday: the day ended at today's midnight, so the item is due.
        let created = if i < due {
            today - Duration::days(1)
        } else {
            today
        };
        app.store
            .create_user(&TestApp::user(&format!("r{i}")), Tier::Free, created)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_reset_job_reads_only_due_items_and_a_second_run_writes_nothing() {
    let app = TestApp::spawn().await;
    let now = at("2026-12-03T00:05:00Z");
    users_with_due(&app, 40, 10, now).await;
    app.recorder.clear();
    let first = run_reset(&app.store, now, 8, &|| false, &|| {}).await;
    assert_eq!(
        (
            first.due,
            first.reset,
            first.already_reset,
            first.malformed,
            first.failed
        ),
        (10, 10, 0, 0, 0)
    );
    assert!(!first.stopped_early);
    assert_eq!(first.items_read, 10, "items read = due items");
    let calls = app.recorder.calls();
    assert_eq!(
        calls.iter().filter(|c| c.op == "Scan").count(),
        0,
        "never scans the table"
    );
    let queries: Vec<_> = calls.iter().filter(|c| c.op == "Query").collect();
    assert_eq!(queries.len(), 16, "one query per shard");
    assert!(queries.iter().all(|q| q.body["IndexName"] == RESET_INDEX));
    assert_eq!(app.recorder.count("UpdateItem"), 10);
    let item = app.item("r0", SK_LIMITS).await.unwrap();
    assert_eq!(
        item["reset_daily_at"].as_s().unwrap(),
        "2026-12-04T00:00:00Z"
    );
    assert_eq!(item["tier_version"].as_n().unwrap(), "1");

    app.recorder.clear();
    let second = run_reset(&app.store, now, 8, &|| false, &|| {}).await;
    assert_eq!((second.due, second.reset), (0, 0));
    assert_eq!(
        app.recorder.count("UpdateItem"),
        0,
        "a second run at the same time writes nothing"
    );
}

#[tokio::test]
async fn overlapping_runs_reset_each_item_once() {
    let app = TestApp::spawn().await;
    let now = at("2026-12-03T00:05:00Z");
    users_with_due(&app, 12, 12, now).await;
    let (a, b) = tokio::join!(
        run_reset(&app.store, now, 4, &|| false, &|| {}),
        run_reset(&app.store, now, 4, &|| false, &|| {})
    );
    assert_eq!(a.reset + b.reset, 12);
    assert_eq!(
        a.reset + a.already_reset + b.reset + b.already_reset,
        a.due + b.due
    );
}

#[tokio::test]
async fn resets_cause_no_profile_writes() {
    let app = TestApp::spawn().await;
    let now = at("2026-12-03T00:05:00Z");
    users_with_due(&app, 6, 6, now).await;
    app.run_worker().await; // drain the creations
    let reset = run_reset(&app.store, now, 4, &|| false, &|| {}).await;
    assert_eq!(reset.reset, 6);
    app.recorder.clear();
    let s = app.run_worker().await;
    assert_eq!(s.records_read, 6, "one stream record per reset");
    assert_eq!((s.handler.relevant, s.handler.writes), (0, 0));
    assert_eq!(app.recorder.profile_writes(), 0);
}

#[tokio::test]
async fn malformed_items_are_counted_and_do_not_stop_the_job() {
    let app = TestApp::spawn().await;
    let now = at("2026-12-03T00:05:00Z");
    users_with_due(&app, 5, 5, now).await;
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    app.put_raw(vec![
        ("PK", S("USER#broken".into())),
        ("SK", S(SK_LIMITS.into())),
        ("tier", S("free".into())),
        ("daily_used", N("3".into())),
        ("reset_daily_at", S("2020-99-99T00:00:00Z".into())),
        ("reset_shard", N("3".into())),
    ])
    .await;
    let s = run_reset(&app.store, now, 4, &|| false, &|| {}).await;
    assert_eq!((s.due, s.reset, s.malformed), (6, 5, 1));
    let broken = app.item("broken", SK_LIMITS).await.unwrap();
    assert_eq!(
        broken["daily_used"].as_n().unwrap(),
        "3",
        "skipped, not touched"
    );
}

#[tokio::test]
async fn a_tiny_deadline_stops_the_job_early_and_the_next_run_finishes() {
    let app = TestApp::spawn().await;
    let now = at("2026-12-03T00:05:00Z");
    users_with_due(&app, 20, 20, now).await;
    let checks = AtomicUsize::new(0);
    // The deadline arrives after 21 checks: at most 16 go to the shard queries, so at least 5
    // items are reset, and too few checks remain for all 20.
    let first = run_reset(
        &app.store,
        now,
        1,
        &|| checks.fetch_add(1, Ordering::SeqCst) >= 21,
        &|| {},
    )
    .await;
    assert!(first.stopped_early);
    assert!(first.reset < 20 && first.reset > 0, "{first:?}");
    let second = run_reset(&app.store, now, 4, &|| false, &|| {}).await;
    assert!(!second.stopped_early);
    assert_eq!(first.reset + second.reset, 20);
    assert_eq!(
        second.due,
        20 - first.reset,
        "items already reset are no longer due"
    );
}
