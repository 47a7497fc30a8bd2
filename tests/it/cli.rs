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

#[tokio::test]
async fn use_counts_until_the_limit_then_fails_naming_it() {
    let app = TestApp::spawn().await;
    let t = &app.table;
    assert!(tiersync(t, &["user", "create", "meter"]).status.success());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tiersync"))
            .arg("--table")
            .arg(t)
            .args(args)
            .env("FREE_DAILY_LIMIT", "2")
            .output()
            .unwrap()
    };
    let first = run(&["use", "meter"]);
    let v = &stdout_lines(&first)[0];
    assert_eq!(
        (
            v["user_id"].as_str(),
            v["daily_used"].as_u64(),
            v["daily_limit"].as_u64()
        ),
        (Some("meter"), Some(1), Some(2))
    );
    assert!(run(&["use", "meter"]).status.success());
    let refused = run(&["use", "meter"]);
    assert!(!refused.status.success());
    let reset_at = chrono::Utc::now()
        .date_naive()
        .succ_opt()
        .unwrap()
        .format("%Y-%m-%dT00:00:00Z")
        .to_string();
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim_end(),
        format!("error: user meter reached the daily limit of 2 requests; it resets at {reset_at}")
    );
    let usage = stdout_lines(&run(&["usage", "meter"]))[0].clone();
    assert_eq!(
        (
            usage["tier"].as_str(),
            usage["daily_used"].as_u64(),
            usage["daily_limit"].as_u64(),
            usage["reset_daily_at"].as_str()
        ),
        (Some("free"), Some(2), Some(2), Some(reset_at.as_str()))
    );
    let bad_limit = Command::new(env!("CARGO_BIN_EXE_tiersync"))
        .args(["--table", t, "use", "meter"])
        .env("FREE_DAILY_LIMIT", "lots")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad_limit.stderr)
        .contains("FREE_DAILY_LIMIT must be a whole number"));
}

#[tokio::test]
async fn reset_at_a_time_prints_the_json_summary() {
    let app = TestApp::spawn().await;
    let t = &app.table;
    for u in ["z1", "z2"] {
        assert!(tiersync(t, &["user", "create", u]).status.success());
    }
    assert!(tiersync(t, &["use", "z1"]).status.success());
    let tomorrow = chrono::Utc::now()
        .date_naive()
        .succ_opt()
        .unwrap()
        .format("%Y-%m-%dT00:00:01Z")
        .to_string();
    let out = tiersync(t, &["reset", "--at", &tomorrow]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = &stdout_lines(&out)[0];
    assert_eq!(
        (
            s["due"].as_u64(),
            s["reset"].as_u64(),
            s["items_read"].as_u64()
        ),
        (Some(2), Some(2), Some(2))
    );
    let again = tiersync(t, &["reset", "--at", &tomorrow]);
    assert_eq!(stdout_lines(&again)[0]["reset"], 0);
    let bad = tiersync(t, &["reset", "--at", "tomorrow"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an RFC 3339 time"));
}
