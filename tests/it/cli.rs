//! The `tiersync` binary: exact outputs and clear errors.

use std::process::{Command, Output};

use serde_json::{json, Value};
use tiersync::schema::Tier;

use crate::helpers::TestApp;

fn tiersync(table: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tiersync"))
        .arg("--table")
        .arg(table)
        .args(args)
        .output()
        .unwrap()
}

fn stdout_lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[tokio::test]
async fn the_write_commands_print_json() {
    let app = TestApp::spawn().await;
    let t = &app.table;
    let created = tiersync(t, &["user", "create", "cli1", "--tier", "premium"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert_eq!(
        stdout_lines(&created),
        [json!({"user_id": "cli1", "tier": "premium", "tier_version": 1})]
    );
    let set = tiersync(t, &["set-tier", "cli1", "free"]);
    assert_eq!(
        stdout_lines(&set),
        [json!({"outcome": "changed", "user_id": "cli1", "tier": "free", "tier_version": 2})]
    );
    let same = tiersync(t, &["set-tier", "cli1", "free"]);
    assert_eq!(stdout_lines(&same)[0]["outcome"], "unchanged");
    let usage = tiersync(t, &["usage", "cli1"]);
    let u = &stdout_lines(&usage)[0];
    assert_eq!(
        (
            u["tier"].as_str(),
            u["tier_version"].as_u64(),
            u["daily_used"].as_u64()
        ),
        (Some("free"), Some(2), Some(0))
    );
    let show = tiersync(t, &["user", "show", "cli1"]);
    assert_eq!(
        stdout_lines(&show)[0]["in_sync"],
        false,
        "PROFILE waits for the stream"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_a_non_zero_exit() {
    let app = TestApp::spawn().await;
    let cases: [(&[&str], &str); 5] = [
        (&["user", "create", "a#b"], "must not contain '#'"),
        (&["set-tier", "someone", "gold"], "unknown tier \"gold\""),
        (&["set-tier", "ghost", "premium"], "user ghost not found"),
        (&["usage", ""], "must not be empty"),
        (&["worker", "--batch-size", "10001"], "10001"),
    ];
    for (args, expected) in cases {
        let o = tiersync(&app.table, args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let no_table = Command::new(env!("CARGO_BIN_EXE_tiersync"))
        .args(["usage", "x"])
        .env_remove("TABLE_NAME")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&no_table.stderr).contains("--table NAME or set TABLE_NAME"));
}

#[tokio::test]
async fn sync_dry_run_prints_the_plan_and_touches_no_database() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now();
    for u in ["d1", "d2"] {
        app.store
            .create_user(&TestApp::user(u), Tier::Free, now)
            .await
            .unwrap();
    }
    app.store
        .set_tier(&TestApp::user("d2"), Tier::Premium, now)
        .await
        .unwrap();
    let file = app.path("event.json");
    std::fs::write(
        &file,
        json!({"Records": app.stream_records().await}).to_string(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tiersync"))
        .args(["sync", "--dry-run", "--event"])
        .arg(&file)
        // Any database call would fail against this endpoint.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env_remove("TABLE_NAME")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout_lines(&out),
        [
            json!({"user_id": "d1", "tier": "free", "tier_version": 1}),
            json!({"user_id": "d2", "tier": "premium", "tier_version": 2}),
            json!({"batchItemFailures": []}),
        ]
    );
    assert_eq!(
        app.profile("d2").await,
        Some(("free".into(), 1)),
        "dry run wrote nothing"
    );

    let real = tiersync(&app.table, &["sync", "--event", file.to_str().unwrap()]);
    assert!(
        real.status.success(),
        "{}",
        String::from_utf8_lossy(&real.stderr)
    );
    assert_eq!(
        stdout_lines(&real).last().unwrap(),
        &json!({"batchItemFailures": []})
    );
    assert_eq!(app.profile("d2").await, Some(("premium".into(), 2)));
}

#[tokio::test]
async fn table_create_prints_whether_it_created() {
    let app = TestApp::spawn().await;
    let fresh = format!("{}-cli", app.table);
    assert_eq!(
        stdout_lines(&tiersync(&fresh, &["table", "create"])),
        [json!({"table": fresh, "created": true})]
    );
    assert_eq!(
        stdout_lines(&tiersync(&fresh, &["table", "create"])),
        [json!({"table": fresh, "created": false})]
    );
}
