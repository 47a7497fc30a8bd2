//! Shared bench fixtures: realistic stream events and a local DynamoDB stub with injected latency.
#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// SplitMix64, so events are the same on every machine.
pub struct Rng(pub u64);
impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

fn limits(user: u64, tier: &str, version: u64, used: u64) -> String {
    format!(
        r#"{{"PK":{{"S":"USER#user-{user:06}"}},"SK":{{"S":"USAGE#LIMITS"}},"tier":{{"S":"{tier}"}},"tier_version":{{"N":"{version}"}},"daily_used":{{"N":"{used}"}},"reset_daily_at":{{"S":"2026-12-04T00:00:00Z"}},"reset_shard":{{"N":"{}"}},"updated_at":{{"S":"2026-12-03T10:15:00Z"}}}}"#,
        user % 16
    )
}

fn profile(user: u64, tier: &str, version: u64, login: u64) -> String {
    format!(
        r#"{{"PK":{{"S":"USER#user-{user:06}"}},"SK":{{"S":"PROFILE"}},"email":{{"S":"user-{user:06}@example.com"}},"display_name":{{"S":"User {user}"}},"tier":{{"S":"{tier}"}},"tier_version":{{"N":"{version}"}},"tier_synced_at":{{"S":"2026-12-03T10:00:00Z"}},"last_login":{{"N":"{login}"}}}}"#
    )
}

fn record(seq: u64, name: &str, user: u64, sk: &str, old: &str, new: &str) -> String {
    format!(
        r#"{{"eventID":"{seq:032x}","eventName":"{name}","eventVersion":"1.1","eventSource":"aws:dynamodb","awsRegion":"us-east-1","dynamodb":{{"ApproximateCreationDateTime":1764756900.0,"Keys":{{"PK":{{"S":"USER#user-{user:06}"}},"SK":{{"S":"{sk}"}}}},"NewImage":{new},"OldImage":{old},"SequenceNumber":"{}","SizeBytes":312,"StreamViewType":"NEW_AND_OLD_IMAGES"}},"eventSourceARN":"arn:aws:dynamodb:us-east-1:123456789012:table/tiersync/stream/2026-12-01T00:00:00.000"}}"#,
        100_000_000_000_000_000_000u128 + seq as u128
    )
}

/// A Lambda DynamoDB event of `n` records with the realistic mix: about 60% usage increments,
/// 30% tier changes (version rises) and 10% PROFILE writes, over `users` users.
pub fn event(n: usize, users: u64, seed: u64) -> String {
    let mut rng = Rng(seed);
    let mut state: Vec<(u64, u64)> = vec![(1, 0); users as usize]; // (version, used)
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let u = rng.below(users);
        let (v, used) = state[u as usize];
        let tier = |v: u64| {
            if v.is_multiple_of(2) {
                "premium"
            } else {
                "free"
            }
        };
        let roll = rng.below(10);
        let r = if roll < 6 {
            state[u as usize].1 += 1;
            record(
                i,
                "MODIFY",
                u,
                "USAGE#LIMITS",
                &limits(u, tier(v), v, used),
                &limits(u, tier(v), v, used + 1),
            )
        } else if roll < 9 {
            state[u as usize].0 += 1;
            record(
                i,
                "MODIFY",
                u,
                "USAGE#LIMITS",
                &limits(u, tier(v), v, used),
                &limits(u, tier(v + 1), v + 1, used),
            )
        } else {
            record(
                i,
                "MODIFY",
                u,
                "PROFILE",
                &profile(u, tier(v), v, i),
                &profile(u, tier(v), v, i + 1),
            )
        };
        out.push(r);
    }
    format!(r#"{{"Records":[{}]}}"#, out.join(","))
}

/// An event where each of `users` distinct users has one tier change (one write each).
pub fn distinct_changes(users: u64) -> String {
    let recs: Vec<String> = (0..users)
        .map(|u| {
            record(
                u,
                "MODIFY",
                u,
                "USAGE#LIMITS",
                &limits(u, "free", 1, 3),
                &limits(u, "premium", 2, 3),
            )
        })
        .collect();
    format!(r#"{{"Records":[{}]}}"#, recs.join(","))
}

/// Reads one HTTP/1.1 request (request line, headers, `content-length` body): `(method, path,
/// body)`, or `None` at the end of the connection.
pub async fn read_request(r: &mut BufReader<TcpStream>) -> Option<(String, String, Vec<u8>)> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).await.ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.ok()?;
    Some((method, path, body))
}

/// A DynamoDB stand-in on 127.0.0.1 that answers every call with `{}` (a successful UpdateItem)
/// after `latency`. Returns its endpoint URL.
pub async fn dynamodb_stub(latency: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut r = BufReader::new(sock);
                while read_request(&mut r).await.is_some() {
                    tokio::time::sleep(latency).await;
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: 2\r\n\r\n{}";
                    if r.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// Writes `text` under target/bench-events/ and returns the path.
pub fn write_event(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-events");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
