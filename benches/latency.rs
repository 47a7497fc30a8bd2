//! Batch latency, cold start and peak memory, measured against local stand-ins:
//! - a batch of 1,000 distinct users' tier changes, written through the real SDK client to a
//!   DynamoDB stub that adds 10 ms to every call, at concurrency 1, 8, 32, 64 and 128;
//! - `sync-lambda`'s cold start: process start to its first Runtime API `next` request;
//! - `sync-lambda`'s peak RSS (`/usr/bin/time -v`) over handling a 10,000-record event.
//!
//! Run: `scripts/bench.sh` (or `cargo bench --bench latency -- [--lambda PATH]`).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use tiersync::handler::{StreamEvent, SyncHandler};
use tiersync::store::DynamoStore;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

async fn client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let conf = tiersync::aws::loader()
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "bench", "bench", None, None, "bench",
        ))
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&conf)
}

async fn batch_latency() -> Vec<(usize, f64)> {
    let endpoint = common::dynamodb_stub(Duration::from_millis(10)).await;
    let client = client(&endpoint).await;
    let event: StreamEvent = common::distinct_changes(1_000).parse().unwrap();
    let mut curve = Vec::new();
    for concurrency in [1usize, 8, 32, 64, 128] {
        let handler = SyncHandler::new(DynamoStore::new(client.clone(), "tiersync"), concurrency);
        let runs = if concurrency == 1 { 1 } else { 5 };
        handler.handle(&event, chrono::Utc::now()).await; // warm the connection pool
        let started = Instant::now();
        for _ in 0..runs {
            let out = handler.handle(&event, chrono::Utc::now()).await;
            assert_eq!(out.counts.applied, 1_000);
        }
        curve.push((
            concurrency,
            started.elapsed().as_secs_f64() * 1000.0 / runs as f64,
        ));
    }
    curve
}

/// Serves the Runtime API: reports when `next` is first asked for, delivers `event` once, and
/// reports the posted response.
async fn runtime_api(
    event: String,
    seen_next: mpsc::UnboundedSender<Instant>,
    posted: mpsc::UnboundedSender<String>,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let delivered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let (event, seen_next, posted, delivered) = (
                event.clone(),
                seen_next.clone(),
                posted.clone(),
                delivered.clone(),
            );
            tokio::spawn(async move {
                let mut r = BufReader::new(sock);
                while let Some((_, path, body)) = common::read_request(&mut r).await {
                    let reply = if path.ends_with("/next") {
                        let _ = seen_next.send(Instant::now());
                        if delivered.swap(true, std::sync::atomic::Ordering::SeqCst) {
                            // The second `next`: close the connection, so the runtime's loop
                            // ends with an error and the process exits, and `time` reports.
                            return;
                        }
                        let deadline = chrono::Utc::now().timestamp_millis() + 300_000;
                        format!("HTTP/1.1 200 OK\r\nlambda-runtime-aws-request-id: r1\r\nlambda-runtime-deadline-ms: {deadline}\r\nlambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:sync\r\nlambda-runtime-trace-id: Root=1-5759e988-bd862e3fe1be46a994272793\r\ncontent-length: {}\r\n\r\n{event}", event.len())
                    } else {
                        let _ = posted.send(String::from_utf8_lossy(&body).into_owned());
                        "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n".to_owned()
                    };
                    if r.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// GNU time, which reports a finished process's peak RSS (`ru_maxrss`, the kernel's own count).
const GNU_TIME: &str = "/usr/bin/time";

/// Cold start (ms to the first `next`) and peak RSS (KiB, from `/usr/bin/time -v`) of one
/// `sync-lambda` process that handles a 10,000-record event and then exits.
async fn lambda_process(binary: &str) -> (f64, u64, String) {
    let endpoint = common::dynamodb_stub(Duration::ZERO).await;
    let event = common::event(10_000, 2_500, 7);
    let (next_tx, mut next_rx) = mpsc::unbounded_channel();
    let (post_tx, mut post_rx) = mpsc::unbounded_channel();
    let api = runtime_api(event, next_tx, post_tx).await;
    let report = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(GNU_TIME)
        .arg("-v")
        .arg("-o")
        .arg(report.path())
        .arg(binary)
        .env("AWS_LAMBDA_RUNTIME_API", api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "sync")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "s")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "g")
        .env("TABLE_NAME", "tiersync")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {GNU_TIME} (Debian package `time`): {e}"));
    let first_next = next_rx.recv().await.unwrap();
    let cold_ms = (first_next - started).as_secs_f64() * 1000.0;
    let response = tokio::time::timeout(Duration::from_secs(120), post_rx.recv())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("sync-lambda exits once the Runtime API closes")
        .unwrap();
    let report = std::fs::read_to_string(report.path()).unwrap();
    let max_rss_kib = report
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in the report of {GNU_TIME} -v:\n{report}"));
    (cold_ms, max_rss_kib, response)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    if !bench {
        return; // `cargo test --all-targets` builds this; only `cargo bench` runs it.
    }
    let lambda = args
        .iter()
        .position(|a| a == "--lambda")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_sync-lambda").to_owned());

    println!("batch of 1,000 distinct users, 10 ms per DynamoDB call:");
    println!("| concurrency | ms per batch |");
    println!("|---|---|");
    let curve = batch_latency().await;
    for (c, ms) in &curve {
        println!("| {c} | {ms:.0} |");
    }
    let mut colds = Vec::new();
    let mut rss = 0;
    for _ in 0..5 {
        let (cold, max_rss, response) = lambda_process(&lambda).await;
        assert_eq!(response, r#"{"batchItemFailures":[]}"#);
        colds.push(cold);
        rss = rss.max(max_rss);
    }
    colds.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!();
    println!("sync-lambda ({lambda}):");
    println!(
        "cold start to first `next`: median {:.1} ms (min {:.1}, max {:.1}, 5 runs)",
        colds[2], colds[0], colds[4]
    );
    println!(
        "peak RSS handling a 10,000-record event (`/usr/bin/time -v`, max of 5 runs): {:.1} MiB",
        rss as f64 / 1024.0
    );
    let json = serde_json::json!({
        "batch_ms": curve.iter().map(|(c, ms)| (c.to_string(), *ms)).collect::<std::collections::BTreeMap<_, _>>(),
        "cold_start_ms_median": colds[2],
        "peak_rss_mib": rss as f64 / 1024.0,
    });
    println!("{json}");
}
