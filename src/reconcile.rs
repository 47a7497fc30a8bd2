//! Finding and repairing drift between USAGE#LIMITS (the source of truth) and PROFILE, and
//! migrating legacy items. A parallel Scan pairs both items per user; each pair gets a class;
//! `--repair` fixes only `profile_behind`, with the sync handler's own conditional write, so a
//! repair can never lower a version.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use crate::schema::*;
use crate::store::{
    conditional_failure_item, n, number, s, DynamoStore, ProfileStore, ProfileWrite, StoreError,
};

type Item = HashMap<String, AttributeValue>;

/// The two items of one user, as read.
#[derive(Debug, Clone, Default)]
pub struct UserItems {
    pub limits: Option<Item>,
    pub profile: Option<Item>,
}

/// Where a user stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    InSync,
    /// PROFILE holds an older version (or none): fixable with the sync write.
    ProfileBehind,
    /// USAGE#LIMITS without PROFILE: the sync never creates profiles.
    ProfileMissing,
    /// PROFILE without USAGE#LIMITS.
    LimitsMissing,
    /// USAGE#LIMITS without `tier` (written before tiersync): `tiersync migrate`.
    Legacy,
    /// PROFILE's version is above LIMITS': reported, never "fixed" by lowering a version.
    ProfileAhead,
    /// Unknown tier, unreadable version, bad key, or the same version with different tiers.
    Invalid,
}

/// Classifies a user. For `ProfileBehind` also returns the write that fixes it.
pub fn classify(items: &UserItems) -> (Class, Option<(Tier, u64)>) {
    let Some(limits) = &items.limits else {
        return (Class::LimitsMissing, None);
    };
    let tier = match limits.get(TIER) {
        None => return (Class::Legacy, None),
        Some(AttributeValue::S(t)) => match t.parse::<Tier>() {
            Ok(t) => t,
            Err(_) => return (Class::Invalid, None),
        },
        Some(_) => return (Class::Invalid, None),
    };
    let Ok(lv) = number(limits, TIER_VERSION).map(Option::unwrap_or_default) else {
        return (Class::Invalid, None);
    };
    let Some(profile) = &items.profile else {
        return (Class::ProfileMissing, None);
    };
    let Ok(pv) = number(profile, TIER_VERSION).map(Option::unwrap_or_default) else {
        return (Class::Invalid, None);
    };
    let same_tier = profile
        .get(TIER)
        .and_then(|t| t.as_s().ok())
        .is_some_and(|t| t == tier.as_str());
    match lv.cmp(&pv) {
        std::cmp::Ordering::Greater => (Class::ProfileBehind, Some((tier, lv))),
        std::cmp::Ordering::Less => (Class::ProfileAhead, None),
        std::cmp::Ordering::Equal if same_tier => (Class::InSync, None),
        std::cmp::Ordering::Equal => (Class::Invalid, None),
    }
}

/// Attributes the scan reads (everything classification and migration need, nothing else).
const SCAN_PROJECTION: &str = "PK, SK, tier, tier_version, daily_used, reset_daily_at, reset_shard";

/// Reads every USAGE#LIMITS and PROFILE item with a parallel Scan of `segments` segments, grouped
/// by partition key. Other items of a single-table design are ignored. `on_page(n)` reports
/// progress in items read.
pub async fn scan_users(
    store: &DynamoStore,
    segments: u32,
    on_page: &(dyn Fn(u64) + Sync),
) -> Result<BTreeMap<String, UserItems>, StoreError> {
    let segments = segments.max(1) as i32;
    let users: Mutex<BTreeMap<String, UserItems>> = Mutex::new(BTreeMap::new());
    let scans = (0..segments).map(|segment| {
        let users = &users;
        async move {
            let mut start = None;
            loop {
                let page = store
                    .client()
                    .scan()
                    .table_name(store.table())
                    .segment(segment)
                    .total_segments(segments)
                    .projection_expression(SCAN_PROJECTION)
                    .set_exclusive_start_key(start)
                    // A strongly consistent read, so a repair right after a write sees it.
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| StoreError::sdk("Scan", e))?;
                let items = page.items.unwrap_or_default();
                on_page(items.len() as u64);
                let mut guard = users.lock().expect("no panics while held");
                for item in items {
                    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
                    let (Some(pk), Some(sk)) = (text(PK), text(SK)) else {
                        continue;
                    };
                    let entry = guard.entry(pk).or_default();
                    match sk.as_str() {
                        SK_LIMITS => entry.limits = Some(item),
                        SK_PROFILE => entry.profile = Some(item),
                        _ => {}
                    }
                }
                drop(guard);
                match page.last_evaluated_key {
                    Some(k) if !k.is_empty() => start = Some(k),
                    _ => return Ok::<_, StoreError>(()),
                }
            }
        }
    });
    for result in futures_util::future::join_all(scans).await {
        result?;
    }
    let mut users = users.into_inner().expect("no panics while held");
    users.retain(|_, u| u.limits.is_some() || u.profile.is_some());
    Ok(users)
}

/// Reads the items of just these users (one consistent Query each).
pub async fn fetch_users(
    store: &DynamoStore,
    ids: &[UserId],
) -> Result<BTreeMap<String, UserItems>, StoreError> {
    let mut users = BTreeMap::new();
    for id in ids {
        let out = store
            .client()
            .query()
            .table_name(store.table())
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s(id.pk()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::sdk("Query", e))?;
        let mut entry = UserItems::default();
        for item in out.items.unwrap_or_default() {
            match item.get(SK).and_then(|v| v.as_s().ok()).map(String::as_str) {
                Some(SK_LIMITS) => entry.limits = Some(item),
                Some(SK_PROFILE) => entry.profile = Some(item),
                _ => {}
            }
        }
        if entry.limits.is_some() || entry.profile.is_some() {
            users.insert(id.pk(), entry);
        }
    }
    Ok(users)
}

/// Outcomes of `--repair`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepairCounts {
    pub applied: u64,
    pub already_current: u64,
    pub profile_missing: u64,
    pub conflict: u64,
    pub failed: u64,
}

/// What reconcile found (and repaired).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    pub users: u64,
    pub counts: BTreeMap<Class, u64>,
    /// User ids (or raw partition keys, for invalid keys) of every class but `in_sync`.
    pub user_ids: BTreeMap<Class, Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<RepairCounts>,
}

impl ReconcileReport {
    pub fn count(&self, class: Class) -> u64 {
        self.counts.get(&class).copied().unwrap_or(0)
    }
}

/// Classifies every user and, with `repair`, fixes `profile_behind` at most `max_writes_per_second`.
pub async fn reconcile(
    store: &DynamoStore,
    users: &BTreeMap<String, UserItems>,
    repair: bool,
    max_writes_per_second: u32,
    now: DateTime<Utc>,
    on_write: &(dyn Fn() + Sync),
) -> ReconcileReport {
    let mut report = ReconcileReport {
        users: users.len() as u64,
        ..Default::default()
    };
    let mut fixes = Vec::new();
    for (pk, items) in users {
        let (mut class, fix) = classify(items);
        let user = UserId::from_pk(pk);
        if user.is_err() {
            class = Class::Invalid;
        }
        *report.counts.entry(class).or_default() += 1;
        if class != Class::InSync {
            let shown = user
                .as_ref()
                .map(|u| u.as_str().to_owned())
                .unwrap_or_else(|_| pk.clone());
            report.user_ids.entry(class).or_default().push(shown);
        }
        if let (Ok(user), Some((tier, version))) = (user, fix) {
            fixes.push((user, tier, version));
        }
    }
    if !repair {
        return report;
    }
    let mut counts = RepairCounts::default();
    let synced_at = format_time(now);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(
        1.0 / f64::from(max_writes_per_second.max(1)),
    ));
    for (user, tier, version) in fixes {
        ticker.tick().await;
        match store.write_profile(&user, tier, version, &synced_at).await {
            Ok(ProfileWrite::Applied) => counts.applied += 1,
            Ok(ProfileWrite::AlreadyCurrent { .. }) => counts.already_current += 1,
            Ok(ProfileWrite::ProfileMissing) => counts.profile_missing += 1,
            Ok(ProfileWrite::Conflict { stored }) => {
                counts.conflict += 1;
                tracing::error!(pk = %user.pk(), stored, "repair found a conflicting PROFILE");
            }
            Err(e) => {
                counts.failed += 1;
                tracing::warn!(pk = %user.pk(), error = %e, "repair write failed");
            }
        }
        on_write();
    }
    report.repaired = Some(counts);
    report
}

/// What `migrate` did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MigrateCounts {
    /// Legacy USAGE#LIMITS items that got a tier and version.
    pub migrated: u64,
    /// Of those, how many took `free` because PROFILE had no valid tier.
    pub defaulted_to_free: u64,
    /// Items that already had a tier when the conditional write ran (another writer won).
    pub already_migrated: u64,
    /// Items that got the reset-index attributes.
    pub index_backfilled: u64,
    pub failed: u64,
}

/// Moves legacy items onto the model: USAGE#LIMITS without `tier` gets PROFILE's tier (`free` if
/// PROFILE has none) with a version, and every USAGE#LIMITS item without `reset_shard` gets the
/// reset-index attributes. Conditional writes only; the stream then syncs PROFILE.
pub async fn migrate(
    store: &DynamoStore,
    users: &BTreeMap<String, UserItems>,
    dry_run: bool,
    now: DateTime<Utc>,
) -> MigrateCounts {
    let mut counts = MigrateCounts::default();
    for (pk, items) in users {
        let (Some(limits), Ok(user)) = (&items.limits, UserId::from_pk(pk)) else {
            continue;
        };
        let legacy = !limits.contains_key(TIER);
        let needs_index = !limits.contains_key(RESET_SHARD);
        if !legacy && !needs_index {
            continue;
        }
        let profile_tier = items
            .profile
            .as_ref()
            .and_then(|p| p.get(TIER))
            .and_then(|t| t.as_s().ok())
            .and_then(|t| t.parse::<Tier>().ok());
        // Version 1, or the profile's version if it is higher, so the pair is in sync (or the
        // stream brings PROFILE up) and no profile reads as "ahead".
        let profile_version = items
            .profile
            .as_ref()
            .and_then(|p| number(p, TIER_VERSION).ok().flatten())
            .unwrap_or(0);
        if dry_run {
            counts.migrated += u64::from(legacy);
            counts.defaulted_to_free += u64::from(legacy && profile_tier.is_none());
            counts.index_backfilled += u64::from(needs_index);
            continue;
        }
        let mut req = store
            .client()
            .update_item()
            .table_name(store.table())
            .key(PK, s(user.pk()))
            .key(SK, s(SK_LIMITS))
            .expression_attribute_names("#shard", RESET_SHARD)
            .expression_attribute_names("#reset", RESET_DAILY_AT)
            .expression_attribute_names("#used", DAILY_USED)
            .expression_attribute_names("#upd", UPDATED_AT)
            .expression_attribute_values(":shard", n(u64::from(reset_shard(&user))))
            .expression_attribute_values(":next", s(format_time(next_reset_boundary(now))))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", s(format_time(now)));
        let index_sets =
            "#shard = if_not_exists(#shard, :shard), #reset = if_not_exists(#reset, :next), \
                          #used = if_not_exists(#used, :zero), #upd = :now";
        req = if legacy {
            req.update_expression(format!("SET #tier = :t, #ver = :v, {index_sets}"))
                .condition_expression("attribute_exists(PK) AND attribute_not_exists(#tier)")
                .expression_attribute_names("#tier", TIER)
                .expression_attribute_names("#ver", TIER_VERSION)
                .expression_attribute_values(":t", s(profile_tier.unwrap_or(Tier::Free).as_str()))
                .expression_attribute_values(":v", n(profile_version.max(1)))
        } else {
            req.update_expression(format!("SET {index_sets}"))
                .condition_expression("attribute_exists(PK) AND attribute_not_exists(#shard)")
        };
        match req.send().await {
            Ok(_) => {
                counts.migrated += u64::from(legacy);
                counts.defaulted_to_free += u64::from(legacy && profile_tier.is_none());
                counts.index_backfilled += u64::from(needs_index);
            }
            Err(e) if conditional_failure_item(&e).is_some() => counts.already_migrated += 1,
            Err(e) => {
                counts.failed += 1;
                let e = StoreError::sdk("UpdateItem", e);
                tracing::warn!(pk, error = %e, "migration write failed");
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(tier: Option<&str>, version: Option<&str>) -> Item {
        let mut m = Item::new();
        if let Some(t) = tier {
            m.insert(TIER.into(), s(t));
        }
        if let Some(v) = version {
            m.insert(TIER_VERSION.into(), AttributeValue::N(v.into()));
        }
        m
    }

    fn pair(l: Option<Item>, p: Option<Item>) -> UserItems {
        UserItems {
            limits: l,
            profile: p,
        }
    }

    #[test]
    fn every_pair_gets_its_class() {
        let l = |t, v| Some(item(Some(t), Some(v)));
        assert_eq!(
            classify(&pair(l("free", "2"), l("free", "2"))),
            (Class::InSync, None)
        );
        assert_eq!(
            classify(&pair(l("premium", "3"), l("free", "2"))),
            (Class::ProfileBehind, Some((Tier::Premium, 3)))
        );
        assert_eq!(
            classify(&pair(l("premium", "1"), Some(item(None, None)))),
            (Class::ProfileBehind, Some((Tier::Premium, 1)))
        );
        assert_eq!(
            classify(&pair(l("free", "2"), l("premium", "5"))).0,
            Class::ProfileAhead
        );
        assert_eq!(
            classify(&pair(l("free", "2"), None)).0,
            Class::ProfileMissing
        );
        assert_eq!(
            classify(&pair(None, l("free", "2"))).0,
            Class::LimitsMissing
        );
        assert_eq!(
            classify(&pair(Some(item(None, None)), l("free", "2"))).0,
            Class::Legacy
        );
        assert_eq!(
            classify(&pair(l("gold", "2"), l("free", "2"))).0,
            Class::Invalid
        );
        assert_eq!(
            classify(&pair(l("free", "x"), l("free", "2"))).0,
            Class::Invalid
        );
        assert_eq!(
            classify(&pair(l("free", "2"), l("premium", "2"))).0,
            Class::Invalid,
            "same version, two tiers"
        );
    }
}
