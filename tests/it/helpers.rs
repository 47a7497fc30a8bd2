//! Test harness: every test gets its own table on the shared moto server (started by
//! `scripts/test.sh`), a DynamoDB client whose requests are recorded (and can be failed on
//! purpose), and helpers to read items back.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::AttributeValue;
use tiersync::handler::SyncHandler;
use tiersync::schema::{UserId, PK, SK, SK_LIMITS, SK_PROFILE};
use tiersync::store::DynamoStore;
use tiersync::worker::{Worker, WorkerConfig, WorkerSummary};

/// One DynamoDB request as it went over the wire.
#[derive(Debug, Clone)]
pub struct Call {
    /// e.g. `UpdateItem`
    pub op: String,
    pub body: serde_json::Value,
}

impl Call {
    /// The `SK` of the request's `Key`, if it has one.
    pub fn sk(&self) -> Option<&str> {
        self.body["Key"]["SK"]["S"].as_str()
    }
}

#[derive(Debug, Default)]
struct RecorderState {
    calls: Vec<Call>,
    /// Fail the next `n` requests of `op` whose body contains `needle`.
    faults: Vec<(String, String, u32)>,
}

/// Records every request of the client and injects failures below the store: a failing
/// request never reaches moto, exactly like a network fault after the SDK gave up.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<RecorderState>>);

impl Recorder {
    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().calls.clone()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().calls.clear();
    }

    pub fn count(&self, op: &str) -> usize {
        self.calls().iter().filter(|c| c.op == op).count()
    }

    /// UpdateItem calls on PROFILE items.
    pub fn profile_writes(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.op == "UpdateItem" && c.sk() == Some(SK_PROFILE))
            .count()
    }

    /// Read requests of any kind.
    pub fn reads(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| matches!(c.op.as_str(), "GetItem" | "BatchGetItem" | "Query" | "Scan"))
            .count()
    }

    pub fn clear_faults(&self) {
        self.0.lock().unwrap().faults.clear();
    }

    pub fn fail_next(&self, op: &str, needle: &str, times: u32) {
        self.0
            .lock()
            .unwrap()
            .faults
            .push((op.into(), needle.into(), times));
    }
}

#[derive(Debug)]
struct Injected;
impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected transient failure")
    }
}
impl std::error::Error for Injected {}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "Recorder"
    }

    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let req = ctx.request();
        let op = req
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("?")
            .to_owned();
        let raw = req.body().bytes().unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(raw).unwrap_or_default();
        let text = String::from_utf8_lossy(raw).into_owned();
        let mut st = self.0.lock().unwrap();
        st.calls.push(Call {
            op: op.clone(),
            body,
        });
        for (fop, needle, left) in st.faults.iter_mut() {
            if *left > 0 && *fop == op && text.contains(needle.as_str()) {
                *left -= 1;
                return Err(Box::new(Injected));
            }
        }
        Ok(())
    }
}

/// Makes chosen DynamoDB or DynamoDB Streams calls fail with a modeled AWS error: the request
/// goes out, and its response is replaced by the exact bytes AWS sends (`__type` + message),
/// below the SDK, so the SDK's own retry logic sees it. For what moto cannot do: throttling,
/// 500s, trimmed records, deleted shards, expired iterators. Matches by operation and a string
/// in the request body; counts every attempt it sees.
#[derive(Debug, Clone, Default)]
pub struct StreamFaults(
    Arc<Mutex<Vec<StreamFault>>>,
    Arc<Mutex<HashMap<String, u32>>>,
);

/// `(operation, needle in the request body, AWS error type, times left)`.
type StreamFault = (String, String, String, u32);

#[derive(Debug, Clone)]
struct InjectError(String);
impl aws_smithy_types::config_bag::Storable for InjectError {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

impl StreamFaults {
    /// The next `times` calls of `op` whose body contains `needle` fail with `error_type`.
    pub fn fail(&self, op: &str, needle: &str, error_type: &str, times: u32) {
        self.0
            .lock()
            .unwrap()
            .push((op.into(), needle.into(), error_type.into(), times));
    }

    /// Attempts seen of requests of `op` whose body contains `needle` (retries included).
    pub fn attempts(&self, op: &str, needle: &str) -> u32 {
        self.1
            .lock()
            .unwrap()
            .get(&format!("{op}|{needle}"))
            .copied()
            .unwrap_or(0)
    }

    /// Also counts attempts matching `op` and `needle` from now on.
    pub fn watch(&self, op: &str, needle: &str) {
        self.1.lock().unwrap().insert(format!("{op}|{needle}"), 0);
    }
}

impl Intercept for StreamFaults {
    fn name(&self) -> &'static str {
        "StreamFaults"
    }

    /// Decides per attempt (this hook runs once per attempt, before the request is sent) and
    /// keeps a failed request from taking effect: a throttled write is not applied, so moto gets
    /// a harmless read instead, whose answer is replaced below.
    fn modify_before_transmit(
        &self,
        ctx: &mut aws_sdk_dynamodbstreams::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let req = ctx.request_mut();
        let target = req
            .headers()
            .get("x-amz-target")
            .unwrap_or_default()
            .to_owned();
        let op = target.rsplit('.').next().unwrap_or("?").to_owned();
        let body = String::from_utf8_lossy(req.body().bytes().unwrap_or_default()).into_owned();
        for (key, n) in self.1.lock().unwrap().iter_mut() {
            let (wop, needle) = key.split_once('|').unwrap();
            if wop == op && body.contains(needle) {
                *n += 1;
            }
        }
        // The interceptor state outlives an attempt: forget the previous attempt's decision.
        cfg.interceptor_state().unset::<InjectError>();
        let mut inject = None;
        for (fop, needle, error, left) in self.0.lock().unwrap().iter_mut() {
            if *left > 0 && *fop == op && body.contains(needle.as_str()) {
                *left -= 1;
                inject = Some(error.clone());
                break;
            }
        }
        if let Some(error) = inject {
            cfg.interceptor_state().store_put(InjectError(error));
            let harmless = if target.starts_with("DynamoDBStreams") {
                "DynamoDBStreams_20120810.ListStreams"
            } else {
                "DynamoDB_20120810.ListTables"
            };
            req.headers_mut().insert("x-amz-target", harmless);
            req.headers_mut().insert("content-length", "2");
            *req.body_mut() = aws_smithy_types::body::SdkBody::from("{}");
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut aws_sdk_dynamodbstreams::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(InjectError(error)) = cfg.load::<InjectError>().cloned() {
            let body = format!(
                r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{error}","message":"injected {error}"}}"#
            );
            let mut resp = aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(match error.as_str() {
                    "InternalServerError" => 500,
                    "ServiceUnavailable" => 503,
                    _ => 400,
                })
                .unwrap(),
                aws_smithy_types::body::SdkBody::from(body),
            );
            resp.headers_mut()
                .insert("content-type", "application/x-amz-json-1.0");
            resp.headers_mut().insert("x-amzn-errortype", error);
            *ctx.response_mut() = resp;
        }
        Ok(())
    }
}

pub struct TestApp {
    pub table: String,
    pub sdk: aws_config::SdkConfig,
    pub store: DynamoStore,
    pub recorder: Recorder,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub stream_faults: StreamFaults,
    /// Faults below the SDK for the DynamoDB client of `store`.
    pub faults: StreamFaults,
    pub dir: tempfile::TempDir,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestApp {
    /// A fresh table with a stream on the moto server named by `AWS_ENDPOINT_URL`.
    pub async fn spawn() -> TestApp {
        assert!(
            std::env::var("AWS_ENDPOINT_URL").is_ok(),
            "integration tests need a moto server: run them with scripts/test.sh"
        );
        let table = format!(
            "t{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            chrono::Utc::now().timestamp_micros()
        );
        let sdk = tiersync::aws::load().await;
        let recorder = Recorder::default();
        let faults = StreamFaults::default();
        let conf = aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(recorder.clone())
            .interceptor(faults.clone())
            .build();
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(conf), table.clone());
        store.create_table().await.expect("create table");
        recorder.clear();
        let stream_faults = StreamFaults::default();
        let streams_conf = aws_sdk_dynamodbstreams::config::Builder::from(&sdk)
            .interceptor(stream_faults.clone())
            .build();
        TestApp {
            table,
            streams: aws_sdk_dynamodbstreams::Client::from_conf(streams_conf),
            stream_faults,
            faults,
            sdk,
            store,
            recorder,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    /// Creates each user as free and then upgrades them to premium (version 2).
    pub async fn free_users_upgraded(&self, users: &[&str]) {
        let now = chrono::Utc::now();
        for u in users {
            let id = Self::user(u);
            self.store
                .create_user(&id, tiersync::schema::Tier::Free, now)
                .await
                .unwrap();
            self.store
                .set_tier(&id, tiersync::schema::Tier::Premium, now)
                .await
                .unwrap();
        }
    }

    pub fn handler(&self) -> SyncHandler<DynamoStore> {
        SyncHandler::new(self.store.clone(), 32)
    }

    pub fn worker_config(&self) -> WorkerConfig {
        let mut cfg = WorkerConfig::new(self.dir.path().join("checkpoint.json"));
        cfg.once = true;
        cfg.retry_min_delay = std::time::Duration::from_millis(5);
        cfg.retry_max_delay = std::time::Duration::from_millis(20);
        cfg.poll_interval = std::time::Duration::from_millis(20);
        cfg
    }

    pub async fn stream_arn(&self) -> String {
        self.store
            .stream_arn()
            .await
            .unwrap()
            .expect("table has a stream")
    }

    /// Runs the worker with `--once` semantics and the given config.
    pub async fn run_worker_with(&self, cfg: WorkerConfig) -> WorkerSummary {
        let worker = Worker::new(
            self.streams.clone(),
            self.handler(),
            self.stream_arn().await,
            cfg,
        );
        let (_tx, rx) = tokio::sync::watch::channel(false);
        worker.run(rx).await.expect("worker run")
    }

    pub async fn run_worker(&self) -> WorkerSummary {
        self.run_worker_with(self.worker_config()).await
    }

    /// Reads an item back (strongly consistent), with a client that is not recorded.
    pub async fn item(&self, user: &str, sk: &str) -> Option<HashMap<String, AttributeValue>> {
        aws_sdk_dynamodb::Client::new(&self.sdk)
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(format!("USER#{user}")))
            .key(SK, AttributeValue::S(sk.into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
    }

    /// `(tier, tier_version)` of an item.
    pub async fn tier_of(&self, user: &str, sk: &str) -> Option<(String, u64)> {
        let item = self.item(user, sk).await?;
        let tier = item
            .get("tier")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        let version = item
            .get("tier_version")
            .and_then(|v| v.as_n().ok())
            .map(|n| n.parse().unwrap())
            .unwrap_or(0);
        Some((tier, version))
    }

    pub async fn profile(&self, user: &str) -> Option<(String, u64)> {
        self.tier_of(user, SK_PROFILE).await
    }

    pub async fn limits(&self, user: &str) -> Option<(String, u64)> {
        self.tier_of(user, SK_LIMITS).await
    }

    /// Writes raw attributes onto an item, as another service would (unrecorded client).
    pub async fn put_raw(&self, item: Vec<(&str, AttributeValue)>) {
        let mut req = aws_sdk_dynamodb::Client::new(&self.sdk)
            .put_item()
            .table_name(&self.table);
        for (k, v) in item {
            req = req.item(k, v);
        }
        req.send().await.unwrap();
    }

    /// Adds to `daily_used` as the usage path does (unrecorded client).
    pub async fn bump_usage(&self, user: &str) {
        aws_sdk_dynamodb::Client::new(&self.sdk)
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(format!("USER#{user}")))
            .key(SK, AttributeValue::S(SK_LIMITS.into()))
            .update_expression("ADD daily_used :one")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .send()
            .await
            .unwrap();
    }

    /// Every stream record so far, in the Lambda event's record shape.
    pub async fn stream_records(&self) -> Vec<serde_json::Value> {
        let arn = self.stream_arn().await;
        let desc = self
            .streams
            .describe_stream()
            .stream_arn(&arn)
            .send()
            .await
            .unwrap();
        let mut out = Vec::new();
        for shard in desc.stream_description.unwrap().shards.unwrap_or_default() {
            let mut it = self
                .streams
                .get_shard_iterator()
                .stream_arn(&arn)
                .shard_id(shard.shard_id.unwrap())
                .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap()
                .shard_iterator;
            while let Some(i) = it {
                let page = self
                    .streams
                    .get_records()
                    .shard_iterator(i)
                    .send()
                    .await
                    .unwrap();
                let recs = page.records.unwrap_or_default();
                if recs.is_empty() {
                    break;
                }
                out.extend(
                    recs.iter()
                        .map(|r| tiersync::stream::lambda_record(r, &arn)),
                );
                it = page.next_shard_iterator;
            }
        }
        out
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A Lambda event from records.
pub fn event_of(records: &[serde_json::Value]) -> tiersync::handler::StreamEvent {
    serde_json::json!({ "Records": records })
        .to_string()
        .parse()
        .unwrap()
}

/// The sequence number of a Lambda record.
pub fn seq(record: &serde_json::Value) -> String {
    record["dynamodb"]["SequenceNumber"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Whether a Lambda record is a change of `user`'s USAGE#LIMITS.
pub fn is_limits_of(record: &serde_json::Value, user: &str) -> bool {
    record["dynamodb"]["Keys"]["PK"]["S"] == format!("USER#{user}")
        && record["dynamodb"]["Keys"]["SK"]["S"] == SK_LIMITS
}
