//! Pure decisions of the sync path: decode one stream record, decide what it means, coalesce a
//! batch into at most one PROFILE write per user, and pick the sequence numbers to report as
//! failed. No I/O here, so every rule is unit- and property-tested without a database.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use crate::scan::{Kind, Scanner, SyntaxError};
use crate::schema::{Tier, UserId, PK, SK, SK_LIMITS, TIER, TIER_VERSION};

/// A stream sequence number. Decimal digits of any length that grow within a shard: ordered as big
/// integers (by length, then lexically), never as `u64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SeqNo(String);

impl SeqNo {
    /// Accepts a non-empty string of ASCII digits.
    pub fn parse(s: &str) -> Option<Self> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn significant(&self) -> &str {
        let trimmed = self.0.trim_start_matches('0');
        if trimmed.is_empty() {
            "0"
        } else {
            trimmed
        }
    }
}

impl Ord for SeqNo {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.significant(), other.significant());
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }
}

impl PartialOrd for SeqNo {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SeqNo {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).ok_or_else(|| format!("invalid sequence number {s:?}"))
    }
}

impl From<SeqNo> for String {
    fn from(s: SeqNo) -> String {
        s.0
    }
}

/// A tier change to propagate: USAGE#LIMITS of `user` reached `version` with `tier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierChange {
    pub user: UserId,
    pub tier: Tier,
    pub version: u64,
    pub seq: SeqNo,
}

/// Why a record needs no write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// An item other than USAGE#LIMITS (PROFILE, or another entity of a single-table design).
    OtherItem,
    /// A deleted item: deleting USAGE#LIMITS never rewrites a profile.
    Remove,
    /// USAGE#LIMITS changed without a tier change (usage increment, daily reset, no-op write).
    NoTierChange,
}

/// What one well-formed stream record means for the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Skip(Skip),
    /// The tier changed but `tier_version` did not rise: a writer broke the contract. Not applied
    /// (there is no version to order it by); logged and counted.
    Unversioned {
        user: UserId,
        seq: SeqNo,
        old_tier: Option<String>,
        new_tier: Option<String>,
    },
    Change(TierChange),
}

/// Why a record is poison: it can never be applied, so it is logged, counted and skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoisonReason {
    #[error("undecodable record: {0}")]
    Undecodable(String),
    #[error("missing or invalid sequence number")]
    BadSequenceNumber,
    #[error("unknown eventName {0:?}")]
    UnknownEventName(String),
    #[error("bad key: {0}")]
    BadKey(String),
    #[error("{image} image has a non-numeric or negative tier_version: {value}")]
    BadVersion { image: &'static str, value: String },
    #[error("tier_version rose to {version} but the new image has no tier")]
    MissingTier { version: u64 },
    #[error(transparent)]
    UnknownTier(#[from] crate::schema::UnknownTier),
}

/// A poison record with what could be salvaged of its identity, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    pub seq: Option<String>,
    pub pk: Option<String>,
    pub sk: Option<String>,
    pub reason: PoisonReason,
}

/// A DynamoDB-JSON attribute value, as far as tiersync looks at it: strings and numbers keep
/// their text; anything else keeps only a description, which is all a log line needs.
/// Strings borrow from the event text when it has no escapes, so a record that needs no write
/// allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attr<'a> {
    S(Cow<'a, str>),
    N(Cow<'a, str>),
    Other(String),
}

impl fmt::Display for Attr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::S(s) => write!(f, "{{\"S\": {s:?}}}"),
            Attr::N(n) => write!(f, "{{\"N\": {n:?}}}"),
            Attr::Other(t) => f.write_str(t),
        }
    }
}

/// A string, or what kind of value came instead.
enum Text<'a> {
    Str(Cow<'a, str>),
    Wrong(&'static str),
}

impl<'a> Text<'a> {
    fn ok(self) -> Option<Cow<'a, str>> {
        match self {
            Text::Str(s) => Some(s),
            Text::Wrong(_) => None,
        }
    }
}

/// The attributes of an image (or of `Keys`) that decisions read; every other attribute is
/// skipped. `null` or a missing image is an empty one.
#[derive(Debug, Default)]
struct Image<'a> {
    pk: Option<Attr<'a>>,
    sk: Option<Attr<'a>>,
    tier: Option<Attr<'a>>,
    tier_version: Option<Attr<'a>>,
    /// Not a map: what it was instead.
    wrong: Option<&'static str>,
}

/// The parts of a Lambda DynamoDB stream record that decisions read.
#[derive(Default)]
struct Record<'a> {
    event_name: Option<Text<'a>>,
    keys: Image<'a>,
    new_image: Image<'a>,
    old_image: Image<'a>,
    sequence_number: Option<Cow<'a, str>>,
    /// What is structurally wrong with the record, if anything.
    wrong: Option<String>,
}

/// Readers of the record's parts over [`Scanner`]. They never fail on content: a value of the
/// wrong type becomes a marker that [`decide`] turns into poison. Only broken JSON syntax fails,
/// and that fails the whole event before any record is decided (Lambda never sends that). This
/// is what lets one pass over the event decode every record on its own.
mod read {
    use super::*;

    /// A string, or what came instead (skipped).
    pub(super) fn text<'a>(s: &mut Scanner<'a>) -> Result<Text<'a>, SyntaxError> {
        match s.kind()? {
            Kind::String => Ok(Text::Str(s.string()?)),
            other => s.skip().map(|()| Text::Wrong(other.described())),
        }
    }

    /// A DynamoDB-JSON attribute value like `{"S": "..."}`. One key in a well-formed value; in a
    /// malformed one with several, a string under S wins over one under N, which wins over the
    /// rest, whatever their order: a key stays readable for the poison's log line, and a
    /// version that also claims to be a string is poison, not read as a number.
    fn attr<'a>(s: &mut Scanner<'a>) -> Result<Attr<'a>, SyntaxError> {
        let kind = s.kind()?;
        if kind != Kind::Object {
            s.skip()?;
            return Ok(Attr::Other(match kind {
                Kind::String => "a bare string".into(),
                other => other.described().into(),
            }));
        }
        let mut value: Option<Attr<'a>> = None;
        let mut members = s.object()?;
        while let Some(tag) = members.next(s)? {
            match &*tag {
                "S" | "N" => {
                    let is_s = &*tag == "S";
                    let held = match value {
                        Some(Attr::S(_)) => 2,
                        Some(Attr::N(_)) => 1,
                        _ => 0,
                    };
                    if held >= if is_s { 2 } else { 1 } {
                        s.skip()?;
                        continue;
                    }
                    match text(s)? {
                        Text::Str(v) if is_s => value = Some(Attr::S(v)),
                        Text::Str(v) => value = Some(Attr::N(v)),
                        Text::Wrong(shape) if held == 0 => {
                            value = Some(Attr::Other(format!("{{\"{tag}\": {shape}}}")))
                        }
                        Text::Wrong(_) => {}
                    }
                }
                _ => {
                    s.skip()?;
                    // Short names are type tags (BOOL, NULL, SS, …): name them in the message.
                    let name = if tag.len() <= 4 {
                        &*tag
                    } else {
                        "another type"
                    };
                    value.get_or_insert_with(|| Attr::Other(format!("a value of type {name}")));
                }
            }
        }
        Ok(value.unwrap_or_else(|| Attr::Other("an empty attribute value".into())))
    }

    /// An image; `keys` says whether PK and SK matter (only in `Keys`: the images repeat them).
    pub(super) fn image<'a>(s: &mut Scanner<'a>, keys: bool) -> Result<Image<'a>, SyntaxError> {
        let mut image = Image::default();
        match s.kind()? {
            Kind::Object => {}
            Kind::Null => return s.skip().map(|()| image),
            other => {
                s.skip()?;
                image.wrong = Some(other.described());
                return Ok(image);
            }
        }
        let mut members = s.object()?;
        while let Some(name) = members.next(s)? {
            let slot = match &*name {
                PK if keys => &mut image.pk,
                SK if keys => &mut image.sk,
                TIER => &mut image.tier,
                TIER_VERSION => &mut image.tier_version,
                _ => {
                    s.skip()?;
                    continue;
                }
            };
            *slot = Some(attr(s)?);
        }
        Ok(image)
    }

    /// The `dynamodb` part of a record, into `r`.
    fn change<'a>(s: &mut Scanner<'a>, r: &mut Record<'a>) -> Result<(), SyntaxError> {
        let kind = s.kind()?;
        if kind != Kind::Object {
            s.skip()?;
            r.wrong = Some(format!("dynamodb is {}", kind.described()));
            return Ok(());
        }
        let mut members = s.object()?;
        while let Some(key) = members.next(s)? {
            match &*key {
                "Keys" => r.keys = image(s, true)?,
                "NewImage" => r.new_image = image(s, false)?,
                "OldImage" => r.old_image = image(s, false)?,
                "SequenceNumber" => r.sequence_number = text(s)?.ok(),
                _ => s.skip()?,
            }
        }
        for (name, image) in [
            ("Keys", &r.keys),
            ("NewImage", &r.new_image),
            ("OldImage", &r.old_image),
        ] {
            if let Some(shape) = image.wrong {
                r.wrong
                    .get_or_insert_with(|| format!("{name} is {shape}, not an item"));
            }
        }
        Ok(())
    }

    /// One element of `Records`.
    pub(super) fn record<'a>(s: &mut Scanner<'a>) -> Result<Record<'a>, SyntaxError> {
        let mut r = Record::default();
        let kind = s.kind()?;
        if kind != Kind::Object {
            s.skip()?;
            r.wrong = Some(format!("the record is {}", kind.described()));
            return Ok(r);
        }
        let mut has_change = false;
        let mut members = s.object()?;
        while let Some(key) = members.next(s)? {
            match &*key {
                "eventName" => r.event_name = Some(text(s)?),
                "dynamodb" => {
                    has_change = true;
                    change(s, &mut r)?;
                }
                _ => s.skip()?,
            }
        }
        if !has_change {
            r.wrong.get_or_insert_with(|| "no dynamodb".into());
        }
        Ok(r)
    }
}

/// One record of an event, decoded and decided.
pub type Decoded = Result<Decision, Poison>;

/// Decodes and decides the record at the scanner's position (one element of `Records`). Only
/// broken JSON syntax is an error.
pub fn decode_next(s: &mut Scanner<'_>) -> Result<Decoded, SyntaxError> {
    read::record(s).map(|r| decide(&r))
}

/// Decodes one record of a Lambda DynamoDB event (one element of `Records`) and decides what it
/// means; text that is not one JSON value is poison too.
pub fn decode(raw: &str) -> Decoded {
    let mut s = Scanner::new(raw);
    match decode_next(&mut s).and_then(|d| s.finish().map(|()| d)) {
        Ok(decided) => decided,
        Err(e) => Err(salvage(raw, e)),
    }
}

/// Reads what identity it can from a record that is not even JSON.
fn salvage(raw: &str, err: SyntaxError) -> Poison {
    let value: serde_json::Value = serde_json::from_str(raw).unwrap_or_default();
    let change = &value["dynamodb"];
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    Poison {
        seq: text(&change["SequenceNumber"]),
        pk: text(&change["Keys"][PK]["S"]),
        sk: text(&change["Keys"][SK]["S"]),
        reason: PoisonReason::Undecodable(err.to_string()),
    }
}

fn string_attr<'a>(attr: &'a Option<Attr<'_>>) -> Option<&'a str> {
    match attr {
        Some(Attr::S(s)) => Some(s),
        _ => None,
    }
}

/// Decides what a decoded record means. See README "How a record is handled".
fn decide(record: &Record<'_>) -> Decoded {
    let change = record;
    let poison = |reason| Poison {
        seq: change.sequence_number.as_deref().map(str::to_owned),
        pk: string_attr(&change.keys.pk).map(str::to_owned),
        sk: string_attr(&change.keys.sk).map(str::to_owned),
        reason,
    };
    if let Some(wrong) = &record.wrong {
        return Err(poison(PoisonReason::Undecodable(wrong.clone())));
    }
    let seq = change
        .sequence_number
        .as_deref()
        .and_then(SeqNo::parse)
        .ok_or_else(|| poison(PoisonReason::BadSequenceNumber))?;
    let is_remove = match &record.event_name {
        Some(Text::Str(name)) if name == "INSERT" || name == "MODIFY" => false,
        Some(Text::Str(name)) if name == "REMOVE" => true,
        Some(Text::Str(other)) => {
            return Err(poison(PoisonReason::UnknownEventName(other.to_string())))
        }
        Some(Text::Wrong(shape)) => {
            return Err(poison(PoisonReason::UnknownEventName((*shape).to_owned())))
        }
        None => return Err(poison(PoisonReason::UnknownEventName(String::new()))),
    };
    let sk = string_attr(&change.keys.sk)
        .ok_or_else(|| poison(PoisonReason::BadKey("no string SK".into())))?;
    if sk != SK_LIMITS {
        return Ok(Decision::Skip(Skip::OtherItem));
    }
    if is_remove {
        return Ok(Decision::Skip(Skip::Remove));
    }
    let pk = string_attr(&change.keys.pk)
        .ok_or_else(|| poison(PoisonReason::BadKey("no string PK".into())))?;
    let user = UserId::from_pk(pk).map_err(|e| poison(PoisonReason::BadKey(e.to_string())))?;

    let new_version = version(&change.new_image, "new").map_err(poison)?;
    let old_version = version(&change.old_image, "old").map_err(poison)?;
    if new_version > old_version {
        let tier = match &change.new_image.tier {
            Some(Attr::S(s)) => s.parse::<Tier>().map_err(|e| poison(e.into()))?,
            _ => {
                return Err(poison(PoisonReason::MissingTier {
                    version: new_version,
                }))
            }
        };
        return Ok(Decision::Change(TierChange {
            user,
            tier,
            version: new_version,
            seq,
        }));
    }
    let (old_tier, new_tier) = (&change.old_image.tier, &change.new_image.tier);
    if old_tier != new_tier {
        let show = |v: &Option<Attr<'_>>| match v {
            Some(Attr::S(s)) => Some(s.to_string()),
            Some(other) => Some(other.to_string()),
            None => None,
        };
        return Ok(Decision::Unversioned {
            user,
            seq,
            old_tier: show(old_tier),
            new_tier: show(new_tier),
        });
    }
    Ok(Decision::Skip(Skip::NoTierChange))
}

/// `tier_version` of an image; missing (an item written before tiersync) counts as 0.
fn version(image: &Image<'_>, which: &'static str) -> Result<u64, PoisonReason> {
    match &image.tier_version {
        None => Ok(0),
        Some(Attr::N(n)) => n.parse().map_err(|_| PoisonReason::BadVersion {
            image: which,
            value: n.to_string(),
        }),
        Some(other) => Err(PoisonReason::BadVersion {
            image: which,
            value: other.to_string(),
        }),
    }
}

/// The one PROFILE write a batch needs for a user: the highest version seen, and the lowest
/// sequence number among the user's changes, which is what gets reported if the write fails
/// (the redelivery from there includes the record that carries `version`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedWrite {
    pub user_id: UserId,
    pub tier: Tier,
    pub tier_version: u64,
    #[serde(skip)]
    pub first_seq: SeqNo,
}

/// Coalesces a batch's changes: per user only the highest version is written. Output is ordered
/// by each user's first sequence number, so plans are deterministic.
pub fn coalesce(changes: impl IntoIterator<Item = TierChange>) -> Vec<PlannedWrite> {
    let mut by_user: HashMap<UserId, PlannedWrite> = HashMap::new();
    for c in changes {
        match by_user.get_mut(&c.user) {
            Some(w) => {
                if c.version > w.tier_version {
                    w.tier_version = c.version;
                    w.tier = c.tier;
                }
                if c.seq < w.first_seq {
                    w.first_seq = c.seq;
                }
            }
            None => {
                by_user.insert(
                    c.user.clone(),
                    PlannedWrite {
                        user_id: c.user,
                        tier: c.tier,
                        tier_version: c.version,
                        first_seq: c.seq,
                    },
                );
            }
        }
    }
    let mut writes: Vec<_> = by_user.into_values().collect();
    writes.sort_by(|a, b| a.first_seq.cmp(&b.first_seq));
    writes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// A record exactly as Lambda delivers it for a NEW_AND_OLD_IMAGES stream.
    fn record(event: &str, sk: &str, old: serde_json::Value, new: serde_json::Value) -> String {
        json!({
            "eventID": "c4ca4238a0b923820dcc509a6f75849b",
            "eventName": event,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1764806400.0,
                "Keys": {"PK": {"S": "USER#u1"}, "SK": {"S": sk}},
                "NewImage": new,
                "OldImage": old,
                "SequenceNumber": "111100000000000000001",
                "SizeBytes": 120,
                "StreamViewType": "NEW_AND_OLD_IMAGES"
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-12-01T00:00:00.000"
        })
        .to_string()
    }

    fn limits(tier: &str, version: Option<&str>, used: u64) -> serde_json::Value {
        let mut v = json!({
            "PK": {"S": "USER#u1"}, "SK": {"S": "USAGE#LIMITS"},
            "tier": {"S": tier}, "daily_used": {"N": used.to_string()},
            "reset_daily_at": {"S": "2026-12-04T00:00:00Z"}
        });
        if let Some(ver) = version {
            v["tier_version"] = json!({"N": ver});
        }
        v
    }

    /// u1's tier change from free (version 1) to premium (version 2), as Lambda delivers it.
    fn an_upgrade() -> String {
        record(
            "MODIFY",
            SK_LIMITS,
            limits("free", Some("1"), 0),
            limits("premium", Some("2"), 0),
        )
    }

    fn seq(s: &str) -> SeqNo {
        SeqNo::parse(s).unwrap()
    }

    #[test]
    fn a_version_rise_is_a_tier_change() {
        let raw = record(
            "MODIFY",
            SK_LIMITS,
            limits("free", Some("1"), 3),
            limits("premium", Some("2"), 3),
        );
        assert_eq!(
            decode(&raw),
            Ok(Decision::Change(TierChange {
                user: UserId::parse("u1").unwrap(),
                tier: Tier::Premium,
                version: 2,
                seq: seq("111100000000000000001"),
            }))
        );
    }

    #[test]
    fn an_insert_at_version_one_is_a_change_and_missing_old_image_counts_as_zero() {
        let raw = record(
            "INSERT",
            SK_LIMITS,
            json!(null),
            limits("free", Some("1"), 0),
        );
        assert!(matches!(
            decode(&raw),
            Ok(Decision::Change(TierChange {
                version: 1,
                tier: Tier::Free,
                ..
            }))
        ));
    }

    #[test]
    fn usage_increments_profiles_and_removes_are_skipped() {
        let usage = record(
            "MODIFY",
            SK_LIMITS,
            limits("free", Some("4"), 3),
            limits("free", Some("4"), 4),
        );
        assert_eq!(decode(&usage), Ok(Decision::Skip(Skip::NoTierChange)));
        let profile = record(
            "MODIFY",
            "PROFILE",
            json!({}),
            json!({"tier": {"S": "gold"}}),
        );
        assert_eq!(decode(&profile), Ok(Decision::Skip(Skip::OtherItem)));
        let remove = record(
            "REMOVE",
            SK_LIMITS,
            limits("free", Some("4"), 3),
            json!(null),
        );
        assert_eq!(decode(&remove), Ok(Decision::Skip(Skip::Remove)));
    }

    #[test]
    fn a_tier_change_without_a_version_bump_is_unversioned() {
        let raw = record(
            "MODIFY",
            SK_LIMITS,
            limits("free", Some("4"), 3),
            limits("premium", Some("4"), 3),
        );
        assert_eq!(
            decode(&raw),
            Ok(Decision::Unversioned {
                user: UserId::parse("u1").unwrap(),
                seq: seq("111100000000000000001"),
                old_tier: Some("free".into()),
                new_tier: Some("premium".into()),
            })
        );
        // A legacy writer that never sets tier_version at all.
        let legacy = record(
            "MODIFY",
            SK_LIMITS,
            limits("free", None, 3),
            limits("premium", None, 3),
        );
        assert!(matches!(decode(&legacy), Ok(Decision::Unversioned { .. })));
    }

    #[test]
    fn poison_records_name_their_key_sequence_number_and_reason() {
        let bad_version = record(
            "MODIFY",
            SK_LIMITS,
            limits("free", Some("1"), 0),
            limits("premium", Some("two"), 0),
        );
        let p = decode(&bad_version).unwrap_err();
        assert_eq!(p.seq.as_deref(), Some("111100000000000000001"));
        assert_eq!(p.pk.as_deref(), Some("USER#u1"));
        assert_eq!(p.sk.as_deref(), Some("USAGE#LIMITS"));
        assert_eq!(
            p.reason,
            PoisonReason::BadVersion {
                image: "new",
                value: "two".into()
            }
        );

        let unknown = record(
            "MODIFY",
            SK_LIMITS,
            limits("free", Some("1"), 0),
            limits("gold", Some("2"), 0),
        );
        assert_eq!(
            decode(&unknown).unwrap_err().reason,
            PoisonReason::UnknownTier(crate::schema::UnknownTier("gold".into()))
        );

        let negative = record(
            "MODIFY",
            SK_LIMITS,
            limits("free", Some("-1"), 0),
            limits("free", Some("2"), 0),
        );
        assert!(matches!(
            decode(&negative).unwrap_err().reason,
            PoisonReason::BadVersion { image: "old", .. }
        ));

        let mut bad_key: serde_json::Value = serde_json::from_str(&record(
            "MODIFY",
            SK_LIMITS,
            json!({}),
            limits("free", Some("1"), 0),
        ))
        .unwrap();
        bad_key["dynamodb"]["Keys"]["PK"] = json!({"S": "USER#a#b"});
        let p = decode(&bad_key.to_string()).unwrap_err();
        assert!(matches!(p.reason, PoisonReason::BadKey(_)), "{p:?}");
        assert_eq!(p.pk.as_deref(), Some("USER#a#b"));
    }

    #[test]
    fn an_undecodable_record_keeps_what_identity_it_has() {
        let mut v: serde_json::Value =
            serde_json::from_str(&record("MODIFY", SK_LIMITS, json!({}), json!({}))).unwrap();
        // A field decisions read, with the wrong JSON type (SizeBytes and the like are not read).
        v["dynamodb"]["NewImage"] = json!("not an item");
        let p = decode(&v.to_string()).unwrap_err();
        assert!(matches!(p.reason, PoisonReason::Undecodable(_)));
        assert_eq!(p.seq.as_deref(), Some("111100000000000000001"));
        assert_eq!(p.sk.as_deref(), Some("USAGE#LIMITS"));
        let p = decode("[1,2").unwrap_err();
        assert_eq!((p.seq, p.pk), (None, None));
    }

    /// A malformed attribute value with two type tags reads the same in either member order
    /// (serde_json's maps sort keys, so these are written as text).
    #[test]
    fn an_attribute_value_with_two_types_reads_the_same_in_either_order() {
        let good = an_upgrade();
        let edit = |from: &str, to: &str| {
            assert_eq!(good.matches(from).count(), 1, "{from}");
            decode(&good.replacen(from, to, 1))
        };
        let pk = r#""Keys":{"PK":{"S":"USER#u1"}"#;
        for to in [
            r#""Keys":{"PK":{"N":"7","S":"USER#u1"}"#,
            r#""Keys":{"PK":{"S":"USER#u1","N":"7"}"#,
        ] {
            // The string is the key: the record decides as the well-formed one does.
            assert_eq!(edit(pk, to), decode(&good), "{to}");
        }
        let version = r#""tier_version":{"N":"2"}"#;
        for to in [
            r#""tier_version":{"N":"2","S":"2"}"#,
            r#""tier_version":{"S":"2","N":"2"}"#,
        ] {
            let p = edit(version, to).unwrap_err();
            assert_eq!(
                p.reason,
                PoisonReason::BadVersion {
                    image: "new",
                    value: r#"{"S": "2"}"#.into()
                },
                "{to}"
            );
            assert_eq!(p.pk.as_deref(), Some("USER#u1"));
        }
    }

    #[test]
    fn a_record_without_a_sequence_number_is_poison() {
        let mut v: serde_json::Value =
            serde_json::from_str(&record("MODIFY", SK_LIMITS, json!({}), json!({}))).unwrap();
        v["dynamodb"]["SequenceNumber"] = json!("12a");
        assert_eq!(
            decode(&v.to_string()).unwrap_err().reason,
            PoisonReason::BadSequenceNumber
        );
    }

    #[test]
    fn sequence_numbers_compare_as_big_integers() {
        assert!(seq("9") < seq("10"));
        assert!(seq("800000000003126276362") < seq("800000000003126276363"));
        assert!(seq("99999999999999999999") < seq("100000000000000000000"));
        assert_eq!(seq("007").cmp(&seq("7")), Ordering::Equal);
        assert!(SeqNo::parse("").is_none() && SeqNo::parse("1 2").is_none());
    }

    fn change(user: &str, version: u64, s: &str) -> TierChange {
        TierChange {
            user: UserId::parse(user).unwrap(),
            tier: if version.is_multiple_of(2) {
                Tier::Premium
            } else {
                Tier::Free
            },
            version,
            seq: seq(s),
        }
    }

    #[test]
    fn coalesce_keeps_the_highest_version_and_the_lowest_sequence_number_per_user() {
        let writes = coalesce([
            change("a", 2, "100"),
            change("b", 1, "101"),
            change("a", 4, "102"),
            change("a", 3, "103"),
            change("a", 4, "104"), // duplicate delivery
        ]);
        assert_eq!(writes.len(), 2);
        assert_eq!(
            (
                writes[0].user_id.as_str(),
                writes[0].tier_version,
                writes[0].tier,
                writes[0].first_seq.as_str()
            ),
            ("a", 4, Tier::Premium, "100")
        );
        assert_eq!(
            (
                writes[1].user_id.as_str(),
                writes[1].tier_version,
                writes[1].first_seq.as_str()
            ),
            ("b", 1, "101")
        );
    }

    /// Arbitrary JSON values, to splice into records.
    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)
                .unwrap_or_default()),
            ".{0,12}".prop_map(serde_json::Value::from),
            "[0-9]{1,30}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::hash_map("[A-Za-z]{1,3}|S|N|M|L", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Writes `v` as JSON with every string character escaped as `\uXXXX` (UTF-16, so characters
    /// outside the BMP become surrogate pairs) and whitespace around every token.
    fn spelled_out(v: &serde_json::Value, out: &mut String) {
        use serde_json::Value;
        use std::fmt::Write;
        match v {
            Value::String(s) => {
                out.push_str(" \"");
                for unit in s.encode_utf16() {
                    write!(out, "\\u{unit:04X}").unwrap();
                }
                out.push_str("\"\n");
            }
            Value::Array(items) => {
                out.push_str("[ ");
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "" } else { " ,\t" });
                    spelled_out(item, out);
                }
                out.push_str(" ]");
            }
            Value::Object(members) => {
                out.push_str("{\r\n");
                for (i, (key, item)) in members.iter().enumerate() {
                    out.push_str(if i == 0 { "" } else { " , " });
                    spelled_out(&Value::String(key.clone()), out);
                    out.push_str(" : ");
                    spelled_out(item, out);
                }
                out.push_str(" }");
            }
            scalar => write!(out, " {scalar} ").unwrap(),
        }
    }

    /// Every path into a real record where a fuzzer may put garbage.
    const PATHS: &[&str] = &[
        "/eventName",
        "/dynamodb",
        "/dynamodb/Keys",
        "/dynamodb/Keys/PK",
        "/dynamodb/Keys/PK/S",
        "/dynamodb/Keys/SK/S",
        "/dynamodb/NewImage",
        "/dynamodb/NewImage/tier",
        "/dynamodb/NewImage/tier/S",
        "/dynamodb/NewImage/tier_version",
        "/dynamodb/NewImage/tier_version/N",
        "/dynamodb/OldImage",
        "/dynamodb/OldImage/tier_version/N",
        "/dynamodb/SequenceNumber",
        "/dynamodb/SizeBytes",
        "/dynamodb/ApproximateCreationDateTime",
        "/eventID",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// A record with garbage at any place decodes or is poison, never a panic; poison names
        /// the sequence number and key whenever the garbage left them readable.
        #[test]
        fn a_mangled_record_is_decided_or_poison_with_its_identity(path in proptest::sample::select(PATHS), garbage in any_json(), remove in any::<bool>()) {
            let mut v: serde_json::Value = serde_json::from_str(&an_upgrade()).unwrap();
            let (parent, key) = path.rsplit_once('/').unwrap();
            if let Some(obj) = v.pointer_mut(if parent.is_empty() { "" } else { parent }).and_then(|p| p.as_object_mut()) {
                if remove { obj.remove(key); } else { obj.insert(key.to_owned(), garbage); }
            }
            if let Err(p) = decode(&v.to_string()) {
                if let Some(s) = v.pointer("/dynamodb/SequenceNumber").and_then(|s| s.as_str()) {
                    prop_assert_eq!(p.seq.as_deref(), Some(s));
                }
                if let Some(pk) = v.pointer("/dynamodb/Keys/PK/S").and_then(|s| s.as_str()) {
                    prop_assert_eq!(p.pk.as_deref(), Some(pk));
                }
                prop_assert!(!p.reason.to_string().is_empty());
            }
        }

        /// The decision depends on the JSON value, not on how it is spelled: the same mangled
        /// record with every string character written as a `\uXXXX` escape and whitespace
        /// around every token decides exactly the same.
        #[test]
        fn a_record_decides_the_same_however_its_json_is_spelled(path in proptest::sample::select(PATHS), garbage in any_json()) {
            let mut v: serde_json::Value = serde_json::from_str(&an_upgrade()).unwrap();
            let (parent, key) = path.rsplit_once('/').unwrap();
            if let Some(obj) = v.pointer_mut(if parent.is_empty() { "" } else { parent }).and_then(|p| p.as_object_mut()) {
                obj.insert(key.to_owned(), garbage);
            }
            let mut spelled = String::new();
            spelled_out(&v, &mut spelled);
            prop_assert_eq!(decode(&spelled), decode(&v.to_string()), "{}", spelled);
        }

        /// One byte inserted, replaced or removed anywhere in an event: it is rejected exactly
        /// when serde_json rejects it (or it lost its `Records` array), and when accepted it
        /// decides exactly as serde_json's reading of it, written out again, does.
        #[test]
        fn a_mutated_event_is_rejected_exactly_when_serde_json_rejects_it(
            at in any::<proptest::sample::Index>(),
            byte in proptest::sample::select(b"{}[]\",:\\ \t0123456789.-+eEtrufalsnSNu".to_vec()),
            op in 0..3u8,
        ) {
            let good = an_upgrade();
            let other = record("MODIFY", "PROFILE", json!({}), json!({"tier": {"S": "x"}}));
            let mut text = format!("{{\"Records\": [{good}, {other}]}}").into_bytes();
            let i = at.index(text.len());
            match op {
                0 => text.insert(i, byte),
                1 => text[i] = byte,
                _ => { text.remove(i); }
            }
            let text = String::from_utf8(text).unwrap();
            let ours = text.parse::<crate::handler::StreamEvent>();
            let theirs = serde_json::from_str::<serde_json::Value>(&text).ok().filter(|v| v["Records"].is_array());
            prop_assert_eq!(ours.is_ok(), theirs.is_some(), "{}: {:?}", text, ours.as_ref().err());
            if let (Ok(ours), Some(theirs)) = (ours, theirs) {
                let again: crate::handler::StreamEvent = theirs.to_string().parse().unwrap();
                prop_assert_eq!((ours.len, ours.skipped, &ours.records), (again.len, again.skipped, &again.records), "{}", text);
            }
        }

        /// Arbitrary bytes as a record: never a panic, always a reason.
        #[test]
        fn arbitrary_text_is_poison_not_a_panic(raw in ".{0,200}") {
            if let Err(p) = decode(&raw) {
                prop_assert!(!p.reason.to_string().is_empty());
            }
        }

        #[test]
        fn seq_order_matches_big_integer_order(a in 0u128.., b in 0u128..) {
            prop_assert_eq!(seq(&a.to_string()).cmp(&seq(&b.to_string())), a.cmp(&b));
        }

        #[test]
        fn coalesce_is_order_independent_and_keeps_per_user_maxima(
            mut changes in proptest::collection::vec((0u8..5, 1u64..20, 0u64..1000), 0..60),
            seed in any::<u64>(),
        ) {
            // Sequence numbers must be unique within a batch.
            changes.sort_by_key(|c| c.2);
            changes.dedup_by_key(|c| c.2);
            let make = |v: &[(u8, u64, u64)]| v.iter().map(|&(u, ver, s)| change(&format!("u{u}"), ver, &s.to_string())).collect::<Vec<_>>();
            let a = coalesce(make(&changes));
            let mut shuffled = changes.clone();
            let n = shuffled.len();
            for i in 0..n { shuffled.swap(i, (seed as usize).wrapping_add(i * 7) % n.max(1)); }
            let b = coalesce(make(&shuffled));
            prop_assert_eq!(&a, &b);
            for w in &a {
                let mine: Vec<_> = changes.iter().filter(|c| format!("u{}", c.0) == w.user_id.as_str()).collect();
                prop_assert_eq!(w.tier_version, mine.iter().map(|c| c.1).max().unwrap());
                prop_assert_eq!(w.first_seq.clone(), seq(&mine.iter().map(|c| c.2).min().unwrap().to_string()));
            }
            let users: std::collections::HashSet<_> = changes.iter().map(|c| c.0).collect();
            prop_assert_eq!(a.len(), users.len());
        }
    }
}
