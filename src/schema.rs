//! The item schema: the contract every writer of the table follows (see README "Item schema").
//!
//! Attribute names, key prefixes and condition expressions live here and nowhere else, so the
//! write path, the sync handler and the tests cannot drift apart.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveTime, SecondsFormat, Utc};

/// Partition key attribute (S): `USER#{user_id}`.
pub const PK: &str = "PK";
/// Sort key attribute (S): [`SK_LIMITS`] or [`SK_PROFILE`].
pub const SK: &str = "SK";
/// Prefix of every user partition key.
pub const USER_PREFIX: &str = "USER#";
/// Sort key of the item that owns the tier (the only place a tier is written).
pub const SK_LIMITS: &str = "USAGE#LIMITS";
/// Sort key of the profile item that carries a synced copy of the tier.
pub const SK_PROFILE: &str = "PROFILE";

/// `free` | `premium` (S), on both items.
pub const TIER: &str = "tier";
/// Version of the tier (N, ≥ 1). On USAGE#LIMITS it rises by one on every real change; on PROFILE
/// it is the LIMITS version the profile reflects. Missing means 0 (written before tiersync).
pub const TIER_VERSION: &str = "tier_version";
/// When the sync handler last wrote the tier to PROFILE (S, RFC 3339 UTC).
pub const TIER_SYNCED_AT: &str = "tier_synced_at";
/// Requests used today (N), on USAGE#LIMITS.
pub const DAILY_USED: &str = "daily_used";
/// When the current usage day ends (S, RFC 3339 UTC), on USAGE#LIMITS.
pub const RESET_DAILY_AT: &str = "reset_daily_at";
/// Last write to the item (S, RFC 3339 UTC).
pub const UPDATED_AT: &str = "updated_at";
/// When the item was created (S, RFC 3339 UTC), on PROFILE.
pub const CREATED_AT: &str = "created_at";

/// Write shard of the reset index (N, `0..RESET_SHARDS`). Only USAGE#LIMITS items carry it, so
/// the index is sparse: it holds nothing but usage items.
pub const RESET_SHARD: &str = "reset_shard";
/// The sparse, write-sharded GSI over due resets: `reset_shard` (HASH), `reset_daily_at` (RANGE),
/// keys only. A query `reset_shard = s AND reset_daily_at <= now` reads only due items.
pub const RESET_INDEX: &str = "reset-due";
/// Number of write shards of [`RESET_INDEX`]. At midnight every user's `reset_daily_at` is the
/// same value; spreading them over 16 partition keys keeps the index's write rate per key
/// within a partition's 1,000 WCU/s, and lets the job query 16 shards in parallel.
pub const RESET_SHARDS: u32 = 16;

/// The reset-index shard of a user: FNV-1a of the id, so it is stable across processes and
/// languages (documented in the README for other writers).
pub fn reset_shard(user: &UserId) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in user.as_str().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % RESET_SHARDS
}

/// Longest accepted user id, in characters.
pub const MAX_USER_ID_CHARS: usize = 128;

/// Why a user id or key was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("user id must not be empty")]
    Empty,
    #[error("user id is {0} characters long; at most {MAX_USER_ID_CHARS} are allowed")]
    TooLong(usize),
    #[error("user id must not contain '#'")]
    ContainsHash,
    #[error("user id must not contain control characters")]
    ControlChar,
    #[error("partition key {0:?} does not start with {USER_PREFIX:?}")]
    NotAUserKey(String),
}

/// A validated user id: 1–128 characters, no `#`, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// Validates `id`.
    pub fn parse(id: &str) -> Result<Self, KeyError> {
        let chars = id.chars().count();
        if chars == 0 {
            return Err(KeyError::Empty);
        }
        if chars > MAX_USER_ID_CHARS {
            return Err(KeyError::TooLong(chars));
        }
        if id.contains('#') {
            return Err(KeyError::ContainsHash);
        }
        if id.chars().any(char::is_control) {
            return Err(KeyError::ControlChar);
        }
        Ok(Self(id.to_owned()))
    }

    /// Parses a partition key `USER#{id}`.
    pub fn from_pk(pk: &str) -> Result<Self, KeyError> {
        let id = pk
            .strip_prefix(USER_PREFIX)
            .ok_or_else(|| KeyError::NotAUserKey(pk.to_owned()))?;
        Self::parse(id)
    }

    /// The partition key `USER#{id}`.
    pub fn pk(&self) -> String {
        format!("{USER_PREFIX}{}", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl FromStr for UserId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A user's tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Premium,
}

/// A tier string that is not `free` or `premium`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier {0:?} (expected \"free\" or \"premium\")")]
pub struct UnknownTier(pub String);

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Premium => "premium",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = UnknownTier;
    /// Exact, lowercase match: a stored `Premium` is a different string to every other reader of
    /// the table, so it is rejected rather than silently normalised.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "free" => Ok(Tier::Free),
            "premium" => Ok(Tier::Premium),
            other => Err(UnknownTier(other.to_owned())),
        }
    }
}

/// The end of the usage day that contains `now`: the next UTC midnight strictly after `now`.
pub fn next_reset_boundary(now: DateTime<Utc>) -> DateTime<Utc> {
    let midnight = now.date_naive().and_time(NaiveTime::MIN).and_utc();
    midnight + Duration::days(1)
}

/// RFC 3339 UTC with second precision and a `Z`, e.g. `2026-12-04T00:00:00Z`. Fixed width, so
/// these strings also compare correctly as strings (DynamoDB conditions compare them that way).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[test]
    fn user_ids_are_validated() {
        assert_eq!(UserId::parse("alice").unwrap().pk(), "USER#alice");
        assert_eq!(UserId::parse(""), Err(KeyError::Empty));
        assert_eq!(UserId::parse("a#b"), Err(KeyError::ContainsHash));
        assert_eq!(UserId::parse("a\nb"), Err(KeyError::ControlChar));
        assert_eq!(UserId::parse(&"x".repeat(129)), Err(KeyError::TooLong(129)));
        assert!(
            UserId::parse(&"é".repeat(128)).is_ok(),
            "limit counts characters, not bytes"
        );
        assert_eq!(
            UserId::from_pk("ORG#1"),
            Err(KeyError::NotAUserKey("ORG#1".into()))
        );
        assert_eq!(UserId::from_pk("USER#").unwrap_err(), KeyError::Empty);
    }

    #[test]
    fn tiers_parse_exactly() {
        assert_eq!("free".parse::<Tier>(), Ok(Tier::Free));
        assert_eq!("premium".parse::<Tier>(), Ok(Tier::Premium));
        assert_eq!(
            "Premium".parse::<Tier>(),
            Err(UnknownTier("Premium".into()))
        );
    }

    #[test]
    fn the_reset_boundary_is_the_next_utc_midnight() {
        let t = Utc.with_ymd_and_hms(2026, 12, 3, 15, 4, 5).unwrap();
        assert_eq!(format_time(next_reset_boundary(t)), "2026-12-04T00:00:00Z");
        let midnight = Utc.with_ymd_and_hms(2026, 12, 31, 0, 0, 0).unwrap();
        assert_eq!(
            format_time(next_reset_boundary(midnight)),
            "2027-01-01T00:00:00Z"
        );
    }

    #[test]
    fn reset_shards_are_stable_fnv1a() {
        // Fixed values: other writers (README snippet) must compute the same shard.
        assert_eq!(reset_shard(&UserId::parse("alice").unwrap()), 7); // FNV-1a("alice") = 0x872213e7
        let spread: std::collections::HashSet<u32> = (0..200)
            .map(|i| reset_shard(&UserId::parse(&format!("user{i}")).unwrap()))
            .collect();
        assert_eq!(
            spread.len(),
            RESET_SHARDS as usize,
            "every shard gets users"
        );
    }

    proptest! {
        #[test]
        fn a_valid_id_round_trips_through_its_key(id in "[^#\\p{Cc}]{1,128}") {
            let user = UserId::parse(&id).unwrap();
            prop_assert_eq!(UserId::from_pk(&user.pk()).unwrap(), user);
        }

        #[test]
        fn parse_accepts_exactly_the_documented_ids(id in "(\\PC|#|\\n){0,140}") {
            let n = id.chars().count();
            let valid = (1..=128).contains(&n) && !id.contains('#') && !id.chars().any(char::is_control);
            prop_assert_eq!(UserId::parse(&id).is_ok(), valid);
        }
    }
}
