//! Pure pieces of reading a DynamoDB stream the way Lambda's event source mapping does: shard
//! lineage order, the Lambda event shape of a stream record, the on-failure record
//! (`DDBStreamBatchInfo`) and checkpoint state. The I/O loop lives in [`crate::worker`].

use std::collections::{BTreeMap, HashSet};

use aws_sdk_dynamodbstreams::types::{OperationType, Record, Shard};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::decide::SeqNo;
use crate::schema::format_time;

/// The shards that may be read now: not finished, and whose parent is finished or no longer
/// listed (trimmed away). A child shard is read only after its parent is fully read, which keeps
/// every item's changes in order across a split.
pub fn ready_shards<'a>(shards: &'a [Shard], state: &CheckpointState) -> Vec<&'a str> {
    let listed: HashSet<&str> = shards.iter().filter_map(|s| s.shard_id()).collect();
    shards
        .iter()
        .filter_map(|s| {
            let id = s.shard_id()?;
            if state.is_finished(id) {
                return None;
            }
            let parent_done = match s.parent_shard_id() {
                None => true,
                Some(p) => !listed.contains(p) || state.is_finished(p),
            };
            parent_done.then_some(id)
        })
        .collect()
}

/// Per-shard progress, persisted after every batch so that a restart resumes after the last
/// record whose batch completed (at-least-once: a crash re-delivers at most the batch in hand).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// The stream the checkpoints belong to; a different stream (table re-created) starts over.
    pub stream_arn: String,
    pub shards: BTreeMap<String, ShardCheckpoint>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCheckpoint {
    /// Last sequence number fully handled; reading resumes after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<SeqNo>,
    /// The shard is closed and read to its end.
    #[serde(default)]
    pub finished: bool,
}

impl CheckpointState {
    pub fn new(stream_arn: &str) -> Self {
        Self {
            stream_arn: stream_arn.to_owned(),
            shards: BTreeMap::new(),
        }
    }

    pub fn is_finished(&self, shard: &str) -> bool {
        self.shards.get(shard).is_some_and(|s| s.finished)
    }

    pub fn position(&self, shard: &str) -> Option<&SeqNo> {
        self.shards
            .get(shard)
            .and_then(|s| s.sequence_number.as_ref())
    }

    pub fn advance(&mut self, shard: &str, seq: SeqNo) {
        let entry = self.shards.entry(shard.to_owned()).or_default();
        // Never move a checkpoint backwards, whatever the caller hands in.
        if entry.sequence_number.as_ref().is_none_or(|cur| &seq > cur) {
            entry.sequence_number = Some(seq);
        }
    }

    pub fn finish(&mut self, shard: &str) {
        self.shards.entry(shard.to_owned()).or_default().finished = true;
    }
}

fn dynamo_json(
    item: Option<
        &std::collections::HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>,
    >,
) -> Value {
    match item {
        None => Value::Null,
        Some(map) => {
            let item = serde_dynamo::Item::from(map.clone());
            serde_json::to_value(&item).unwrap_or(Value::Null)
        }
    }
}

/// One stream record as Lambda's event source mapping delivers it in `Records[]`.
pub fn lambda_record(r: &Record, stream_arn: &str) -> Value {
    let d = r.dynamodb();
    let event_name = match r.event_name() {
        Some(OperationType::Insert) => "INSERT",
        Some(OperationType::Modify) => "MODIFY",
        Some(OperationType::Remove) => "REMOVE",
        Some(other) => other.as_str(),
        None => "",
    };
    let mut change = json!({
        "Keys": dynamo_json(d.and_then(|d| d.keys())),
        "SequenceNumber": d.and_then(|d| d.sequence_number()),
        "SizeBytes": d.and_then(|d| d.size_bytes()).unwrap_or(0),
        "StreamViewType": d.and_then(|d| d.stream_view_type()).map(|v| v.as_str()),
    });
    if let Some(t) = d.and_then(|d| d.approximate_creation_date_time()) {
        change["ApproximateCreationDateTime"] = json!(t.as_secs_f64());
    }
    if let Some(new) = d.and_then(|d| d.new_image()) {
        change["NewImage"] = dynamo_json(Some(new));
    }
    if let Some(old) = d.and_then(|d| d.old_image()) {
        change["OldImage"] = dynamo_json(Some(old));
    }
    let mut record = json!({
        "eventID": r.event_id(),
        "eventName": event_name,
        "eventVersion": r.event_version(),
        "eventSource": r.event_source().unwrap_or("aws:dynamodb"),
        "awsRegion": r.aws_region(),
        "dynamodb": change,
        "eventSourceARN": stream_arn,
    });
    if let Some(id) = r.user_identity() {
        record["userIdentity"] = json!({"type": id.r#type(), "principalId": id.principal_id()});
    }
    record
}

/// A Lambda DynamoDB event (`{"Records": [...]}`) for a batch of stream records.
pub fn lambda_event(records: &[Record], stream_arn: &str) -> String {
    let records: Vec<Value> = records
        .iter()
        .map(|r| lambda_record(r, stream_arn))
        .collect();
    json!({ "Records": records }).to_string()
}

/// The on-failure record in AWS's format for a DynamoDB stream batch (see STREAMS.md): a pointer
/// to the records (shard, first and last sequence number, stream ARN), not the records.
pub struct OnFailureRecord<'a> {
    pub request_id: String,
    pub function_arn: &'a str,
    pub invoke_count: u32,
    pub shard_id: &'a str,
    pub stream_arn: &'a str,
    pub records: &'a [Record],
    pub now: DateTime<Utc>,
}

impl OnFailureRecord<'_> {
    pub fn to_json(&self) -> Value {
        let seq = |r: Option<&Record>| {
            r.and_then(|r| r.dynamodb())
                .and_then(|d| d.sequence_number())
                .map(str::to_owned)
        };
        let arrival = |r: Option<&Record>| {
            r.and_then(|r| r.dynamodb())
                .and_then(|d| d.approximate_creation_date_time())
                .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), 0))
                .map(format_time)
        };
        json!({
            "requestContext": {
                "requestId": self.request_id,
                "functionArn": self.function_arn,
                // The worker gives up only when retries run out (it has no record-age limit).
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": self.invoke_count,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                // The handler reported a partial batch failure; it did not crash.
                "functionError": "PartialBatchFailure",
            },
            "version": "1.0",
            "timestamp": self.now.to_rfc3339_opts(SecondsFormat::Millis, true),
            "DDBStreamBatchInfo": {
                "shardId": self.shard_id,
                "startSequenceNumber": seq(self.records.first()),
                "endSequenceNumber": seq(self.records.last()),
                "approximateArrivalOfFirstRecord": arrival(self.records.first()),
                "approximateArrivalOfLastRecord": arrival(self.records.last()),
                "batchSize": self.records.len(),
                "streamArn": self.stream_arn,
            }
        })
    }
}

/// The records of `batch` from sequence number `from` on (what Lambda redelivers after a partial
/// failure whose lowest reported sequence number is `from`).
pub fn redelivery_from(batch: Vec<Record>, from: &SeqNo) -> Vec<Record> {
    batch
        .into_iter()
        .filter(|r| {
            r.dynamodb()
                .and_then(|d| d.sequence_number())
                .and_then(SeqNo::parse)
                .is_none_or(|s| &s >= from)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::types::{AttributeValue, StreamRecord, StreamViewType};

    fn shard(id: &str, parent: Option<&str>) -> Shard {
        Shard::builder()
            .shard_id(id)
            .set_parent_shard_id(parent.map(str::to_owned))
            .build()
    }

    #[test]
    fn children_wait_for_their_parents() {
        let shards = [
            shard("a", None),
            shard("b", Some("a")),
            shard("c", Some("b")),
            shard("d", Some("gone")),
        ];
        let mut st = CheckpointState::new("arn");
        assert_eq!(ready_shards(&shards, &st), ["a", "d"]);
        st.finish("a");
        assert_eq!(ready_shards(&shards, &st), ["b", "d"]);
        st.finish("b");
        st.finish("d");
        assert_eq!(ready_shards(&shards, &st), ["c"]);
    }

    #[test]
    fn checkpoints_never_move_backwards_and_round_trip() {
        let mut st = CheckpointState::new("arn");
        st.advance("s", SeqNo::parse("100").unwrap());
        st.advance("s", SeqNo::parse("99").unwrap());
        assert_eq!(st.position("s").unwrap().as_str(), "100");
        st.advance("s", SeqNo::parse("1000").unwrap());
        assert_eq!(st.position("s").unwrap().as_str(), "1000");
        let back: CheckpointState =
            serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(back, st);
    }

    pub(crate) fn record(seq: &str, sk: &str, version: u64, tier: &str) -> Record {
        let image = [
            ("PK", AttributeValue::S("USER#u1".into())),
            ("SK", AttributeValue::S(sk.into())),
            ("tier", AttributeValue::S(tier.into())),
            ("tier_version", AttributeValue::N(version.to_string())),
        ];
        let mut d = StreamRecord::builder()
            .keys("PK", AttributeValue::S("USER#u1".into()))
            .keys("SK", AttributeValue::S(sk.into()))
            .sequence_number(seq)
            .size_bytes(100)
            .stream_view_type(StreamViewType::NewAndOldImages)
            .approximate_creation_date_time(
                aws_sdk_dynamodbstreams::primitives::DateTime::from_secs(1_764_806_400),
            );
        for (k, v) in image.clone() {
            d = d.new_image(k, v);
        }
        for (k, v) in image {
            let v = if k == "tier_version" {
                AttributeValue::N((version - 1).to_string())
            } else {
                v
            };
            d = d.old_image(k, v);
        }
        Record::builder()
            .event_id("e1")
            .event_name(OperationType::Modify)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("us-east-1")
            .dynamodb(d.build())
            .build()
    }

    #[test]
    fn a_stream_record_becomes_the_exact_lambda_shape_and_decodes() {
        let event = lambda_event(&[record("42", "USAGE#LIMITS", 3, "premium")], "arn:s");
        let v: Value = serde_json::from_str(&event).unwrap();
        let r = &v["Records"][0];
        assert_eq!(r["eventName"], "MODIFY");
        assert_eq!(r["eventSourceARN"], "arn:s");
        assert_eq!(r["dynamodb"]["SequenceNumber"], "42");
        assert_eq!(r["dynamodb"]["Keys"]["SK"], json!({"S": "USAGE#LIMITS"}));
        assert_eq!(r["dynamodb"]["NewImage"]["tier_version"], json!({"N": "3"}));
        assert_eq!(
            r["dynamodb"]["ApproximateCreationDateTime"],
            json!(1_764_806_400.0)
        );
        let decided = crate::decide::decode(&r.to_string()).unwrap();
        assert!(
            matches!(decided, crate::decide::Decision::Change(c) if c.version == 3 && c.tier == crate::schema::Tier::Premium)
        );
    }

    #[test]
    fn the_on_failure_record_points_at_the_batch() {
        let recs = [
            record("7", "USAGE#LIMITS", 2, "free"),
            record("9", "USAGE#LIMITS", 3, "premium"),
        ];
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let v = OnFailureRecord {
            request_id: "r".into(),
            function_arn: "fn",
            invoke_count: 4,
            shard_id: "shardId-1",
            stream_arn: "arn:s",
            records: &recs,
            now,
        }
        .to_json();
        assert_eq!(
            v["DDBStreamBatchInfo"],
            json!({"shardId": "shardId-1", "startSequenceNumber": "7", "endSequenceNumber": "9",
                   "approximateArrivalOfFirstRecord": "2025-12-04T00:00:00Z",
                   "approximateArrivalOfLastRecord": "2025-12-04T00:00:00Z",
                   "batchSize": 2, "streamArn": "arn:s"})
        );
        assert_eq!(v["requestContext"]["condition"], "RetryAttemptsExhausted");
        assert_eq!(v["requestContext"]["approximateInvokeCount"], 4);
        assert_eq!(v["timestamp"], "2026-12-03T10:00:00.123Z");
    }

    fn any_attr() -> impl proptest::strategy::Strategy<Value = AttributeValue> {
        use proptest::prelude::*;
        prop_oneof![
            ".{0,8}".prop_map(AttributeValue::S),
            "-?[0-9]{0,25}(\\.[0-9]{1,3})?".prop_map(AttributeValue::N),
            any::<bool>().prop_map(AttributeValue::Bool),
            Just(AttributeValue::Null(true)),
            proptest::collection::vec(any::<u8>(), 0..4)
                .prop_map(|b| AttributeValue::B(aws_sdk_dynamodbstreams::primitives::Blob::new(b))),
        ]
    }

    proptest::proptest! {
        /// Whatever GetRecords returns, the Lambda-shaped record decodes to a decision or to
        /// poison that carries the record's sequence number: never a panic.
        #[test]
        fn any_get_records_output_is_decided_or_poison(
            seq in proptest::option::of("[0-9]{1,25}|[a-z0-9]{0,5}"),
            name in proptest::sample::select(vec![Some(OperationType::Insert), Some(OperationType::Modify), Some(OperationType::Remove), None]),
            keys in proptest::collection::vec((proptest::sample::select(vec!["PK", "SK", "x"]), any_attr()), 0..3),
            new in proptest::collection::vec((proptest::sample::select(vec!["tier", "tier_version", "daily_used"]), any_attr()), 0..4),
            old in proptest::collection::vec((proptest::sample::select(vec!["tier", "tier_version"]), any_attr()), 0..3),
        ) {
            let mut d = StreamRecord::builder().set_sequence_number(seq.clone()).size_bytes(1);
            for (k, v) in keys { d = d.keys(k, v); }
            for (k, v) in new { d = d.new_image(k, v); }
            for (k, v) in old { d = d.old_image(k, v); }
            let r = Record::builder().set_event_name(name).dynamodb(d.build()).build();
            let json = lambda_record(&r, "arn").to_string();
            if let Err(p) = crate::decide::decode(&json) {
                proptest::prop_assert_eq!(p.seq, seq);
            }
        }
    }

    #[test]
    fn redelivery_starts_at_the_lowest_failed_record() {
        let recs = vec![
            record("8", "USAGE#LIMITS", 2, "free"),
            record("9", "USAGE#LIMITS", 3, "premium"),
            record("10", "USAGE#LIMITS", 4, "free"),
        ];
        let left = redelivery_from(recs, &SeqNo::parse("9").unwrap());
        let seqs: Vec<_> = left
            .iter()
            .map(|r| r.dynamodb().unwrap().sequence_number().unwrap())
            .collect();
        assert_eq!(seqs, ["9", "10"]);
    }
}
