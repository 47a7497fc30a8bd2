//! The local stream worker against moto's stream: delivery, retries, on-failure records,
//! checkpoints and crashes.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tiersync::schema::Tier;

use crate::helpers::{is_limits_of, seq, TestApp};

#[tokio::test]
async fn set_tier_then_worker_makes_every_profile_equal_to_its_limits() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now();
    for (i, u) in ["w1", "w2", "w3"].iter().enumerate() {
        let id = TestApp::user(u);
        app.store.create_user(&id, Tier::Free, now).await.unwrap();
        for _ in 0..=i {
            let next = if app.limits(u).await.unwrap().0 == "free" {
                Tier::Premium
            } else {
                Tier::Free
            };
            app.store.set_tier(&id, next, now).await.unwrap();
        }
    }
    let summary = app.run_worker().await;
    assert_eq!(
        summary.records_read,
        6 + 6 + 3,
        "creations, tier changes, its own 3 PROFILE writes"
    );
    assert_eq!(summary.handler.applied, 3);
    assert_eq!(summary.handler.failed, 0);
    for u in ["w1", "w2", "w3"] {
        assert_eq!(app.profile(u).await, app.limits(u).await, "{u}");
    }
    assert_eq!(app.limits("w3").await, Some(("premium".into(), 4)));
    // The checkpoint holds: a second run has nothing left to read.
    let again = app.run_worker().await;
    assert_eq!(again.records_read, 0);
    assert_eq!(again.handler.writes, 0);
}

#[tokio::test]
async fn batches_respect_the_batch_size() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now();
    for u in ["b1", "b2", "b3", "b4", "b5"] {
        app.store
            .create_user(&TestApp::user(u), Tier::Premium, now)
            .await
            .unwrap();
    }
    let mut cfg = app.worker_config();
    cfg.batch_size = 3;
    let s = app.run_worker_with(cfg).await;
    assert_eq!(s.records_read, 10);
    assert_eq!(s.invocations, 4, "10 records in batches of at most 3");
    assert_eq!(
        s.handler.already_current, 5,
        "profiles were created at version 1 already"
    );
}

#[tokio::test]
async fn a_transient_failure_is_redelivered_from_the_lowest_failed_record_and_applied() {
    let app = TestApp::spawn().await;
    app.free_users_upgraded(&["fine", "flaky"]).await;
    app.recorder.fail_next("UpdateItem", "USER#flaky", 1);
    let s = app.run_worker().await;
    assert_eq!(s.retries, 1);
    assert_eq!(s.on_failure, 0);
    assert_eq!(s.handler.failed, 1);
    assert_eq!(app.profile("flaky").await, Some(("premium".into(), 2)));
    assert_eq!(app.profile("fine").await, Some(("premium".into(), 2)));
    // 6 records; the redelivery starts at flaky's first LIMITS record (its last 2 records);
    // then the worker reads its own 2 PROFILE writes.
    assert_eq!(s.handler.records, 6 + 2 + 2);
    assert_eq!(s.invocations, 3);
}

#[tokio::test]
async fn exhausted_retries_write_an_aws_on_failure_record_and_move_on() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now();
    for u in ["good", "broken"] {
        app.store
            .create_user(&TestApp::user(u), Tier::Free, now)
            .await
            .unwrap();
    }
    app.store
        .set_tier(&TestApp::user("broken"), Tier::Premium, now)
        .await
        .unwrap();
    app.store
        .set_tier(&TestApp::user("good"), Tier::Premium, now)
        .await
        .unwrap();
    let records = app.stream_records().await;
    let broken_first = records
        .iter()
        .filter(|r| is_limits_of(r, "broken"))
        .map(seq)
        .next()
        .unwrap();
    let last = records.last().map(seq).unwrap();
    app.recorder.fail_next("UpdateItem", "USER#broken", 100);
    let mut cfg = app.worker_config();
    cfg.max_retries = 2;
    let file = app.path("on-failure.jsonl");
    cfg.on_failure = Some(tiersync::worker::OnFailureTarget::File(file.clone()));
    let s = app.run_worker_with(cfg).await;
    assert_eq!((s.retries, s.on_failure), (2, 1));
    assert_eq!(app.profile("good").await, Some(("premium".into(), 2)));
    assert_eq!(app.profile("broken").await, Some(("free".into(), 1)));

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    let info = &lines[0]["DDBStreamBatchInfo"];
    assert_eq!(info["startSequenceNumber"], broken_first.as_str());
    assert_eq!(info["endSequenceNumber"], last.as_str());
    assert_eq!(info["streamArn"], app.stream_arn().await.as_str());
    assert!(info["shardId"].as_str().unwrap().starts_with("shardId-"));
    assert_eq!(
        lines[0]["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(lines[0]["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(lines[0]["version"], "1.0");

    // The worker moved on: the checkpoint is past the batch, and once the fault clears a new
    // change of the same user applies.
    app.recorder.clear_faults();
    app.store
        .set_tier(&TestApp::user("broken"), Tier::Free, now)
        .await
        .unwrap();
    app.store
        .set_tier(&TestApp::user("broken"), Tier::Premium, now)
        .await
        .unwrap();
    let s = app.run_worker().await;
    assert_eq!(s.on_failure, 0);
    assert_eq!(app.profile("broken").await, Some(("premium".into(), 4)));
}

#[tokio::test]
async fn shutdown_finishes_and_returns() {
    let app = TestApp::spawn().await;
    app.store
        .create_user(&TestApp::user("x"), Tier::Free, chrono::Utc::now())
        .await
        .unwrap();
    let mut cfg = app.worker_config();
    cfg.once = false;
    let worker = tiersync::worker::Worker::new(
        app.streams.clone(),
        app.handler(),
        app.stream_arn().await,
        cfg,
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(async move { worker.run(rx).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.store
        .set_tier(&TestApp::user("x"), Tier::Premium, chrono::Utc::now())
        .await
        .unwrap();
    // The polling worker picks the change up without a restart.
    let mut synced = false;
    for _ in 0..100 {
        if app.profile("x").await == Some(("premium".into(), 2)) {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(synced, "a running worker syncs new changes");
    tx.send(true).unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
    assert_eq!(summary.handler.applied, 1);
}

fn spawn_worker(app: &TestApp, state: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tiersync"))
        .args([
            "--table",
            &app.table,
            "worker",
            "--poll-interval-ms",
            "20",
            "--batch-size",
            "7",
        ])
        .arg("--state-file")
        .arg(state)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_random_points_converges_and_never_regresses_a_profile() {
    let app = TestApp::spawn().await;
    let users: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    let now = chrono::Utc::now();
    for u in &users {
        app.store
            .create_user(&TestApp::user(u), Tier::Free, now)
            .await
            .unwrap();
    }
    let state = app.path("kill-state.json");
    let mut child = spawn_worker(&app, &state);
    // Live writers flip tiers while the worker is SIGKILLed and restarted several times.
    let mut highest: HashMap<String, u64> = HashMap::new();
    let mut kills = 0;
    for round in 0..40u64 {
        let u = &users[(round * 5 % 8) as usize];
        let next = if app.limits(u).await.unwrap().0 == "free" {
            Tier::Premium
        } else {
            Tier::Free
        };
        app.store
            .set_tier(&TestApp::user(u), next, now)
            .await
            .unwrap();
        if round % 9 == 4 {
            tokio::time::sleep(Duration::from_millis(15 + round * 3)).await;
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
            child = spawn_worker(&app, &state);
        }
        // The watcher: no profile version ever goes down.
        for w in &users {
            let v = app.profile(w).await.unwrap().1;
            let h = highest.entry(w.clone()).or_default();
            assert!(v >= *h, "{w}: PROFILE version went from {h} down to {v}");
            *h = v;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(kills >= 4);
    // Restart once more and drain: every user converges.
    let out = Command::new(env!("CARGO_BIN_EXE_tiersync"))
        .args(["--table", &app.table, "worker", "--once"])
        .arg("--state-file")
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for u in &users {
        assert_eq!(app.profile(u).await, app.limits(u).await, "{u} converged");
    }
}
