//! Every DynamoDB call of tiersync's write path and sync path: one concrete store over
//! `aws_sdk_dynamodb::Client`. Each write's possible results are an enum; a conditional-check
//! failure is an outcome, never a generic error.

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CreateGlobalSecondaryIndexAction,
    GlobalSecondaryIndex, GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType,
    Projection, ProjectionType, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

use crate::schema::*;

/// Condition of the sync write: only an existing profile, only a newer version. A profile without
/// `tier_version` was written before tiersync and counts as version 0.
pub const PROFILE_SYNC_CONDITION: &str =
    "attribute_exists(PK) AND (attribute_not_exists(#ver) OR #ver < :v)";
const PROFILE_SYNC_UPDATE: &str = "SET #tier = :t, #ver = :v, #synced = :now";
/// Condition of `set_tier`: the user exists and the tier really changes, so the version rises by
/// exactly one per real change and a no-op writes nothing (and so no stream record).
pub const SET_TIER_CONDITION: &str =
    "attribute_exists(PK) AND (attribute_not_exists(#tier) OR #tier <> :t)";
const SET_TIER_UPDATE: &str = "SET #tier = :t, #upd = :now ADD #ver :one";

/// Errors of the store. Conditional-check failures that callers expect are outcomes instead.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("user {0} already exists")]
    UserExists(UserId),
    #[error("user {0} not found (no USAGE#LIMITS item)")]
    UserNotFound(UserId),
    #[error("table {table} exists but does not match tiersync's definition: {reason}")]
    TableMismatch { table: String, reason: String },
    #[error("item {pk} / {sk} is inconsistent: {reason}")]
    Inconsistent {
        pk: String,
        sk: String,
        reason: String,
    },
    #[error("DynamoDB {op} failed: {message}")]
    Sdk {
        op: &'static str,
        message: String,
        /// Boxed: the SDK's error enum is large, and errors are the rare path.
        #[source]
        source: Box<aws_sdk_dynamodb::Error>,
    },
}

impl StoreError {
    pub(crate) fn sdk<E, R>(op: &'static str, err: SdkError<E, R>) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
        aws_sdk_dynamodb::Error: From<SdkError<E, R>>,
    {
        let message = DisplayErrorContext(&err).to_string();
        StoreError::Sdk {
            op,
            message,
            source: Box::new(err.into()),
        }
    }
}

/// Result of the conditional PROFILE write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileWrite {
    /// The profile moved forward to the planned version.
    Applied,
    /// The profile already holds this version or a newer one: a duplicate, retry or replay.
    AlreadyCurrent { stored_version: u64 },
    /// There is no PROFILE item. The sync never creates one (it would be a ghost profile with
    /// nothing but a tier): logged and counted.
    ProfileMissing,
    /// The profile holds the same version with a different tier (or an unreadable version): an
    /// invariant violation, since a version names exactly one tier.
    Conflict { stored: String },
}

/// Result of `set_tier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SetTier {
    Changed { tier_version: u64 },
    Unchanged { tier_version: u64 },
}

/// Result of `create_table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableCreate {
    Created,
    AlreadyExists,
}

/// The sync handler's only I/O: one conditional PROFILE write. A trait because tests need a
/// fault-injecting double around the real store; production has exactly one implementation.
pub trait ProfileStore: Send + Sync {
    /// Table name, for log lines.
    fn table(&self) -> &str;
    /// Writes `tier` at `version` to the user's PROFILE if it is newer than what is there.
    fn write_profile(
        &self,
        user: &UserId,
        tier: Tier,
        version: u64,
        synced_at: &str,
    ) -> impl Future<Output = Result<ProfileWrite, StoreError>> + Send;
}

/// A shared reference to a store is a store (the handler can borrow one).
impl<T: ProfileStore> ProfileStore for &T {
    fn table(&self) -> &str {
        (**self).table()
    }

    fn write_profile(
        &self,
        user: &UserId,
        tier: Tier,
        version: u64,
        synced_at: &str,
    ) -> impl Future<Output = Result<ProfileWrite, StoreError>> + Send {
        (**self).write_profile(user, tier, version, synced_at)
    }
}

/// tiersync's table definition: the one source for `table create` and the check against the
/// SAM template (`infra/template.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDefinition {
    /// `(attribute, type)` of every key attribute (table and index).
    pub attributes: &'static [(&'static str, &'static str)],
    /// `(attribute, HASH | RANGE)` of the table.
    pub keys: &'static [(&'static str, &'static str)],
    pub stream_view: &'static str,
    /// `(attribute, HASH | RANGE)` of [`RESET_INDEX`] (projection KEYS_ONLY).
    pub reset_index_keys: &'static [(&'static str, &'static str)],
}

pub const TABLE: TableDefinition = TableDefinition {
    attributes: &[
        (PK, "S"),
        (SK, "S"),
        (RESET_SHARD, "N"),
        (RESET_DAILY_AT, "S"),
    ],
    keys: &[(PK, "HASH"), (SK, "RANGE")],
    stream_view: "NEW_AND_OLD_IMAGES",
    reset_index_keys: &[(RESET_SHARD, "HASH"), (RESET_DAILY_AT, "RANGE")],
};

impl TableDefinition {
    /// The definition in CloudFormation's `AWS::DynamoDB::Table` property names, compared
    /// against `infra/template.yaml` by `scripts/lint-infra.sh`.
    pub fn to_cloudformation(&self) -> serde_json::Value {
        let keys = |keys: &[(&str, &str)]| -> Vec<serde_json::Value> {
            keys.iter()
                .map(|(n, k)| serde_json::json!({"AttributeName": n, "KeyType": k}))
                .collect()
        };
        serde_json::json!({
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": self.attributes.iter()
                .map(|(n, t)| serde_json::json!({"AttributeName": n, "AttributeType": t}))
                .collect::<Vec<_>>(),
            "KeySchema": keys(self.keys),
            "StreamSpecification": {"StreamViewType": self.stream_view},
            "GlobalSecondaryIndexes": [{
                "IndexName": RESET_INDEX,
                "KeySchema": keys(self.reset_index_keys),
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }],
        })
    }

    fn attribute_definitions(&self) -> Vec<AttributeDefinition> {
        self.attributes
            .iter()
            .map(|(name, ty)| {
                AttributeDefinition::builder()
                    .attribute_name(*name)
                    .attribute_type(ScalarAttributeType::from(*ty))
                    .build()
                    .expect("name and type are set")
            })
            .collect()
    }
}

fn key_schema(keys: &[(&str, &str)]) -> Vec<KeySchemaElement> {
    keys.iter()
        .map(|(name, kt)| {
            KeySchemaElement::builder()
                .attribute_name(*name)
                .key_type(KeyType::from(*kt))
                .build()
                .expect("name and type are set")
        })
        .collect()
}

/// `(attribute, HASH | RANGE)` of a described key schema.
fn key_pairs(schema: &[KeySchemaElement]) -> Vec<(&str, &str)> {
    schema
        .iter()
        .map(|k| (k.attribute_name(), k.key_type().as_str()))
        .collect()
}

fn keys_only() -> Projection {
    Projection::builder()
        .projection_type(ProjectionType::KeysOnly)
        .build()
}

fn reset_index() -> GlobalSecondaryIndex {
    GlobalSecondaryIndex::builder()
        .index_name(RESET_INDEX)
        .set_key_schema(Some(key_schema(TABLE.reset_index_keys)))
        .projection(keys_only())
        .build()
        .expect("name, keys and projection are set")
}

/// tiersync's table, reached through one shared SDK client.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn key(user: &UserId, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_owned(), s(user.pk())), (SK.to_owned(), s(sk))])
}

pub(crate) fn number(
    item: &HashMap<String, AttributeValue>,
    name: &str,
) -> Result<Option<u64>, String> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("{name} is not a whole number: {v}")),
        Some(other) => Err(format!("{name} is not a number: {other:?}")),
    }
}

pub(crate) fn string<'a>(
    item: &'a HashMap<String, AttributeValue>,
    name: &str,
) -> Result<&'a str, String> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(other) => Err(format!("{name} is not a string: {other:?}")),
        None => Err(format!("{name} is missing")),
    }
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table ([`TABLE`]: PK/SK strings, on-demand, stream NEW_AND_OLD_IMAGES, the
    /// sparse reset index) and waits until it is active. Idempotent: an existing table with the
    /// same keys and stream is accepted (and gets the reset index if it lacks it); one that
    /// differs is an error rather than something silently used.
    #[tracing::instrument(skip(self), fields(table = %self.table))]
    pub async fn create_table(&self) -> Result<TableCreate, StoreError> {
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .set_attribute_definitions(Some(TABLE.attribute_definitions()))
            .set_key_schema(Some(key_schema(TABLE.keys)))
            .global_secondary_indexes(reset_index())
            .billing_mode(BillingMode::PayPerRequest)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::from(TABLE.stream_view))
                    .build()
                    .expect("enabled is set"),
            )
            .send()
            .await;
        let outcome = match created {
            Ok(_) => TableCreate::Created,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                TableCreate::AlreadyExists
            }
            Err(e) => return Err(StoreError::sdk("CreateTable", e)),
        };
        self.wait_active_and_check().await?;
        Ok(outcome)
    }

    async fn wait_active_and_check(&self) -> Result<(), StoreError> {
        let mismatch = |reason: String| StoreError::TableMismatch {
            table: self.table.clone(),
            reason,
        };
        let mut index_requested = false;
        for _ in 0..240 {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| StoreError::sdk("DescribeTable", e))?;
            let t = out.table.ok_or_else(|| mismatch("no description".into()))?;
            let index = t
                .global_secondary_indexes()
                .iter()
                .find(|i| i.index_name() == Some(RESET_INDEX));
            let index_active =
                index.is_some_and(|i| i.index_status() == Some(&IndexStatus::Active));
            if t.table_status != Some(TableStatus::Active) || (index.is_some() && !index_active) {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            let keys = key_pairs(t.key_schema());
            if keys != TABLE.keys {
                return Err(mismatch(format!(
                    "key schema is {keys:?}, expected {:?}",
                    TABLE.keys
                )));
            }
            let view = t
                .stream_specification
                .as_ref()
                .and_then(|s| s.stream_view_type.as_ref());
            if view.map(|v| v.as_str()) != Some(TABLE.stream_view) {
                return Err(mismatch(format!(
                    "stream view type is {view:?}, expected {}",
                    TABLE.stream_view
                )));
            }
            match index {
                Some(i) => {
                    let keys = key_pairs(i.key_schema());
                    if keys != TABLE.reset_index_keys {
                        return Err(mismatch(format!(
                            "index {RESET_INDEX} has keys {keys:?}, expected {:?}",
                            TABLE.reset_index_keys
                        )));
                    }
                    return Ok(());
                }
                None if !index_requested => {
                    // A table from before the reset index: add it (online, no downtime).
                    tracing::info!(
                        index = RESET_INDEX,
                        "adding the reset index to the existing table"
                    );
                    self.client
                        .update_table()
                        .table_name(&self.table)
                        .set_attribute_definitions(Some(TABLE.attribute_definitions()))
                        .global_secondary_index_updates(
                            GlobalSecondaryIndexUpdate::builder()
                                .create(
                                    CreateGlobalSecondaryIndexAction::builder()
                                        .index_name(RESET_INDEX)
                                        .set_key_schema(Some(key_schema(TABLE.reset_index_keys)))
                                        .projection(keys_only())
                                        .build()
                                        .expect("name, keys and projection are set"),
                                )
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(|e| StoreError::sdk("UpdateTable", e))?;
                    index_requested = true;
                }
                None => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            }
        }
        Err(mismatch("did not become ACTIVE within 120 s".into()))
    }

    /// The table's latest stream ARN.
    pub async fn stream_arn(&self) -> Result<Option<String>, StoreError> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| StoreError::sdk("DescribeTable", e))?;
        Ok(out.table.and_then(|t| t.latest_stream_arn))
    }

    /// Creates PROFILE and USAGE#LIMITS in one transaction, both at `tier_version` 1.
    #[tracing::instrument(skip(self), fields(table = %self.table))]
    pub async fn create_user(
        &self,
        user: &UserId,
        tier: Tier,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now_s = format_time(now);
        let put = |sk: &str, extra: Vec<(&str, AttributeValue)>| {
            let mut item = key(user, sk);
            item.insert(TIER.into(), s(tier.as_str()));
            item.insert(TIER_VERSION.into(), n(1));
            item.insert(UPDATED_AT.into(), s(&now_s));
            item.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(PK)")
                        .build()
                        .expect("table and item are set"),
                )
                .build()
        };
        let result = self
            .client
            .transact_write_items()
            .transact_items(put(
                SK_PROFILE,
                vec![(CREATED_AT, s(&now_s)), (TIER_SYNCED_AT, s(&now_s))],
            ))
            .transact_items(put(
                SK_LIMITS,
                vec![
                    (DAILY_USED, n(0)),
                    (RESET_DAILY_AT, s(format_time(next_reset_boundary(now)))),
                    (RESET_SHARD, n(u64::from(reset_shard(user)))),
                ],
            ))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let exists = e
                    .as_service_error()
                    .and_then(|se| match se {
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => Some(c),
                        _ => None,
                    })
                    .is_some_and(|c| {
                        c.cancellation_reasons()
                            .iter()
                            .any(|r| r.code() == Some("ConditionalCheckFailed"))
                    });
                if exists {
                    Err(StoreError::UserExists(user.clone()))
                } else {
                    Err(StoreError::sdk("TransactWriteItems", e))
                }
            }
        }
    }

    /// Sets the tier on USAGE#LIMITS with one `UpdateItem`; the version rises only on a real
    /// change. Never touches PROFILE: the stream carries the change there.
    #[tracing::instrument(skip(self), fields(table = %self.table))]
    pub async fn set_tier(
        &self,
        user: &UserId,
        tier: Tier,
        now: DateTime<Utc>,
    ) -> Result<SetTier, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user, SK_LIMITS)))
            .update_expression(SET_TIER_UPDATE)
            .condition_expression(SET_TIER_CONDITION)
            .expression_attribute_names("#tier", TIER)
            .expression_attribute_names("#ver", TIER_VERSION)
            .expression_attribute_names("#upd", UPDATED_AT)
            .expression_attribute_values(":t", s(tier.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", s(format_time(now)))
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let inconsistent = |reason| StoreError::Inconsistent {
            pk: user.pk(),
            sk: SK_LIMITS.into(),
            reason,
        };
        match result {
            Ok(out) => {
                let version = number(out.attributes().unwrap_or(&HashMap::new()), TIER_VERSION)
                    .map_err(inconsistent)?
                    .ok_or_else(|| inconsistent("no tier_version after update".into()))?;
                Ok(SetTier::Changed {
                    tier_version: version,
                })
            }
            Err(e) => match conditional_failure_item(&e) {
                Some(Some(old)) => Ok(SetTier::Unchanged {
                    tier_version: number(&old, TIER_VERSION)
                        .map_err(inconsistent)?
                        .unwrap_or(0),
                }),
                Some(None) => Err(StoreError::UserNotFound(user.clone())),
                None => Err(StoreError::sdk("UpdateItem", e)),
            },
        }
    }
}

/// A user's tier as both items hold it (see [`DynamoStore::get_user`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserTiers {
    pub user_id: String,
    /// `(tier, tier_version)` of USAGE#LIMITS, if the item exists.
    pub limits: Option<TierCopy>,
    /// `(tier, tier_version)` of PROFILE, if the item exists.
    pub profile: Option<TierCopy>,
    /// Both exist and hold the same tier at the same version.
    pub in_sync: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TierCopy {
    pub tier: Option<String>,
    pub tier_version: u64,
}

impl TierCopy {
    fn of(item: &HashMap<String, AttributeValue>) -> Result<Self, String> {
        Ok(Self {
            tier: item.get(TIER).and_then(|v| v.as_s().ok()).cloned(),
            tier_version: number(item, TIER_VERSION)?.unwrap_or(0),
        })
    }
}

impl DynamoStore {
    /// Both items of a user with one strongly consistent `Query` on the partition.
    pub async fn get_user(&self, user: &UserId) -> Result<UserTiers, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", s(user.pk()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::sdk("Query", e))?;
        let (mut limits, mut profile) = (None, None);
        for item in out.items() {
            let sk = item.get(SK).and_then(|v| v.as_s().ok()).map(String::as_str);
            let slot = match sk {
                Some(SK_LIMITS) => &mut limits,
                Some(SK_PROFILE) => &mut profile,
                _ => continue,
            };
            *slot = Some(
                TierCopy::of(item).map_err(|reason| StoreError::Inconsistent {
                    pk: user.pk(),
                    sk: sk.unwrap_or_default().to_owned(),
                    reason,
                })?,
            );
        }
        let in_sync = matches!((&limits, &profile), (Some(l), Some(p)) if l == p);
        Ok(UserTiers {
            user_id: user.as_str().to_owned(),
            limits,
            profile,
            in_sync,
        })
    }
}

/// For a failed `UpdateItem`: `Some(old item)` if the condition failed (`None` inside when there
/// was no item), `None` for any other error.
pub(crate) fn conditional_failure_item<R>(
    e: &SdkError<UpdateItemError, R>,
) -> Option<Option<HashMap<String, AttributeValue>>> {
    match e.as_service_error() {
        Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
            Some(c.item().filter(|i| !i.is_empty()).cloned())
        }
        _ => None,
    }
}

/// What a failed sync condition means, from the profile as it was (`ALL_OLD`).
pub fn classify_profile_conflict(
    old: Option<&HashMap<String, AttributeValue>>,
    tier: Tier,
    version: u64,
) -> ProfileWrite {
    let Some(old) = old else {
        return ProfileWrite::ProfileMissing;
    };
    match number(old, TIER_VERSION) {
        Ok(Some(v)) if v > version => ProfileWrite::AlreadyCurrent { stored_version: v },
        Ok(Some(v)) if v == version => match old.get(TIER) {
            Some(AttributeValue::S(t)) if t == tier.as_str() => {
                ProfileWrite::AlreadyCurrent { stored_version: v }
            }
            other => ProfileWrite::Conflict {
                stored: format!("tier_version {v} with tier {other:?}"),
            },
        },
        Ok(other) => ProfileWrite::Conflict {
            stored: format!("tier_version {other:?} did not satisfy the condition"),
        },
        Err(reason) => ProfileWrite::Conflict { stored: reason },
    }
}

impl ProfileStore for DynamoStore {
    fn table(&self) -> &str {
        &self.table
    }

    /// One `UpdateItem` on PROFILE, no read: the condition decides, and `ALL_OLD` on failure
    /// tells which outcome it was.
    async fn write_profile(
        &self,
        user: &UserId,
        tier: Tier,
        version: u64,
        synced_at: &str,
    ) -> Result<ProfileWrite, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user, SK_PROFILE)))
            .update_expression(PROFILE_SYNC_UPDATE)
            .condition_expression(PROFILE_SYNC_CONDITION)
            .expression_attribute_names("#tier", TIER)
            .expression_attribute_names("#ver", TIER_VERSION)
            .expression_attribute_names("#synced", TIER_SYNCED_AT)
            .expression_attribute_values(":t", s(tier.as_str()))
            .expression_attribute_values(":v", n(version))
            .expression_attribute_values(":now", s(synced_at))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(ProfileWrite::Applied),
            Err(e) => match conditional_failure_item(&e) {
                Some(old) => Ok(classify_profile_conflict(old.as_ref(), tier, version)),
                None => Err(StoreError::sdk("UpdateItem", e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(tier: &str, v: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PK.into(), s("USER#u")),
            (TIER.into(), s(tier)),
            (TIER_VERSION.into(), AttributeValue::N(v.into())),
        ])
    }

    #[test]
    fn a_failed_sync_condition_is_classified_from_the_old_profile() {
        let w = (Tier::Premium, 5);
        assert_eq!(
            classify_profile_conflict(None, w.0, w.1),
            ProfileWrite::ProfileMissing
        );
        assert_eq!(
            classify_profile_conflict(Some(&profile("free", "6")), w.0, w.1),
            ProfileWrite::AlreadyCurrent { stored_version: 6 }
        );
        assert_eq!(
            classify_profile_conflict(Some(&profile("premium", "5")), w.0, w.1),
            ProfileWrite::AlreadyCurrent { stored_version: 5 }
        );
        assert!(matches!(
            classify_profile_conflict(Some(&profile("free", "5")), w.0, w.1),
            ProfileWrite::Conflict { .. }
        ));
        assert!(matches!(
            classify_profile_conflict(Some(&profile("free", "x")), w.0, w.1),
            ProfileWrite::Conflict { .. }
        ));
    }
}
