//! The `sync-lambda` binary driven through a minimal Lambda Runtime API: the harness serves
//! `next` with a real event, captures what the function posts back, and reads its stdout.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use tiersync::schema::Tier;

use crate::helpers::{is_limits_of, TestApp};

/// What the function sent to the Runtime API.
#[derive(Debug)]
enum Posted {
    Response(Value),
    Error(String),
}

/// Serves one invocation of `event`; every later `next` waits forever (as with no traffic).
async fn serve(listener: TcpListener, event: String, posted: mpsc::UnboundedSender<Posted>) {
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        let (sock, _) = listener.accept().await.unwrap();
        let (event, posted, delivered) = (event.clone(), posted.clone(), delivered.clone());
        tokio::spawn(async move {
            let mut r = BufReader::new(sock);
            while let Some((method, path, body)) = crate::common::read_request(&mut r).await {
                let reply = if method == "GET" && path.ends_with("/runtime/invocation/next") {
                    if delivered.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nlambda-runtime-aws-request-id: req-1\r\n\
                         lambda-runtime-deadline-ms: {deadline}\r\n\
                         lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:sync\r\n\
                         lambda-runtime-trace-id: Root=1-5759e988-bd862e3fe1be46a994272793\r\n\
                         content-length: {}\r\n\r\n{event}",
                        event.len()
                    )
                } else {
                    let text = String::from_utf8_lossy(&body).into_owned();
                    let msg = if path.ends_with("/response") {
                        Posted::Response(serde_json::from_str(&text).unwrap_or(Value::String(text)))
                    } else {
                        Posted::Error(format!("{path}: {text}"))
                    };
                    let _ = posted.send(msg);
                    "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n".to_owned()
                };
                if r.get_mut().write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Runs `binary` against the harness for one invocation of `event`; returns what it posted
/// and its stdout.
async fn invoke_once(binary: &str, table: &str, event: String) -> (Posted, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(serve(listener, event, tx));
    let mut child = tokio::process::Command::new(binary)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "fn")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "stream")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "group")
        .env("TABLE_NAME", table)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let posted = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the function answers")
        .unwrap();
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    (posted, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_lambda_binary_answers_the_runtime_api_with_the_batch_response_and_emf() {
    let app = TestApp::spawn().await;
    app.free_users_upgraded(&["lam"]).await;
    let mut records = app.stream_records().await;
    let mut poison = records
        .iter()
        .find(|r| is_limits_of(r, "lam"))
        .unwrap()
        .clone();
    poison["dynamodb"]["NewImage"]["tier"] = json!({"S": "platinum"});
    records.insert(0, poison);
    let event = json!({ "Records": records }).to_string();

    let (posted, stdout) = invoke_once(env!("CARGO_BIN_EXE_sync-lambda"), &app.table, event).await;
    match posted {
        Posted::Response(v) => assert_eq!(v, json!({"batchItemFailures": []}), "stdout: {stdout}"),
        Posted::Error(e) => panic!("function reported an error: {e}\nstdout: {stdout}"),
    }
    assert_eq!(app.profile("lam").await, Some(("premium".into(), 2)));

    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let emf = lines
        .iter()
        .find(|l| l.get("_aws").is_some())
        .expect("an EMF line");
    assert_eq!(emf["_aws"]["CloudWatchMetrics"][0]["Namespace"], "tiersync");
    assert_eq!(
        (
            emf["applied"].as_f64(),
            emf["poison"].as_f64(),
            emf["failed"].as_f64()
        ),
        (Some(1.0), Some(1.0), Some(0.0))
    );
    let poison_log = lines
        .iter()
        .find(|l| l["message"] == "poison record skipped")
        .unwrap_or_else(|| panic!("a JSON log line for the poison record in {stdout}"));
    assert_eq!(poison_log["level"], "ERROR");
    assert_eq!(poison_log["pk"], "USER#lam");
    assert_eq!(poison_log["table"], app.table.as_str());
    assert!(poison_log["reason"].as_str().unwrap().contains("platinum"));
    assert!(poison_log["seq"]
        .as_str()
        .unwrap()
        .chars()
        .all(|c| c.is_ascii_digit()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_is_not_a_stream_event_is_a_function_error_that_names_the_problem() {
    // The function decodes the payload itself (not lambda_runtime): a payload without
    // `Records` must still fail the invocation, so the event source mapping retries it and the
    // Errors alarm sees it, instead of counting as an empty batch.
    let app = TestApp::spawn().await;
    let (posted, stdout) = invoke_once(
        env!("CARGO_BIN_EXE_sync-lambda"),
        &app.table,
        json!({"detail": {"Records": []}}).to_string(),
    )
    .await;
    match posted {
        Posted::Error(e) => {
            assert!(e.contains("/runtime/invocation/req-1/error"), "{e}");
            let body: Value = serde_json::from_str(e.split_once(": ").unwrap().1).unwrap();
            assert_eq!(
                body,
                json!({"errorType": "InvalidStreamEvent",
                       "errorMessage": "the event has no `Records` array at byte 0"}),
                "{e}"
            );
        }
        Posted::Response(v) => panic!("expected an error, got {v}\nstdout: {stdout}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reset_lambda_takes_now_from_the_scheduler_event_and_returns_its_summary() {
    let app = TestApp::spawn().await;
    let created = chrono::DateTime::parse_from_rfc3339("2026-12-02T08:00:00Z")
        .unwrap()
        .to_utc();
    for u in ["e1", "e2", "e3"] {
        app.store
            .create_user(&TestApp::user(u), Tier::Free, created)
            .await
            .unwrap();
    }
    // Due at 2026-12-03T00:00:00Z: the scheduler's time decides, not the clock.
    let event = json!({"time": "2026-12-03T00:00:30Z", "source": "aws.scheduler"}).to_string();
    let (posted, stdout) = invoke_once(env!("CARGO_BIN_EXE_reset-lambda"), &app.table, event).await;
    let Posted::Response(summary) = posted else {
        panic!("{posted:?}\n{stdout}")
    };
    assert_eq!(
        (
            summary["due"].as_u64(),
            summary["reset"].as_u64(),
            summary["malformed"].as_u64()
        ),
        (Some(3), Some(3), Some(0))
    );
    assert_eq!(summary["stopped_early"], false);
    let item = app.item("e1", tiersync::schema::SK_LIMITS).await.unwrap();
    assert_eq!(
        item["reset_daily_at"].as_s().unwrap(),
        "2026-12-04T00:00:00Z"
    );
    let emf = json_lines(&stdout)
        .into_iter()
        .find(|l| l.get("_aws").is_some())
        .expect("an EMF line");
    assert_eq!(emf["Service"], "reset");
    assert_eq!(
        (emf["due"].as_f64(), emf["reset"].as_f64()),
        (Some(3.0), Some(3.0))
    );
    let units: Vec<_> = emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Unit"].clone())
        .collect();
    assert!(units.contains(&json!("Milliseconds")));
}
