//! Parsing on-failure records: the pointers (`DDBStreamBatchInfo`) that Lambda's event source
//! mapping sends to its on-failure destination when a batch's retries or record age run out.
//! Pure: accepts the raw record, the same inside an SNS envelope (`Message` string), and the S3
//! destination's form that also carries the original payload.

use serde_json::Value;

use crate::decide::SeqNo;
use crate::schema::{UserId, PK, SK, SK_LIMITS};

/// One failed batch: a range of one shard of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPointer {
    pub stream_arn: String,
    pub shard_id: String,
    pub start: SeqNo,
    pub end: SeqNo,
    pub batch_size: Option<u64>,
    /// Users whose USAGE#LIMITS changed in the batch, when the message carries the original
    /// payload (S3 destination). Lets an expired batch be repaired for just those users.
    pub users: Option<Vec<UserId>>,
}

/// Why a message is not a usable on-failure record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedMessage {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("SNS envelope's Message is not an on-failure record: {0}")]
    BadSnsMessage(String),
    #[error("no DDBStreamBatchInfo (not a DynamoDB stream on-failure record)")]
    NoBatchInfo,
    #[error("DDBStreamBatchInfo.{field} is missing or invalid")]
    BadField { field: &'static str },
    #[error("startSequenceNumber {start} is after endSequenceNumber {end}")]
    EmptyRange { start: String, end: String },
}

/// Parses one message body (a JSON text) into a batch pointer.
pub fn parse_message(body: &str) -> Result<BatchPointer, MalformedMessage> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| MalformedMessage::NotJson(e.to_string()))?;
    parse_value(&value)
}

/// Parses one JSON value (raw record, SNS envelope or S3 form).
pub fn parse_value(value: &Value) -> Result<BatchPointer, MalformedMessage> {
    if value.get("DDBStreamBatchInfo").is_none() {
        if let Some(Value::String(message)) = value.get("Message") {
            // SNS: the record is the envelope's Message, as a JSON string.
            let inner: Value = serde_json::from_str(message)
                .map_err(|e| MalformedMessage::BadSnsMessage(e.to_string()))?;
            return parse_value(&inner).map_err(|e| match e {
                MalformedMessage::NotJson(m) => MalformedMessage::BadSnsMessage(m),
                other => other,
            });
        }
        return Err(MalformedMessage::NoBatchInfo);
    }
    let info = &value["DDBStreamBatchInfo"];
    let text = |field: &'static str| -> Result<String, MalformedMessage> {
        info.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or(MalformedMessage::BadField { field })
    };
    let seq = |field: &'static str| -> Result<SeqNo, MalformedMessage> {
        SeqNo::parse(&text(field)?).ok_or(MalformedMessage::BadField { field })
    };
    let (start, end) = (seq("startSequenceNumber")?, seq("endSequenceNumber")?);
    if start > end {
        return Err(MalformedMessage::EmptyRange {
            start: start.into(),
            end: end.into(),
        });
    }
    let stream_arn = text("streamArn")?;
    if !stream_arn.starts_with("arn:") || !stream_arn.contains("/stream/") {
        return Err(MalformedMessage::BadField { field: "streamArn" });
    }
    Ok(BatchPointer {
        stream_arn,
        shard_id: text("shardId")?,
        start,
        end,
        batch_size: info.get("batchSize").and_then(Value::as_u64),
        users: payload_users(value.get("payload")),
    })
}

/// Users with a USAGE#LIMITS record in the S3 form's original payload (an object or a JSON
/// string holding `{"Records": [...]}`).
fn payload_users(payload: Option<&Value>) -> Option<Vec<UserId>> {
    let parsed;
    let payload = match payload? {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).ok()?;
            &parsed
        }
        other => other,
    };
    let records = payload.get("Records")?.as_array()?;
    let mut users: Vec<UserId> = records
        .iter()
        .filter(|r| r["dynamodb"]["Keys"][SK]["S"] == SK_LIMITS)
        .filter_map(|r| r["dynamodb"]["Keys"][PK]["S"].as_str())
        .filter_map(|pk| UserId::from_pk(pk).ok())
        .collect();
    users.sort();
    users.dedup();
    Some(users)
}

/// Splits a file into messages: one JSON object, a JSON array of them, or JSON lines. Each item
/// comes back as its own text so that one bad line is reported alone.
pub fn split_file(text: &str) -> Vec<Result<Value, MalformedMessage>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return match serde_json::from_str::<Vec<Value>>(trimmed) {
            Ok(items) => items.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(MalformedMessage::NotJson(e.to_string()))],
        };
    }
    if let Ok(one) = serde_json::from_str::<Value>(trimmed) {
        return vec![Ok(one)];
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).map_err(|e| MalformedMessage::NotJson(e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The example from AWS's documentation (STREAMS.md), verbatim.
    const AWS_EXAMPLE: &str = r#"{
      "requestContext": {"requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81",
        "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
        "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 1},
      "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
      "version": "1.0",
      "timestamp": "2019-11-14T00:13:49.717Z",
      "DDBStreamBatchInfo": {
        "shardId": "shardId-00000001573689847184-864758bb",
        "startSequenceNumber": "800000000003126276362",
        "endSequenceNumber": "800000000003126276362",
        "approximateArrivalOfFirstRecord": "2019-11-14T00:13:19Z",
        "approximateArrivalOfLastRecord": "2019-11-14T00:13:19Z",
        "batchSize": 1,
        "streamArn": "arn:aws:dynamodb:us-east-2:123456789012:table/mytable/stream/2019-11-14T00:04:06.388"}
    }"#;

    #[test]
    fn the_aws_example_parses() {
        let p = parse_message(AWS_EXAMPLE).unwrap();
        assert_eq!(p.shard_id, "shardId-00000001573689847184-864758bb");
        assert_eq!(
            (p.start.as_str(), p.end.as_str()),
            ("800000000003126276362", "800000000003126276362")
        );
        assert_eq!(p.batch_size, Some(1));
        assert!(p.stream_arn.ends_with("/stream/2019-11-14T00:04:06.388"));
        assert_eq!(p.users, None);
    }

    #[test]
    fn an_sns_envelope_carries_the_record_as_a_string() {
        let sns = json!({"Type": "Notification", "MessageId": "m1", "TopicArn": "arn:aws:sns:us-east-2:1:t", "Message": AWS_EXAMPLE});
        assert_eq!(
            parse_message(&sns.to_string()).unwrap(),
            parse_message(AWS_EXAMPLE).unwrap()
        );
        let bad = json!({"Type": "Notification", "Message": "{oops"});
        assert!(matches!(
            parse_message(&bad.to_string()),
            Err(MalformedMessage::BadSnsMessage(_))
        ));
    }

    #[test]
    fn the_s3_form_names_the_batch_users() {
        let mut v: Value = serde_json::from_str(AWS_EXAMPLE).unwrap();
        let rec =
            |pk: &str, sk: &str| json!({"dynamodb": {"Keys": {"PK": {"S": pk}, "SK": {"S": sk}}}});
        v["payload"] = json!({"Records": [rec("USER#b", "USAGE#LIMITS"), rec("USER#a", "USAGE#LIMITS"), rec("USER#c", "PROFILE"), rec("USER#b", "USAGE#LIMITS")]});
        let users: Vec<_> = parse_value(&v)
            .unwrap()
            .users
            .unwrap()
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(users, ["a", "b"]);
        v["payload"] =
            Value::String(json!({"Records": [rec("USER#z", "USAGE#LIMITS")]}).to_string());
        assert_eq!(parse_value(&v).unwrap().users.unwrap().len(), 1);
    }

    #[test]
    fn broken_messages_say_what_is_wrong() {
        assert!(matches!(
            parse_message("nope"),
            Err(MalformedMessage::NotJson(_))
        ));
        assert_eq!(
            parse_message(r#"{"hello": 1}"#),
            Err(MalformedMessage::NoBatchInfo)
        );
        let mut v: Value = serde_json::from_str(AWS_EXAMPLE).unwrap();
        v["DDBStreamBatchInfo"]["startSequenceNumber"] = json!("12x");
        assert_eq!(
            parse_value(&v),
            Err(MalformedMessage::BadField {
                field: "startSequenceNumber"
            })
        );
        let mut v: Value = serde_json::from_str(AWS_EXAMPLE).unwrap();
        v["DDBStreamBatchInfo"]["startSequenceNumber"] = json!("900000000003126276362");
        assert!(matches!(
            parse_value(&v),
            Err(MalformedMessage::EmptyRange { .. })
        ));
        let mut v: Value = serde_json::from_str(AWS_EXAMPLE).unwrap();
        v["DDBStreamBatchInfo"]["streamArn"] = json!("table/x");
        assert_eq!(
            parse_value(&v),
            Err(MalformedMessage::BadField { field: "streamArn" })
        );
        let mut v: Value = serde_json::from_str(AWS_EXAMPLE).unwrap();
        v["DDBStreamBatchInfo"]
            .as_object_mut()
            .unwrap()
            .remove("shardId");
        assert_eq!(
            parse_value(&v),
            Err(MalformedMessage::BadField { field: "shardId" })
        );
    }

    #[test]
    fn files_hold_an_object_an_array_or_json_lines() {
        let one: Value = serde_json::from_str(AWS_EXAMPLE).unwrap();
        assert_eq!(split_file(AWS_EXAMPLE).len(), 1);
        assert_eq!(split_file(&json!([one, one]).to_string()).len(), 2);
        let lines = format!("{}\n\nnot json\n{}\n", one, one);
        let items = split_file(&lines);
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_err() && items[2].is_ok());
    }

    proptest::proptest! {
        #[test]
        fn no_message_body_panics(body in ".{0,300}") {
            if let Ok(p) = parse_message(&body) {
                proptest::prop_assert!(p.start <= p.end);
            }
        }

        /// A real record with any field replaced or removed parses to a pointer whose fields are
        /// the record's, or is rejected naming what is wrong.
        #[test]
        fn a_mangled_record_parses_exactly_or_names_the_field(
            field in proptest::sample::select(&["shardId", "startSequenceNumber", "endSequenceNumber", "streamArn", "batchSize"][..]),
            value in proptest::option::of(".{0,30}"),
            sns in proptest::bool::ANY,
        ) {
            let mut v: Value = serde_json::from_str(AWS_EXAMPLE).unwrap();
            match &value {
                Some(x) => { v["DDBStreamBatchInfo"][field] = Value::String(x.clone()); }
                None => { v["DDBStreamBatchInfo"].as_object_mut().unwrap().remove(field); }
            }
            let body = if sns { json!({"Type": "Notification", "Message": v.to_string()}).to_string() } else { v.to_string() };
            match parse_message(&body) {
                Ok(p) => {
                    let info = &v["DDBStreamBatchInfo"];
                    proptest::prop_assert_eq!(Some(p.shard_id.as_str()), info["shardId"].as_str());
                    proptest::prop_assert_eq!(Some(p.start.as_str()), info["startSequenceNumber"].as_str());
                    proptest::prop_assert_eq!(Some(p.end.as_str()), info["endSequenceNumber"].as_str());
                    proptest::prop_assert_eq!(Some(p.stream_arn.as_str()), info["streamArn"].as_str());
                }
                Err(MalformedMessage::BadField { field: f }) => proptest::prop_assert_eq!(f, field),
                Err(MalformedMessage::EmptyRange { .. }) => proptest::prop_assert!(field.ends_with("SequenceNumber")),
                Err(other) => proptest::prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
