//! Usage metering with lazy rollover: reads and increments start a new day by themselves, so
//! nothing depends on the reset job having run (it only saves the first request of a day a
//! second write).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};

use crate::config::Limits;
use crate::schema::*;
use crate::store::{conditional_failure_item, key, n, number, s, string, DynamoStore, StoreError};

/// Count one request: the day has not rolled over and the tier's limit is not reached. The limit
/// is part of the condition, so concurrent callers can never overshoot it.
const INCREMENT_CONDITION: &str =
    "#reset > :now AND ((#tier = :free AND (attribute_not_exists(#used) OR #used < :fl)) \
     OR (#tier = :premium AND (attribute_not_exists(#used) OR #used < :pl)))";
const INCREMENT_UPDATE: &str = "SET #used = if_not_exists(#used, :zero) + :one, #upd = :now";
/// Start a new day with this request: only if `reset_daily_at` is still the due value this caller
/// saw, so of racing callers exactly one starts the day and the others count on top of it.
const NEW_DAY_CONDITION_SEEN: &str = "#reset = :seen";
const NEW_DAY_CONDITION_MISSING: &str = "attribute_exists(PK) AND attribute_not_exists(#reset)";
const NEW_DAY_UPDATE: &str = "SET #used = :one, #reset = :next, #shard = :shard, #upd = :now";

/// The USAGE#LIMITS item as the hot path reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub user_id: String,
    pub tier: Tier,
    pub tier_version: u64,
    /// Requests counted today: 0 once `reset_daily_at` has passed, whether or not the reset job
    /// has run.
    pub daily_used: u64,
    /// When today's count ends. After a missed reset it is the boundary the next write will set.
    pub reset_daily_at: String,
}

impl Usage {
    /// Reads a USAGE#LIMITS item as of `now` (lazy rollover).
    pub fn from_item(
        item: &HashMap<String, AttributeValue>,
        now: DateTime<Utc>,
    ) -> Result<Self, String> {
        let user = UserId::from_pk(string(item, PK)?).map_err(|e| e.to_string())?;
        let reset = string(item, RESET_DAILY_AT)?;
        let now_s = format_time(now);
        let (daily_used, reset_daily_at) = if reset <= now_s.as_str() {
            (0, format_time(next_reset_boundary(now)))
        } else {
            (number(item, DAILY_USED)?.unwrap_or(0), reset.to_owned())
        };
        Ok(Usage {
            user_id: user.as_str().to_owned(),
            tier: string(item, TIER)?
                .parse()
                .map_err(|e: UnknownTier| e.to_string())?,
            tier_version: number(item, TIER_VERSION)?.unwrap_or(0),
            daily_used,
            reset_daily_at,
        })
    }
}

/// Result of [`DynamoStore::increment_usage`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Increment {
    /// The request was counted.
    Counted {
        daily_used: u64,
        daily_limit: u64,
        reset_daily_at: String,
    },
    /// The tier's daily limit is reached; nothing was written.
    LimitReached {
        daily_limit: u64,
        reset_daily_at: String,
    },
}

/// What a refused increment means, from the item as it was (`ALL_OLD`). Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    /// The day is over (or never started): start a new one, guarded by what was seen.
    NewDay {
        seen: Option<String>,
    },
    LimitReached {
        daily_limit: u64,
        reset_daily_at: String,
    },
    /// The item cannot be metered (no valid tier, malformed counters).
    Invalid(String),
}

pub fn refusal(
    old: Option<&HashMap<String, AttributeValue>>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Refusal {
    let Some(old) = old else {
        return Refusal::NotFound;
    };
    let tier = match string(old, TIER).and_then(|t| t.parse::<Tier>().map_err(|e| e.to_string())) {
        Ok(t) => t,
        Err(e) => return Refusal::Invalid(format!("{e}; run `tiersync migrate`")),
    };
    let reset = match old.get(RESET_DAILY_AT) {
        None => return Refusal::NewDay { seen: None },
        Some(AttributeValue::S(r)) => r,
        Some(other) => {
            return Refusal::Invalid(format!("reset_daily_at is not a string: {other:?}"))
        }
    };
    if reset.as_str() <= format_time(now).as_str() {
        return Refusal::NewDay {
            seen: Some(reset.clone()),
        };
    }
    let used = match number(old, DAILY_USED) {
        Ok(u) => u.unwrap_or(0),
        Err(e) => return Refusal::Invalid(e),
    };
    let daily_limit = limits.for_tier(tier);
    if used >= daily_limit {
        Refusal::LimitReached {
            daily_limit,
            reset_daily_at: reset.clone(),
        }
    } else {
        Refusal::Invalid(format!(
            "refused below the limit ({used} < {daily_limit}) with an open day"
        ))
    }
}

/// How many times an increment re-evaluates after losing a race to start the day. Each loss means
/// another caller started it, so the next attempt counts on top: two rounds are enough, the
/// third is slack.
const MAX_ROUNDS: usize = 3;

impl DynamoStore {
    /// The hot path: exactly one `GetItem` on USAGE#LIMITS (eventually consistent, half the read
    /// cost; the conditional writes, not this read, enforce every rule).
    #[tracing::instrument(skip(self), fields(table = %self.table()))]
    pub async fn get_user_usage(
        &self,
        user: &UserId,
        now: DateTime<Utc>,
    ) -> Result<Usage, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(key(user, SK_LIMITS)))
            .send()
            .await
            .map_err(|e| StoreError::sdk("GetItem", e))?;
        let item = out
            .item
            .ok_or_else(|| StoreError::UserNotFound(user.clone()))?;
        Usage::from_item(&item, now).map_err(|reason| inconsistent(user, reason))
    }

    /// Counts one request: one conditional `UpdateItem` in the common case; at the first request
    /// of a day, a second one that starts the day.
    #[tracing::instrument(skip(self, limits), fields(table = %self.table()))]
    pub async fn increment_usage(
        &self,
        user: &UserId,
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<Increment, StoreError> {
        let now_s = format_time(now);
        for _ in 0..MAX_ROUNDS {
            let counted = self
                .client()
                .update_item()
                .table_name(self.table())
                .set_key(Some(key(user, SK_LIMITS)))
                .update_expression(INCREMENT_UPDATE)
                .condition_expression(INCREMENT_CONDITION)
                .expression_attribute_names("#used", DAILY_USED)
                .expression_attribute_names("#reset", RESET_DAILY_AT)
                .expression_attribute_names("#tier", TIER)
                .expression_attribute_names("#upd", UPDATED_AT)
                .expression_attribute_values(":now", s(&now_s))
                .expression_attribute_values(":free", s(Tier::Free.as_str()))
                .expression_attribute_values(":premium", s(Tier::Premium.as_str()))
                .expression_attribute_values(":fl", n(limits.free))
                .expression_attribute_values(":pl", n(limits.premium))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let old = match counted {
                Ok(out) => return counted_from(user, out.attributes(), now, limits),
                Err(e) => match conditional_failure_item(&e) {
                    Some(old) => old,
                    None => return Err(StoreError::sdk("UpdateItem", e)),
                },
            };
            match refusal(old.as_ref(), now, limits) {
                Refusal::NotFound => return Err(StoreError::UserNotFound(user.clone())),
                Refusal::Invalid(reason) => return Err(inconsistent(user, reason)),
                Refusal::LimitReached {
                    daily_limit,
                    reset_daily_at,
                } => {
                    return Ok(Increment::LimitReached {
                        daily_limit,
                        reset_daily_at,
                    })
                }
                Refusal::NewDay { seen } => {
                    if let Some(done) = self.start_day(user, seen, now, limits).await? {
                        return Ok(done);
                    }
                    // Another caller started the day first: count on top of it.
                }
            }
        }
        Err(inconsistent(
            user,
            format!("increment did not settle in {MAX_ROUNDS} rounds"),
        ))
    }

    /// Starts a new day at `daily_used = 1`; `None` if another writer changed the day first.
    async fn start_day(
        &self,
        user: &UserId,
        seen: Option<String>,
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<Option<Increment>, StoreError> {
        let mut req = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(user, SK_LIMITS)))
            .update_expression(NEW_DAY_UPDATE)
            .expression_attribute_names("#used", DAILY_USED)
            .expression_attribute_names("#reset", RESET_DAILY_AT)
            .expression_attribute_names("#shard", RESET_SHARD)
            .expression_attribute_names("#upd", UPDATED_AT)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":next", s(format_time(next_reset_boundary(now))))
            .expression_attribute_values(":shard", n(u64::from(reset_shard(user))))
            .expression_attribute_values(":now", s(format_time(now)))
            .return_values(ReturnValue::AllNew);
        req = match seen {
            Some(seen) => req
                .condition_expression(NEW_DAY_CONDITION_SEEN)
                .expression_attribute_values(":seen", s(seen)),
            None => req.condition_expression(NEW_DAY_CONDITION_MISSING),
        };
        match req.send().await {
            Ok(out) => counted_from(user, out.attributes(), now, limits).map(Some),
            Err(e) if conditional_failure_item(&e).is_some() => Ok(None),
            Err(e) => Err(StoreError::sdk("UpdateItem", e)),
        }
    }
}

fn inconsistent(user: &UserId, reason: String) -> StoreError {
    StoreError::Inconsistent {
        pk: user.pk(),
        sk: SK_LIMITS.into(),
        reason,
    }
}

fn counted_from(
    user: &UserId,
    new: Option<&HashMap<String, AttributeValue>>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Increment, StoreError> {
    let usage =
        Usage::from_item(new.unwrap_or(&HashMap::new()), now).map_err(|r| inconsistent(user, r))?;
    Ok(Increment::Counted {
        daily_used: usage.daily_used,
        daily_limit: limits.for_tier(usage.tier),
        reset_daily_at: usage.reset_daily_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().to_utc()
    }

    fn item(tier: &str, used: u64, reset: Option<&str>) -> HashMap<String, AttributeValue> {
        let mut m = HashMap::from([
            (PK.to_owned(), s("USER#u")),
            (TIER.to_owned(), s(tier)),
            (DAILY_USED.to_owned(), n(used)),
        ]);
        if let Some(r) = reset {
            m.insert(RESET_DAILY_AT.to_owned(), s(r));
        }
        m
    }

    #[test]
    fn a_refusal_is_classified_from_the_old_item() {
        let limits = Limits {
            free: 10,
            premium: 1000,
        };
        let now = at("2026-12-03T12:00:00Z");
        assert_eq!(refusal(None, now, &limits), Refusal::NotFound);
        assert_eq!(
            refusal(
                Some(&item("free", 10, Some("2026-12-04T00:00:00Z"))),
                now,
                &limits
            ),
            Refusal::LimitReached {
                daily_limit: 10,
                reset_daily_at: "2026-12-04T00:00:00Z".into()
            }
        );
        assert_eq!(
            refusal(
                Some(&item("free", 10, Some("2026-12-03T00:00:00Z"))),
                now,
                &limits
            ),
            Refusal::NewDay {
                seen: Some("2026-12-03T00:00:00Z".into())
            }
        );
        assert_eq!(
            refusal(
                Some(&item("premium", 5, Some("2026-12-03T12:00:00Z"))),
                now,
                &limits
            ),
            Refusal::NewDay {
                seen: Some("2026-12-03T12:00:00Z".into())
            },
            "the boundary itself belongs to the new day"
        );
        assert_eq!(
            refusal(Some(&item("free", 0, None)), now, &limits),
            Refusal::NewDay { seen: None }
        );
        assert!(
            matches!(refusal(Some(&item("gold", 0, None)), now, &limits), Refusal::Invalid(r) if r.contains("gold"))
        );
    }

    #[test]
    fn reads_roll_the_day_over_lazily() {
        let i = item("free", 7, Some("2026-12-04T00:00:00Z"));
        let before = Usage::from_item(&i, at("2026-12-03T23:59:59Z")).unwrap();
        assert_eq!(
            (before.daily_used, before.reset_daily_at.as_str()),
            (7, "2026-12-04T00:00:00Z")
        );
        let after = Usage::from_item(&i, at("2026-12-05T08:00:00Z")).unwrap();
        assert_eq!(
            (after.daily_used, after.reset_daily_at.as_str()),
            (0, "2026-12-06T00:00:00Z")
        );
    }
}
