//! `tiersync worker`: Lambda's event source mapping on your own machine. Reads every shard of
//! the table's stream (parents before children), hands batches to the same [`SyncHandler`] as
//! the same event JSON, honours the partial batch response like Lambda (checkpoint before the
//! lowest failed sequence number, redeliver from there, bounded retries with backoff, then an
//! on-failure record in AWS's format), and persists a checkpoint per shard after every batch.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_dynamodbstreams::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodbstreams::types::{Record, Shard, ShardIteratorType};
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use tokio::sync::watch;

use crate::decide::SeqNo;
use crate::handler::{Counts, StreamEvent, SyncHandler};
use crate::store::ProfileStore;
use crate::stream::{
    lambda_event, ready_shards, redelivery_from, CheckpointState, OnFailureRecord,
};

/// Largest batch the event source mapping allows.
pub const MAX_BATCH_SIZE: usize = 10_000;
/// Largest page of `GetRecords`.
const GET_RECORDS_LIMIT: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("DynamoDB Streams {op} failed: {message}")]
    Stream { op: &'static str, message: String },
    #[error("checkpoint file {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "checkpoint file {path} is not valid ({source}); fix or delete it, or pass --from-start"
    )]
    StateCorrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "could not deliver the on-failure record for shard {shard} ({start}..{end}): {message}"
    )]
    OnFailure {
        shard: String,
        start: String,
        end: String,
        message: String,
    },
}

fn stream_err<E, R>(op: &'static str, e: SdkError<E, R>) -> WorkerError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    WorkerError::Stream {
        op,
        message: DisplayErrorContext(&e).to_string(),
    }
}

/// Where batches go when their retries run out.
#[derive(Debug, Clone)]
pub enum OnFailureTarget {
    /// An SQS queue, as the ESM's `DestinationConfig.OnFailure`.
    Queue {
        client: aws_sdk_sqs::Client,
        url: String,
    },
    /// A JSON-lines file, one on-failure record per line.
    File(PathBuf),
}

/// How the worker reads and retries.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Records per handler invocation (1–10,000), like the ESM's `BatchSize`.
    pub batch_size: usize,
    /// Redeliveries of a failing batch before it goes to the on-failure target, like
    /// `MaximumRetryAttempts`.
    pub max_retries: u32,
    /// First and largest delay of the exponential backoff between redeliveries.
    pub retry_min_delay: Duration,
    pub retry_max_delay: Duration,
    /// Drain every shard to its current end, then return.
    pub once: bool,
    /// Ignore saved checkpoints and read every shard from TRIM_HORIZON.
    pub from_start: bool,
    pub state_file: PathBuf,
    /// Pause between polls of a caught-up stream.
    pub poll_interval: Duration,
    pub on_failure: Option<OnFailureTarget>,
    /// Named as `functionArn` in on-failure records.
    pub function_arn: String,
}

impl WorkerConfig {
    pub fn new(state_file: PathBuf) -> Self {
        Self {
            batch_size: 100,
            max_retries: 3,
            retry_min_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(10),
            once: false,
            from_start: false,
            state_file,
            poll_interval: Duration::from_secs(1),
            on_failure: None,
            function_arn: "arn:aws:lambda:local:000000000000:function:tiersync-worker".into(),
        }
    }
}

/// What a worker run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerSummary {
    /// Shards listed in the stream.
    pub shards: u64,
    /// Stream records read.
    pub records_read: u64,
    /// Handler invocations, redeliveries included.
    pub invocations: u64,
    /// Redeliveries after a partial batch failure.
    pub retries: u64,
    /// Batches sent to the on-failure target.
    pub on_failure: u64,
    /// Times the checkpoint lay behind the trim horizon (records lost to the 24 h retention).
    pub trimmed: u64,
    /// The handler's counts, summed over invocations.
    pub handler: Counts,
}

/// The local stream worker.
pub struct Worker<S> {
    streams: aws_sdk_dynamodbstreams::Client,
    handler: SyncHandler<S>,
    stream_arn: String,
    cfg: WorkerConfig,
}

enum ShardEnd {
    /// Read to the current end of an open shard.
    CaughtUp,
    /// Closed and read to its end, or gone.
    Finished,
    Stopped,
}

impl<S: ProfileStore> Worker<S> {
    pub fn new(
        streams: aws_sdk_dynamodbstreams::Client,
        handler: SyncHandler<S>,
        stream_arn: String,
        mut cfg: WorkerConfig,
    ) -> Self {
        cfg.batch_size = cfg.batch_size.clamp(1, MAX_BATCH_SIZE);
        Self {
            streams,
            handler,
            stream_arn,
            cfg,
        }
    }

    /// Runs until `--once` drains the stream, or `shutdown` turns true (the batch in hand is
    /// finished and checkpointed first).
    pub async fn run(
        &self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<WorkerSummary, WorkerError> {
        let mut state = self.load_state()?;
        let mut summary = WorkerSummary::default();
        loop {
            let shards = self.list_shards().await?;
            summary.shards = shards.len() as u64;
            let mut progressed = false;
            let ready: Vec<String> = ready_shards(&shards, &state)
                .into_iter()
                .map(str::to_owned)
                .collect();
            for shard in ready {
                let before = summary.records_read;
                match self
                    .drain_shard(&shard, &mut state, &mut summary, &shutdown)
                    .await?
                {
                    ShardEnd::Stopped => return Ok(summary),
                    ShardEnd::Finished => progressed = true,
                    ShardEnd::CaughtUp => progressed |= summary.records_read > before,
                }
            }
            if *shutdown.borrow() {
                return Ok(summary);
            }
            if self.cfg.once && !progressed {
                return Ok(summary);
            }
            if !progressed {
                tokio::select! {
                    _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    fn load_state(&self) -> Result<CheckpointState, WorkerError> {
        let path = &self.cfg.state_file;
        if self.cfg.from_start {
            return Ok(CheckpointState::new(&self.stream_arn));
        }
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CheckpointState::new(&self.stream_arn))
            }
            Err(source) => {
                return Err(WorkerError::State {
                    path: path.clone(),
                    source,
                })
            }
        };
        let state: CheckpointState =
            serde_json::from_str(&text).map_err(|source| WorkerError::StateCorrupt {
                path: path.clone(),
                source,
            })?;
        if state.stream_arn != self.stream_arn {
            tracing::warn!(old = state.stream_arn, new = self.stream_arn,
                "checkpoint file belongs to another stream (table re-created?); starting from TRIM_HORIZON");
            return Ok(CheckpointState::new(&self.stream_arn));
        }
        Ok(state)
    }

    /// Writes the state atomically (temp file + rename), so a SIGKILL leaves the old or the new
    /// checkpoint, never a torn one.
    fn save_state(&self, state: &CheckpointState) -> Result<(), WorkerError> {
        let path = &self.cfg.state_file;
        let io = |source| WorkerError::State {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(
            serde_json::to_string_pretty(state)
                .expect("state serialises")
                .as_bytes(),
        )
        .map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, WorkerError> {
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let out = self
                .streams
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| stream_err("DescribeStream", e))?;
            let Some(desc) = out.stream_description else {
                break;
            };
            shards.extend(desc.shards.unwrap_or_default());
            match desc.last_evaluated_shard_id {
                Some(last) => start = Some(last),
                None => break,
            }
        }
        Ok(shards)
    }

    /// A shard iterator after the checkpoint (or at TRIM_HORIZON without one). `None` when the
    /// shard no longer exists.
    async fn iterator(
        &self,
        shard: &str,
        after: Option<&SeqNo>,
        summary: &mut WorkerSummary,
    ) -> Result<Option<String>, WorkerError> {
        let request = |kind: ShardIteratorType, seq: Option<&SeqNo>| {
            self.streams
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(shard)
                .shard_iterator_type(kind)
                .set_sequence_number(seq.map(|s| s.as_str().to_owned()))
                .send()
        };
        let first = match after {
            Some(seq) => request(ShardIteratorType::AfterSequenceNumber, Some(seq)).await,
            None => request(ShardIteratorType::TrimHorizon, None).await,
        };
        let out = match first {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                tracing::warn!(shard, "shard no longer exists; treating it as finished");
                return Ok(None);
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_trimmed_data_access_exception()) =>
            {
                summary.trimmed += 1;
                tracing::error!(shard, checkpoint = ?after.map(SeqNo::as_str),
                    "checkpoint is behind the trim horizon: records between it and TRIM_HORIZON are lost; run `tiersync reconcile --repair`");
                request(ShardIteratorType::TrimHorizon, None)
                    .await
                    .map_err(|e| stream_err("GetShardIterator", e))?
            }
            Err(e) => return Err(stream_err("GetShardIterator", e)),
        };
        Ok(out.shard_iterator)
    }

    async fn drain_shard(
        &self,
        shard: &str,
        state: &mut CheckpointState,
        summary: &mut WorkerSummary,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<ShardEnd, WorkerError> {
        let Some(mut iter) = self.iterator(shard, state.position(shard), summary).await? else {
            state.finish(shard);
            self.save_state(state)?;
            return Ok(ShardEnd::Finished);
        };
        loop {
            if *shutdown.borrow() {
                return Ok(ShardEnd::Stopped);
            }
            let mut batch: Vec<Record> = Vec::new();
            let mut closed = false;
            let mut caught_up = false;
            while batch.len() < self.cfg.batch_size {
                let limit = (self.cfg.batch_size - batch.len()).min(GET_RECORDS_LIMIT);
                match self
                    .streams
                    .get_records()
                    .shard_iterator(&iter)
                    .limit(limit as i32)
                    .send()
                    .await
                {
                    Ok(out) => {
                        let got = out.records.unwrap_or_default();
                        let empty = got.is_empty();
                        batch.extend(got);
                        match out.next_shard_iterator {
                            Some(next) => iter = next,
                            None => {
                                closed = true;
                                break;
                            }
                        }
                        if empty {
                            caught_up = true;
                            break;
                        }
                    }
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_expired_iterator_exception()) =>
                    {
                        // Iterators live 15 minutes: resume right after what is already in hand.
                        let after = batch
                            .last()
                            .and_then(|r| r.dynamodb()?.sequence_number())
                            .and_then(SeqNo::parse)
                            .or_else(|| state.position(shard).cloned());
                        match self.iterator(shard, after.as_ref(), summary).await? {
                            Some(fresh) => iter = fresh,
                            None => {
                                closed = true;
                                break;
                            }
                        }
                    }
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_trimmed_data_access_exception()) =>
                    {
                        summary.trimmed += 1;
                        tracing::error!(
                            shard,
                            "iterator points at trimmed records; restarting at TRIM_HORIZON"
                        );
                        match self.iterator(shard, None, summary).await? {
                            Some(fresh) => iter = fresh,
                            None => {
                                closed = true;
                                break;
                            }
                        }
                    }
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_resource_not_found_exception()) =>
                    {
                        closed = true;
                        break;
                    }
                    // Throttling and 5xx were already retried by the SDK.
                    Err(e) => return Err(stream_err("GetRecords", e)),
                }
            }
            if !batch.is_empty() {
                summary.records_read += batch.len() as u64;
                self.process_batch(shard, batch, state, summary).await?;
            }
            if closed {
                state.finish(shard);
                self.save_state(state)?;
                return Ok(ShardEnd::Finished);
            }
            if caught_up {
                return Ok(ShardEnd::CaughtUp);
            }
        }
    }

    /// Invokes the handler on a batch as the ESM does with `ReportBatchItemFailures`.
    async fn process_batch(
        &self,
        shard: &str,
        mut records: Vec<Record>,
        state: &mut CheckpointState,
        summary: &mut WorkerSummary,
    ) -> Result<(), WorkerError> {
        let seq_of = |r: &Record| {
            r.dynamodb()
                .and_then(|d| d.sequence_number())
                .and_then(SeqNo::parse)
        };
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.cfg.retry_min_delay)
            .with_max_delay(self.cfg.retry_max_delay)
            .with_jitter()
            .without_max_times()
            .build();
        let mut invocations = 0u32;
        loop {
            invocations += 1;
            summary.invocations += 1;
            tracing::debug!(shard, records = records.len(),
                first = ?records.first().and_then(seq_of).map(String::from),
                last = ?records.last().and_then(seq_of).map(String::from), "invoking handler");
            let event: StreamEvent = lambda_event(&records, &self.stream_arn)
                .parse()
                .expect("a built event is valid JSON");
            let outcome = self.handler.handle(&event, Utc::now()).await;
            summary.handler.add(&outcome.counts);
            let lowest = outcome.failed_sequence_numbers().into_iter().min();
            // Records before the lowest failure are done: checkpoint the last of them.
            let done_upto = records
                .iter()
                .filter_map(seq_of)
                .filter(|s| lowest.as_ref().is_none_or(|low| s < low))
                .max();
            if let Some(seq) = done_upto {
                state.advance(shard, seq);
                self.save_state(state)?;
            }
            let Some(lowest) = lowest else { return Ok(()) };
            records = redelivery_from(records, &lowest);
            if records.is_empty() {
                return Ok(());
            }
            if invocations > self.cfg.max_retries {
                self.send_on_failure(shard, &records, invocations).await?;
                summary.on_failure += 1;
                if let Some(last) = records.iter().filter_map(seq_of).max() {
                    state.advance(shard, last);
                    self.save_state(state)?;
                }
                return Ok(());
            }
            summary.retries += 1;
            let delay = delays.next().unwrap_or(self.cfg.retry_max_delay);
            tracing::info!(shard, from = %lowest, attempt = invocations, ?delay, "redelivering batch after partial failure");
            tokio::time::sleep(delay).await;
        }
    }

    async fn send_on_failure(
        &self,
        shard: &str,
        records: &[Record],
        invocations: u32,
    ) -> Result<(), WorkerError> {
        let record = OnFailureRecord {
            request_id: request_id(),
            function_arn: &self.cfg.function_arn,
            invoke_count: invocations,
            shard_id: shard,
            stream_arn: &self.stream_arn,
            records,
            now: Utc::now(),
        }
        .to_json();
        let info = &record["DDBStreamBatchInfo"];
        let (start, end) = (
            info["startSequenceNumber"]
                .as_str()
                .unwrap_or("?")
                .to_owned(),
            info["endSequenceNumber"].as_str().unwrap_or("?").to_owned(),
        );
        let fail = |message: String| WorkerError::OnFailure {
            shard: shard.to_owned(),
            start: start.clone(),
            end: end.clone(),
            message,
        };
        let body = record.to_string();
        match &self.cfg.on_failure {
            Some(OnFailureTarget::Queue { client, url }) => {
                client
                    .send_message()
                    .queue_url(url)
                    .message_body(&body)
                    .send()
                    .await
                    .map_err(|e| fail(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
            }
            Some(OnFailureTarget::File(path)) => {
                append_line(path, &body).map_err(|e| fail(e.to_string()))?
            }
            None => {}
        }
        tracing::error!(shard, start, end, batch_size = records.len(), destination = ?self.cfg.on_failure.as_ref().map(target_name),
            "retries exhausted; batch sent to the on-failure destination (replay it with `tiersync replay`)");
        Ok(())
    }
}

fn target_name(t: &OnFailureTarget) -> String {
    match t {
        OnFailureTarget::Queue { url, .. } => url.clone(),
        OnFailureTarget::File(p) => p.display().to_string(),
    }
}

fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// A UUID-shaped id for on-failure records; unique enough for a local worker's log correlation.
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (nanos >> 32) as u32,
        (nanos >> 16) as u16,
        nanos as u16 & 0xfff,
        c as u16 & 0xfff,
        (std::process::id() as u64) << 16 | (c & 0xffff)
    )
}
